"""The adapter merged into its base: a 16-bit safetensors model (+ model card) that plain AutoModelForCausalLM loads.

PEFT's merge_and_unload elsewhere; Unsloth's merged save on CUDA (in a fresh process, as unsloth must come first).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from lora_demo.adapters import AdapterInfo, check_adapter, check_adapter_fits, module_shapes
from lora_demo.errors import InputError
from lora_demo.export.llamacpp import check_space
from lora_demo.export.prompt_format import chat_template, run_format
from lora_demo.i18n import msg
from lora_demo.io import copy_file, regular_files
from lora_demo.models import load_model, model_path
from lora_demo.models.registry import REGISTRY
from lora_demo.rundir import MODEL_CARD, AdapterDir, RunDir
from lora_demo.train.sizing import meta_model, model_config


def _base_model(run_dir: Path, info: AdapterInfo) -> str:
    base = info.base_model
    if not base:
        raise InputError(
            msg("{run_dir}/adapter_config.json names no base model (base_model_name_or_path).", run_dir=str(run_dir))
        )
    return base


def merged_card(run_dir: Path, base: str) -> str:
    """The merged model's card: the run's card, headed by what was merged into what and how to prompt it."""

    card_path = RunDir(run_dir).card_path
    card = card_path.read_text(encoding="utf-8") if card_path.is_file() else ""
    body = card.split("---", 2)[-1] if card.startswith("---") else card
    spec = REGISTRY.get(base)
    hub = (spec.hub_id if spec else None) or base
    return (
        f"---\nbase_model: {hub}\nlibrary_name: transformers\npipeline_tag: text-generation\ntags: [lora-lab, merged, lora]\n---\n"
        f"\n**Merged model**: the LoRA adapter `{run_dir.name}` folded into `{base}` (16-bit, safetensors). "
        "Load this folder with `AutoModelForCausalLM.from_pretrained` and prompt it with "
        "`tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)`: its chat template "
        f"is the prompt format the adapter was trained with. (The adapter's own card follows.)\n{body}"
    )


def export_merged(run_dir: str | Path, out_dir: str | Path, dtype: str = "auto") -> Path:
    """Merge the adapter into its base and save a 16-bit model that plain AutoModelForCausalLM loads, with the run's
    prompt format as its chat template (export/prompt_format.py), so it is prompted as it was trained.

    dtype: "auto" (the base's own 16-bit type: fp16 for a float16 base, else bf16), "bf16" or "fp16".
    On CUDA with Unsloth installed, Unsloth's merged save (`save_pretrained_merged(..., "merged_16bit")`) is used,
    which also dequantizes a 4-bit base; elsewhere PEFT's merge_and_unload on a full-precision load of the base.
    Written into a temporary folder beside out_dir and renamed when complete: out_dir is whole or not there.
    """
    import shutil
    import tempfile

    run_dir, out = Path(run_dir), Path(out_dir)
    info = check_adapter(run_dir)  # a torn or bad adapter: one clear message before any model loads
    if out.exists() and any(out.iterdir()):
        raise InputError(
            msg("{path} already exists and is not empty: pick a new folder so nothing is overwritten.", path=str(out))
        )
    if dtype not in ("auto", "bf16", "fp16"):
        raise InputError(msg("dtype must be auto, bf16 or fp16; got {value!r}.", value=dtype))
    base = _base_model(run_dir, info)
    from lora_demo.device import detect  # deferred: device imports torch

    check_space(out.parent, 2 * _base_params(base))
    plan = detect()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would hide the model from other users of the machine
    try:
        if plan.backend == "unsloth" and not _is_4bit_checkpoint(base):
            _merge_unsloth(run_dir, tmp, base)
        else:  # Unsloth's 16-bit merge refuses an nf4 checkpoint (the CUDA default): dequantize it once, then merge
            _merge_peft(run_dir, tmp, base, dtype, plan.device, info)
        _write_prompt_format(run_dir, tmp)
        (tmp / MODEL_CARD).write_text(merged_card(run_dir, base), encoding="utf-8")
        if out.exists():
            out.rmdir()  # empty (checked above)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _is_4bit_checkpoint(base: str) -> bool:
    """Whether the base is a bitsandbytes 4-bit checkpoint (e.g. unsloth/Qwen3-1.7B-unsloth-bnb-4bit)."""

    spec = REGISTRY.get(base)
    if spec is not None and spec.prequantized_4bit:
        return True
    try:
        q = model_config(base).get("quantization_config") or {}
    except Exception:  # an unreadable config: the merge itself will say what is wrong
        return False
    return bool(q.get("load_in_4bit") or q.get("bnb_4bit_quant_type"))


def _base_params(base: str) -> int:
    """Parameters of the base (0 when unknown), to check the disk before a merge."""

    try:
        model = meta_model(base)[0]
        return sum(p.numel() for p in model.parameters())
    except Exception:  # an estimate only: never block an export on it
        return 0


def _write_prompt_format(run_dir: Path, merged: Path) -> None:
    """The run's prompt format as the merged tokenizer's chat template (what pipelines, llama.cpp and Ollama read)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(merged))
    template = chat_template(tok.chat_template, run_format(run_dir))
    if template:
        tok.chat_template = template
        tok.save_pretrained(str(merged))


