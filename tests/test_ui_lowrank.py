"""The Low-rank lab's named endpoints, called like a browser would, through gradio_client."""

from __future__ import annotations

import json
import shutil

import pytest
from gradio_client.exceptions import AppError

from lora_demo.lowrank import SEED_A, SEED_B


def df(rows):
    """The JSON form of a gr.Dataframe value that the API takes."""
    return {"headers": [str(i + 1) for i in range(len(rows[0]))], "data": rows}


def test_product_endpoint_gives_seed_table(app_client):
    table, text, _fig, numbers = app_client.predict(df(SEED_B), df(SEED_A), "random W0", api_name="/lowrank_product")
    assert table["data"][0] == ["0.11", "0.10", "0.00", "0.05"]
    assert table["data"][2] == ["0.02", "0.28", "-0.32", "0.06"]
    assert "row 1 = 0.1·A₁ + 0.2·A₂" in text and numbers["params_lowrank"] == 16


def test_svd_endpoint(app_client):
    *_, text, _b, _a, numbers = app_client.predict("[[3,0],[0,1]]", 1, api_name="/lowrank_svd")
    assert numbers["singular_values"] == [3.0, 1.0] and numbers["error_fro"] == pytest.approx(1.0)
    assert "Eckart–Young" in text


def test_preset_endpoint_random_low_rank(app_client):
    matrix_json, _grid, slider = app_client.predict(
        "Random low-rank + noise", 9, 6, 2, 0.0, 4, "qwen3-tiny", None, 2, api_name="/lowrank_preset"
    )
    assert len(json.loads(matrix_json)) == 9


def test_model_weight_preset(app_client):
    names = app_client.predict("qwen3-tiny", api_name="/lowrank_weights")
    name = names if isinstance(names, str) else names["value"]
    assert name.endswith("_proj.weight")
    matrix_json, *_ = app_client.predict(
        "Weight of a model", 1, 1, 1, 0, 0, "qwen3-tiny", name, 2, api_name="/lowrank_preset"
    )
    assert len(json.loads(matrix_json)) in (64, 192, 32, 16)


@pytest.mark.parametrize(
    "api, args, message",
    [
        ("/lowrank_parse", ("[[1,2],[3]]", 2), "ragged rows"),
        ("/lowrank_parse", ("", 2), "empty"),
        ("/lowrank_svd", ("[[1,2],[3,4]]", 7), "from 1 to 2"),
        ("/lowrank_product", (df([[1, 2]]), df([[1, 2]]), "W0 = 0"), "must equal A's rows"),
        ("/lowrank_analyze", (None, "/etc", "fro_norm"), "outside the folders this app may read"),
        ("/lowrank_analyze", (None, "no-such-run", "fro_norm"), "does not exist"),
        ("/lowrank_analyze", (None, "", "fro_norm"), "Pick an adapter"),
    ],
)
def test_bad_input_is_one_clear_message(app_client, api, args, message):
    with pytest.raises(AppError) as info:
        app_client.predict(*args, api_name=api)
    assert message in str(info.value) and "Traceback" not in str(info.value)


def test_analyze_and_truncate_endpoints(app_client, app_dirs, tmp_path):
    from tests.test_lowrank import make_adapter

    src = make_adapter(tmp_path / "a")
    run = app_dirs / "runs" / "ui-run"
    shutil.copytree(src, run)
    summary, _heat, _module, _spec, table = app_client.predict(
        None, str(run), "effective_rank", api_name="/lowrank_analyze"
    )
    assert "14 LoRA modules" in summary and len(table["data"]) == 14
    text, _choice = app_client.predict(None, str(run), 2, "ui-run-rank2", api_name="/lowrank_truncate")
    assert (app_dirs / "runs" / "ui-run-rank2" / "adapter_model.safetensors").is_file() and "rank-2" in text
    with pytest.raises(AppError, match="not allowed"):
        app_client.predict(None, str(run), 2, "../../etc/evil", api_name="/lowrank_truncate")
