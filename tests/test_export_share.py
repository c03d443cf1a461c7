"""Sharing and export: merged weights equal base + adapter, the zip loads in PEFT, traversal is refused."""

from __future__ import annotations

import zipfile

import pytest
import torch
from gradio_client.exceptions import AppError

from lora_demo.errors import InputError, ModelError
from lora_demo.export import export_gguf, export_merged, export_zip
from lora_demo.paths import PathPolicy


def _logits(model, ids):
    with torch.inference_mode():
        return model(input_ids=ids).logits.float()


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_merged_logits_equal_base_plus_adapter(tiny_run, tmp_path, dtype):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lora_demo.models import load_model

    out = export_merged(tiny_run, tmp_path / "merged", dtype=dtype)
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)  # plain transformers loads it
    peft = PeftModel.from_pretrained(load_model("qwen3-tiny").model, str(tiny_run))
    ids = torch.tensor([[9707, 1879, 0, 3555, 374, 697, 829, 30]])
    want, got = _logits(peft, ids), _logits(merged, ids)
    rel = (got - want).abs().max() / want.abs().max()
    assert rel < (5e-3 if dtype == "fp16" else 2e-2), float(rel)
    assert (got.argmax(-1) == want.argmax(-1)).float().mean() > 0.85
    assert (out / "README.md").read_text().startswith("---\nbase_model: qwen3-tiny")
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["model.safetensors"]
    with pytest.raises(InputError, match="already exists"):
        export_merged(tiny_run, out)


def test_zip_holds_a_peft_adapter(tiny_run, tmp_path):
    from peft import PeftModel

    from lora_demo.models import load_model

    z = export_zip(tiny_run, tmp_path / "a.zip")
    with zipfile.ZipFile(z) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path / "x")
    stem = tiny_run.name
    assert {f"{stem}/adapter_config.json", f"{stem}/adapter_model.safetensors", f"{stem}/README.md"} <= names
    model = PeftModel.from_pretrained(load_model("qwen3-tiny").model, str(tmp_path / "x" / stem))
    assert model.peft_config["default"].r == 16


def test_path_policy(tmp_path):
    (tmp_path / "runs" / "a").mkdir(parents=True)
    policy = PathPolicy([tmp_path / "runs", tmp_path / "data"])
    assert policy.check(str(tmp_path / "runs" / "a")) == (tmp_path / "runs" / "a").resolve()
    assert policy.check("a") == (tmp_path / "runs" / "a").resolve()
    for bad in [
        "../../etc/passwd",
        "/etc/passwd",
        str(tmp_path / "runs" / ".." / ".." / "x"),
        "~/.ssh",
        "a/../../..",
        "x\x00y",
    ]:
        with pytest.raises(InputError):
            policy.check(bad)
    from lora_demo.models.registry import check_model

    assert check_model(policy, "qwen3-tiny") == "qwen3-tiny"
    with pytest.raises(InputError, match="outside the folders"):
        check_model(policy, "/etc")


def test_pickle_weights_refused(tmp_path):
    from lora_demo.models import load_model

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(ModelError, match="safetensors only"):
        load_model(str(tmp_path))


def test_share_needs_a_login(monkeypatch, capsys):
    import app

    monkeypatch.delenv("LORA_LAB_AUTH", raising=False)
    user, password = app.resolve_auth(app.parse_args(["--share"]))
    assert user == "lora" and password in capsys.readouterr().out
    assert app.resolve_auth(app.parse_args(["--share", "--no-auth"])) is None
    assert "WARNING" in capsys.readouterr().out
    monkeypatch.setenv("LORA_LAB_AUTH", "ana:s3cret")
    assert app.resolve_auth(app.parse_args(["--share"])) == ("ana", "s3cret")


TRAVERSAL = ["../../etc/passwd", "/etc/passwd", "/etc", "../../../root", "..", "runs/../../etc"]


def _form(**over):
    from lora_demo.train.settings import TrainSettings
    from lora_demo.ui.train_tab import FORM

    values = {**TrainSettings(model="qwen3-tiny").to_dict(), **over}
    return [values[k] for k in FORM]