def _store_dtype(base_path: str, dtype: str):
    import torch

    if dtype == "auto":
        cfg = json.loads((Path(base_path) / "config.json").read_text()) if Path(base_path).is_dir() else {}
        dtype = "fp16" if (cfg.get("dtype") or cfg.get("torch_dtype")) == "float16" else "bf16"
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]


def _merge_peft(run_dir: Path, out: Path, base: str, dtype: str, device: str, info: AdapterInfo) -> None:
    from peft import PeftModel

    # Merge in fp32 on CPU (CPU half-precision matmuls are slow and lossy), then store 16-bit.
    lm = load_model(base, dtype="fp32" if device == "cpu" else ("bf16" if dtype == "auto" else dtype), device=device)
    base_model = lm.model
    if getattr(base_model, "hf_quantizer", None) is not None:  # a 4-bit checkpoint: its 16-bit copy, once
        import torch

        base_model = base_model.dequantize(dtype=torch.bfloat16)
        base_model.hf_quantizer = None
        base_model.config.quantization_config = None
        # The 4-bit load recorded quantize steps that save_pretrained would try to reverse (transformers has no
        # reverse for them): the dequantized model is a plain one, saved with the architecture's default mapping.
        if hasattr(base_model, "_weight_conversions"):
            base_model._weight_conversions = None
        for attr in ("is_loaded_in_4bit", "is_loaded_in_8bit", "is_quantized"):
            if getattr(base_model, attr, False):
                setattr(base_model, attr, False)
    check_adapter_fits(info, module_shapes(base_model), base)
    model = PeftModel.from_pretrained(base_model, str(run_dir)).merge_and_unload()

    model = model.to(_store_dtype(model_path(base), dtype))
    model.save_pretrained(str(out), safe_serialization=True)
    lm.tokenizer.save_pretrained(str(out))


def _merge_unsloth(run_dir: Path, out: Path, base: str) -> None:
    """Unsloth's merged 16-bit save, in a fresh process (unsloth must be imported before transformers)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        # Unsloth opens an adapter folder by its base_model_name_or_path: point that at the resolved base.
        adapter = Path(tmp) / "adapter"
        adapter.mkdir()
        for path in regular_files(run_dir):  # the run's own files (no subfolders, logs or links)
            if path.suffix != ".log":
                copy_file(path, adapter / path.name)
        cfg_file = AdapterDir(adapter).adapter_config_path
        cfg = json.loads(cfg_file.read_text())
        cfg["base_model_name_or_path"] = model_path(base)
        cfg_file.write_text(json.dumps(cfg))
        code = (
            "import sys, unsloth\nfrom unsloth import FastLanguageModel\n"
            "m, t = FastLanguageModel.from_pretrained(sys.argv[1], load_in_4bit=True)\n"
            "m.save_pretrained_merged(sys.argv[2], t, save_method='merged_16bit')\n"
        )
        res = subprocess.run([sys.executable, "-c", code, str(adapter), str(out)], capture_output=True, text=True)
    if res.returncode != 0:
        tail = (res.stderr.strip().splitlines() or ["?"])[-1][:300]
        raise InputError(msg("Unsloth's merged save failed: {tail}", tail=tail))
