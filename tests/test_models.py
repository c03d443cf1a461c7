"""The model registry: every entry resolves, embedded models load offline, bad inputs get one clear line."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import torch
from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

from lora_demo.errors import ModelError
from lora_demo.models import REGISTRY, explain_load_error, get_spec, load_model, model_path, shipped_config


@pytest.mark.parametrize("model_id", list(REGISTRY))
def test_every_entry_resolves(model_id):
    spec = get_spec(model_id)
    assert spec.id == model_id
    if spec.kind == "hub":
        cfg = shipped_config(model_id)
        assert cfg["model_type"] == "qwen3" and cfg["vocab_size"] == 151936
    else:
        path = model_path(model_id)
        assert path and __import__("pathlib").Path(path, "config.json").is_file()


@pytest.mark.parametrize("model_id", ["smollm2-135m-instruct", "qwen3-tiny"])
def test_embedded_model_loads_offline_and_generates(model_id, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    lm = load_model(model_id)
    tok = lm.tokenizer
    enc = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = lm.model.generate(**enc, max_new_tokens=8, do_sample=False)
    new = out[0, enc["input_ids"].shape[1] :].tolist()
    # Greedy decoding has one right answer: the argmax of the loaded weights, token by token, for 8 tokens or up to
    # and including the first end-of-sequence token. A model whose weights did not load, or whose generation config
    # (sampling, repetition penalty, stop tokens) changes the decode, gives different tokens.
    eos = lm.model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    ids, expected = enc["input_ids"], []
    with torch.no_grad():
        while len(expected) < 8 and not eos & set(expected):
            nxt = lm.model(input_ids=ids).logits[0, -1].argmax().item()
            expected.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    assert new == expected
    if model_id == "smollm2-135m-instruct":  # a real instruct model: it knows this, and stops after saying it
        assert tok.decode(new, skip_special_tokens=True) == "The capital of France is Paris."
        assert new[-1] in eos
    else:  # random-init weights: the words mean nothing, so check that they come from the weights on disk
        from safetensors.torch import load_file

        saved = load_file(Path(model_path(model_id), "model.safetensors"))
        params = lm.model.state_dict()
        assert saved and all(torch.equal(params[name], w) for name, w in saved.items())


def test_hub_id_offline_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="not in the local cache.*offline"):
        load_model("unsloth/Qwen3-1.7B-unsloth-bnb-4bit")


def _resp(code):
    return httpx.Response(code, request=httpx.Request("GET", "https://huggingface.co/x/y"))


def test_missing_hub_id_message():
    err = explain_load_error(OSError("wrapper").with_traceback(None), "nobody/nothing")
    assert "Could not load" in str(err)
    exc = OSError("not a valid model identifier")
    exc.__cause__ = RepositoryNotFoundError("404", response=_resp(404))
    assert "does not exist on the Hugging Face hub" in str(explain_load_error(exc, "nobody/nothing"))


def test_gated_hub_id_message():
    exc = OSError("You are trying to access a gated repo")
    exc.__cause__ = GatedRepoError("401", response=_resp(401))
    msg = str(explain_load_error(exc, "meta-llama/Llama-3-8B"))
    assert "gated (401)" in msg and "hf auth login" in msg


def test_folder_without_model(tmp_path):
    with pytest.raises(ModelError, match="config.json is missing"):
        load_model(str(tmp_path))
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(ModelError, match="looks like a LoRA adapter"):
        load_model(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="no weights"):
        load_model(str(tmp_path))


def test_vanished_folder_and_nonsense_ids(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_model(str(tmp_path / "gone"))
    with pytest.raises(ModelError, match="neither a known model"):
        get_spec("not a model id")
    with pytest.raises(ModelError, match="No model given"):
        get_spec("  ")


def test_remote_code_only_for_local_folders():
    with pytest.raises(ModelError, match="trust_remote_code"):
        load_model("qwen3-tiny", trust_remote_code=True)


def test_model_errors_and_descriptions_render_in_chinese(tmp_path):
    """The loader's messages are Msgs: English as str (CLI, logs), Chinese for a zh session, ids kept as they are."""
    from lora_demo.i18n import render
    from lora_demo.models import REGISTRY

    exc = OSError("You are trying to access a gated repo")
    exc.__cause__ = GatedRepoError("401", response=_resp(401))
    err = explain_load_error(exc, "meta-llama/Llama-3-8B")
    assert render(err.args[0], "zh").startswith("'meta-llama/Llama-3-8B' 需要授权访问（401）")
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(ModelError) as info:
        load_model(str(tmp_path))
    assert render(info.value.args[0], "zh") == (
        f"{tmp_path} 中没有模型：缺少 config.json。它看起来是一个 LoRA 适配器：请选择它的基座模型，再单独加载该适配器。"
    )
    assert render(REGISTRY["qwen3-tiny"].description, "zh").startswith("随机初始化的 2 层 Qwen3")
    assert render(get_spec("owner/some-model").description, "zh") == "Hub 模型 owner/some-model"