def _endpoint_calls(bad):
    table = {"headers": ["instruction", "input", "output"], "data": [["a", "", "b"]]}
    return [
        ("/lowrank_analyze", (None, bad, "fro_norm")),
        ("/lowrank_truncate", (None, bad, 2, "copy")),
        ("/lowrank_truncate", (None, "", 2, bad)),
        ("/dataset_save", (table, bad, 0.1)),
        ("/dataset_load", (bad,)),
        ("/dataset_validate", (table, bad, "alpaca", False, 64)),
        ("/dataset_preview", (table, 1, bad, "alpaca", False, 64, True)),
        ("/train_plan", _form(dataset=bad)),
        ("/train_start", _form(model=bad)),
        ("/chat_load", ("auto", bad)),
        ("/chat_load", (bad, None)),
        (
            "/chat_add_to_dataset",
            (bad, [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], None),
        ),
        ("/export_zip", (bad,)),
        ("/export_merged", (bad,)),
        ("/export_gguf", (bad, "q8_0")),
        ("/export_lora_gguf", (bad,)),
        ("/export_check", (bad,)),
        ("/export_push_dry_run", (bad, "me/x", True, False, "")),
    ]


@pytest.mark.parametrize("bad", TRAVERSAL)
def test_every_endpoint_refuses_traversal(app_client, app_dirs, bad):
    for api, args in _endpoint_calls(bad):
        with pytest.raises(AppError) as info:
            app_client.predict(*args, api_name=api)
        text = str(info.value)
        assert "root:x:0:0" not in text and "Traceback" not in text, (api, text)
    assert not list(app_dirs.glob("**/passwd*")) and not (app_dirs.parent / "etc").exists()


def test_each_visitor_gets_the_system_panel_and_errors_in_their_language(app_client):
    """One visitor switches to 简体中文: their System panel and the engine's errors (a nested "what" word included)
    come in Chinese; another visitor of the same app keeps English."""
    from gradio_client import Client

    zh = Client(app_client.src, verbose=False)
    assert zh.predict("zh", api_name="/set_language")[0] == "zh"
    panel = zh.predict(api_name="/system_info")
    assert (
        panel.startswith("- **设备：**") and "**训练后端：**" in panel and "| 模型 | 类型 | 离线可用 | 说明 |" in panel
    )
    assert app_client.predict(api_name="/system_info").startswith("- **Device:**")
    with pytest.raises(AppError, match="适配器文件夹 '/etc/passwd' 不在本应用可读取的文件夹内"):
        zh.predict("auto", "/etc/passwd", api_name="/chat_load")
    with pytest.raises(AppError, match="模型文件夹 '/etc' 不在本应用可读取的文件夹内"):
        zh.predict("/etc", None, api_name="/chat_load")
    with pytest.raises(AppError, match="The model folder '/etc' is outside the folders this app may read"):
        app_client.predict("/etc", None, api_name="/chat_load")


def test_export_errors_in_chinese(tmp_path):
    from lora_demo.i18n import render

    with pytest.raises(InputError) as info:
        export_gguf(tmp_path, tmp_path / "m.gguf")
    assert render(info.value.args[0], "zh") == f"{tmp_path} 不是合并后的模型文件夹：请先导出合并模型。"
    with pytest.raises(InputError) as info:
        export_zip(tmp_path, tmp_path / "x.zip")
    assert render(info.value.args[0], "zh") == f"{tmp_path} 中没有适配器：缺少 adapter_config.json。"


def test_the_model_cards_snippet_runs_against_the_hub_base(tmp_path):
    """The card names a base a stranger can load (SmolLM2's hub id, not LoRA Lab's own name) and its snippet runs
    as written: here against a local Hugging Face cache holding that id, offline."""
    import os
    import re
    import shutil
    import subprocess
    import sys

    from peft import LoraConfig, get_peft_model

    from lora_demo.models import load_model, model_path
    from lora_demo.train.runs import model_card

    run = tmp_path / "work" / "my-run"
    peft = get_peft_model(load_model("smollm2-135m-instruct").model, LoraConfig(r=2, target_modules=["q_proj"]))
    peft.save_pretrained(run)
    card = model_card(run, {"model": "smollm2-135m-instruct", "dataset": "x.jsonl", "template": "alpaca"}, {})
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in card and "dequantized from the Q4_1 GGUF" in card
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    snap = tmp_path / "hf" / "models--HuggingFaceTB--SmolLM2-135M-Instruct" / "snapshots" / ("0" * 40)
    shutil.copytree(model_path("smollm2-135m-instruct"), snap)
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text("0" * 40)
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=run.parent, env=env, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip()  # it answered


def test_the_zip_carries_the_rows_the_card_points_to(tiny_run, tmp_path):
    z = export_zip(tiny_run, tmp_path / "a.zip")
    with zipfile.ZipFile(z) as zf:
        names = set(zf.namelist())
        assert f"{tiny_run.name}/data/train.jsonl" in names and f"{tiny_run.name}/data/val.jsonl" in names
        assert "the zip export and a Hub push carry them" in zf.read(f"{tiny_run.name}/README.md").decode()
