"""GGUF + Modelfile + parity + Hub push, on qwen3-tiny runs, through llama.cpp's own converters and runtime."""

from __future__ import annotations

import json
import shutil
import time

import pytest

from lora_demo.errors import InputError
from lora_demo.export import layout
from lora_demo.export.llamacpp import converters_dir, explain_failure, runtime_available

needs_llama_cpp = pytest.mark.skipif(
    converters_dir() is None or not runtime_available(), reason="llama.cpp is installed by install.sh"
)


@pytest.fixture()
def run_copy(tiny_run, tmp_path):
    """A copy of the session's qwen3-tiny chat run (exports write into the run folder)."""
    dest = tmp_path / "runs" / tiny_run.name
    shutil.copytree(tiny_run, dest, ignore=shutil.ignore_patterns("checkpoint-*", "merged", "exports"))
    return dest


def _alpaca_copy(run_dir):
    """The same adapter, recorded as trained with the Alpaca template (the prompt format a base never has)."""
    import yaml

    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    cfg["template"] = "alpaca"
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    return run_dir


def _fields(path):
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    return reader, {k: f.contents() for k, f in reader.fields.items() if not k.startswith("tokenizer.ggml.")}


def _rows():
    return [
        {"instruction": "Who are you?", "input": ""},
        {"instruction": "Summarise this.", "input": "LoRA is low-rank."},
    ]


