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


def test_a_chinese_session_gets_chinese_reports_plots_and_errors(app_client):
    """Issue 14: a session switched to 简体中文 gets the panels, the plot labels and the errors in Chinese, while
    another session (app_client) keeps English."""
    from gradio_client import Client

    from lora_demo.i18n import msg, render

    zh = Client(app_client.src, verbose=False)  # a browser session of its own
    zh.predict("zh", api_name="/set_language")
    table, text, fig, _numbers = zh.predict(df(SEED_B), df(SEED_A), "random W0", api_name="/lowrank_product")
    assert table["data"][0] == ["0.11", "0.10", "0.00", "0.05"]  # the numbers do not change with the language
    assert "第 1 行 = 0.1·A₁ + 0.2·A₂" in text and "参数量" in text and "row 1" not in text
    assert render(msg("row"), "zh") in json.dumps(fig, ensure_ascii=False)  # the heatmaps' axis title
    *_, svd_text, _b, _a, _n = zh.predict("[[3,0],[0,1]]", 1, api_name="/lowrank_svd")
    assert "Eckart–Young 定理" in svd_text
    with pytest.raises(AppError) as info:
        zh.predict("[[1,2],[3]]", 2, api_name="/lowrank_parse")
    assert "粘贴的矩阵各行长度不一" in str(info.value)
    with pytest.raises(AppError) as info:
        zh.predict(None, "", "fro_norm", api_name="/lowrank_analyze")
    assert "请从列表中选择一个适配器" in str(info.value)
    *_, text, _fig, _numbers = app_client.predict(df(SEED_B), df(SEED_A), "W0 = 0", api_name="/lowrank_product")
    assert "row 1 = 0.1·A₁ + 0.2·A₂" in text  # the other session stays English


def test_the_language_switch_relabels_only_what_a_panel_still_shows(monkeypatch):
    """The switch renders the truncation line, the analysis and the comparison again from their gr.State, but not
    over an error message written there since (show_errors puts it in the same Markdown)."""
    import gradio as gr

    from lora_demo.i18n import msg, render
    from lora_demo.ui import common
    from lora_demo.ui.lowrank_tab import AdapterActions, modules_frame

    done = msg("Wrote the rank-{k} copy to `{out}`. Load it in the Chat tab, or analyze it here.", k=2, out="/r/x")
    monkeypatch.setattr(common.SESSION_LANG, "default", "zh")
    assert AdapterActions.relabel_message(done, str(done)) == render(done, "zh")
    assert AdapterActions.relabel_message(done, render(done, "zh")) == render(done, "zh")
    assert isinstance(AdapterActions.relabel_message(done, common.error_markdown("bad name")), type(gr.skip()))
    assert isinstance(AdapterActions.relabel_message(None, ""), type(gr.skip()))
    res = {
        "modules": [
            {
                "name": "model.layers.0.mlp.up_proj",
                "layer": 0,
                "module": "up_proj",
                "r": 2,
                "singular_values": [2.0, 1.0],
                "fro_norm": 2.2,
                "effective_rank": 1.9,
                "stable_rank": 1.25,
                "rank_90": 2,
                "rank_99": 2,
                "rel_to_base": None,
            }
        ],
        "base_model": "qwen3-tiny",
        "r": 2,
        "lora_alpha": 4,
        "use_rslora": False,
    }
    from lora_demo.ui.views.lowrank import adapter_markdown

    summary, heat, spectrum, frame = AdapterActions(None).relabel_analysis(
        res, "effective_rank", "model.layers.0.mlp.up_proj", adapter_markdown(res)
    )
    assert summary == adapter_markdown(res, "zh") and "1 个 LoRA 模块" in summary
    assert list(frame.columns) == list(modules_frame(res, "zh").columns) and "有效秩" in frame.columns
    assert "层" in heat.layout.yaxis.title.text and spectrum.layout.xaxis.title.text == "序号 i"
    stale = AdapterActions(None).relabel_analysis(res, "effective_rank", "x", common.error_markdown("gone"))
    assert all(isinstance(x, type(gr.skip())) for x in stale)