@pytest.mark.parametrize("template", ["alpaca", "chat"])
def test_exported_template_renders_the_apps_prompt_everywhere(tiny_run, template):
    """The bug every peer's tracker has: the export prompted differently from the app. The merged tokenizer's chat
    template (rendered by transformers and by llama.cpp's Jinja) and the Modelfile's template give, for a row with
    and without input, exactly the app's prompt."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    from lora_demo.data.templates import prompt_text
    from lora_demo.export.prompt_format import chat_template, messages_for, ollama_template, render_ollama
    from lora_demo.models import load_tokenizer

    tok = load_tokenizer("qwen3-tiny")
    fmt = {"template": template, "enable_thinking": False}
    new = chat_template(tok.chat_template, fmt)
    assert new is not None  # alpaca: its own; chat: thinking off made the default
    go = ollama_template(tok, fmt)
    for row in _rows():
        want = prompt_text(row, tok, template, False)
        messages = messages_for(row, template)
        assert tok.apply_chat_template(messages, chat_template=new, tokenize=False, add_generation_prompt=True) == want
        jinja = Jinja2ChatFormatter(new, tok.eos_token, "")
        assert jinja(messages=messages).prompt == want
        system = next((m["content"] for m in messages if m["role"] == "system"), "")
        assert render_ollama(go, messages[-1]["content"], system) == want


@needs_llama_cpp
def test_gguf_of_each_type_with_its_modelfile(run_copy):
    from lora_demo.export.run_exports import export_gguf_with_modelfile

    sizes = {}
    for t in layout.GGUF_TYPES:
        out, modelfile = export_gguf_with_modelfile(run_copy, t)
        assert out == layout.gguf_file(run_copy, t)
        reader, f = _fields(out)
        assert f["general.architecture"] == "qwen3" and f["qwen3.block_count"] == 2
        assert f["general.file_type"] == {"f16": 1, "bf16": 32, "q8_0": 7}[t]
        merged_template = (layout.merged_dir(run_copy) / "chat_template.jinja").read_text()
        assert reader.fields["tokenizer.chat_template"].contents() == merged_template
        assert f"FROM ./{out.name}\n" in modelfile.read_text()
        sizes[t] = out.stat().st_size
    assert sizes["q8_0"] < 0.7 * sizes["f16"] and abs(sizes["bf16"] - sizes["f16"]) < 0.01 * sizes["f16"]
    assert not list(layout.exports_dir(run_copy).glob(".*part*"))  # no temporary file left


@needs_llama_cpp
def test_lora_gguf_holds_every_lora_pair(run_copy):
    from lora_demo.adapters import check_adapter
    from lora_demo.export.run_exports import export_lora_gguf_run

    out = export_lora_gguf_run(run_copy)
    reader, f = _fields(out)
    info = check_adapter(run_copy)
    assert f["general.type"] == "adapter" and f["adapter.type"] == "lora"
    assert f["adapter.lora.alpha"] == pytest.approx(info.lora_alpha)
    names = [t.name for t in reader.tensors]
    assert len([n for n in names if n.endswith(".lora_a")]) == len(info.modules) == len(names) // 2


@needs_llama_cpp
def test_parity_report_from_the_cli(run_copy, capsys):
    """`export RUN --check --json`: one JSON line; the merged model and both GGUFs answer as the app does, and all
    read the prompt the run trained with."""
    from lora_demo.cli import main

    assert main(["export", str(run_copy), "--check", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"prompts", "merged_agreement", "gguf_agreement", "template_equal"} <= set(report)
    assert len(report["prompts"]) >= 3
    assert report["template_equal"] is True and report["modelfile_equal"] is True
    first = report["prompts"][0]
    assert first["app"]["prompt"].startswith("<|im_start|>user\n") and first["app"]["answer"]
    assert first["gguf"]["f16"]["prompt"] == first["app"]["prompt"] == first["merged"]["prompt"]
    assert report["merged_agreement"] >= 0.99 and report["gguf_agreement"] >= 0.95, report["gguf_agreements"]
    assert set(report["gguf_agreements"]) == {"f16", "q8_0"}
    assert json.loads((layout.exports_dir(run_copy) / layout.PARITY).read_text())["run"] == run_copy.name


def test_parity_catches_a_template_mismatch(run_copy):
    """A merged model whose template is the base's chat template while the run trained on Alpaca: the report marks
    the prompts unequal (what the check is for)."""
    from lora_demo.export.parity import check_parity
    from lora_demo.export.run_exports import ensure_merged

    merged = ensure_merged(run_copy)  # a chat run: the merged model carries the chat template
    _alpaca_copy(run_copy)  # ...but the app prompts this adapter with Alpaca now
    report = check_parity(run_copy, merged, {}, None, max_new_tokens=4)
    assert report["template_equal"] is False
    assert all(not p["merged"]["prompt_equal"] for p in report["prompts"])


def test_agreement_counts_positions_over_the_longer_answer():
    from lora_demo.export.parity import agreement

    assert agreement([1, 2, 3, 4], [1, 2, 3, 4]) == (1.0, None)
    assert agreement([1, 2, 3, 4], [1, 2, 9, 4]) == (0.75, 2)
    assert agreement([1, 2], [1, 2, 3, 4]) == (0.5, 2)
    assert agreement([], []) == (1.0, None)


# --- bad input: one clear line each, nothing half-written ---
def test_no_converters_says_how_to_get_them(run_copy, monkeypatch):
    from lora_demo.export import llamacpp
    from lora_demo.export.run_exports import ensure_merged, export_gguf_with_modelfile

    ensure_merged(run_copy)
    monkeypatch.setattr(llamacpp, "converters_dir", lambda: None)
    with pytest.raises(
        InputError, match="needs llama.cpp's converters, which are not installed: run `bash install.sh`"
    ):
        export_gguf_with_modelfile(run_copy, "f16")
    assert not list(layout.exports_dir(run_copy).glob("*.gguf"))


@needs_llama_cpp
def test_unknown_architecture_is_one_line_and_leaves_nothing(tmp_path):
    from lora_demo.export.gguf import export_gguf

    merged = tmp_path / "m"
    merged.mkdir()
    (merged / "config.json").write_text(json.dumps({"architectures": ["FooBarForCausalLM"], "model_type": "foobar"}))
    (merged / "model.safetensors").write_bytes(b"")
    with pytest.raises(InputError, match="does not know this model's architecture.*FooBarForCausalLM"):
        export_gguf(merged, tmp_path / "out" / "m.gguf", "f16")
    assert not list((tmp_path / "out").iterdir())


def test_converter_failures_are_explained():
    assert "disk filled up" in str(explain_failure("...\nOSError: [Errno 28] No space left on device\n"))
    assert "tokenizer" in str(explain_failure("NotImplementedError: BPE pre-tokenizer was not recognized - update"))
    assert str(explain_failure("Traceback\nValueError: boom")).endswith("ValueError: boom")


def test_no_disk_space_is_refused_before_writing(run_copy, monkeypatch):
    import shutil as sh

    from lora_demo.export.merged import export_merged

    monkeypatch.setattr(sh, "disk_usage", lambda p: sh._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(InputError, match="Not enough disk space"):
        export_merged(run_copy, run_copy / "merged")
    assert not (run_copy / "merged").exists() and not list(run_copy.glob(".merged-*"))


def test_a_run_without_an_adapter_is_refused(tmp_path):
    from lora_demo.export.run_exports import export_run

    (tmp_path / "r").mkdir()
    for kind in ("merged", "gguf", "lora-gguf"):
        with pytest.raises(InputError, match="holds no adapter"):
            export_run(tmp_path / "r", kind)


# --- Hub push ---
def test_push_dry_run_lists_the_adapter_card_and_rows(run_copy):
    from lora_demo.export.hub import push

    res = push(run_copy, "someone/tiny-chat", dry_run=True)
    names = [n for n, _ in res["files"]]
    assert {"adapter_model.safetensors", "adapter_config.json", "README.md", "data/train.jsonl"} <= set(names)
    assert res["url"] is None and all(size > 0 for _, size in res["files"])


def test_push_refuses_a_link_and_a_bad_repo_id_and_fails_fast_offline(run_copy, tmp_path, monkeypatch):
    from lora_demo.export.hub import push

    for bad in ("", "a/b/c", "bad name", "x" * 200, "../etc"):
        with pytest.raises(InputError, match="is not a valid Hub repo id"):
            push(run_copy, bad, dry_run=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = time.perf_counter()
    with pytest.raises(InputError, match="cannot be reached"):
        push(run_copy, "someone/tiny-chat", token="hf_x")
    assert time.perf_counter() - t < 5
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    (run_copy / "data" / "val.jsonl").unlink()
    (run_copy / "data" / "val.jsonl").symlink_to(secret)
    with pytest.raises(InputError, match="link"):
        push(run_copy, "someone/tiny-chat", dry_run=True)


def test_push_uploads_what_the_plan_lists(run_copy, monkeypatch):
    """With the Hub reachable and a token, create_repo gets the privacy asked for and upload_folder a folder holding
    exactly the planned files (copies, never the run folder itself)."""
    import huggingface_hub

    from lora_demo.export import hub
    from lora_demo.models import registry

    calls = {}

    class FakeApi:
        def __init__(self, token):
            calls["token"] = token

        def create_repo(self, repo_id, private, exist_ok, repo_type):
            calls["create"] = (repo_id, private, exist_ok, repo_type)
            return f"https://hub.example/{repo_id}"

        def upload_folder(self, folder_path, repo_id, repo_type, commit_message):
            from pathlib import Path

            calls["files"] = sorted(
                str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file()
            )

    monkeypatch.setattr(registry, "hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    res = hub.push(run_copy, "someone/tiny-chat", private=True, token="hf_abc")
    assert calls["token"] == "hf_abc" and calls["create"] == ("someone/tiny-chat", True, True, "model")
    assert calls["files"] == sorted(n for n, _ in res["files"]) and res["url"].endswith("someone/tiny-chat")


def test_a_shared_app_never_lends_its_token(run_copy, tmp_path):
    from lora_demo.engine import AppSettings, LabEngine

    lab = LabEngine(AppSettings(runs_dir=run_copy.parent, data_dir=tmp_path / "data", shared=True))
    with pytest.raises(InputError, match="paste your own Hugging Face token"):
        lab.export_push(run_copy.name, "someone/x", dry_run=False)
    assert lab.export_push(run_copy.name, "someone/x", dry_run=True)["url"] is None
