"""Adapters that leave the app: a zip of the PEFT folder, a merged 16-bit model, and GGUF where llama.cpp is present.

Every export carries the run's model card (README.md, Hugging Face layout). Weights are written as safetensors.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from lora_demo.adapters import find_adapter_files
from lora_demo.errors import InputError

ZIP_FILES = ("adapter_config.json", "adapter_model.safetensors", "README.md", "config.yaml", "tokenizer.json",
             "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", "status.json")  # fmt: skip


def export_zip(run_dir: str | Path, out_file: str | Path) -> Path:
    """A zip of the adapter (PEFT files, tokenizer, config.yaml, model card) that PeftModel.from_pretrained reads."""
    run_dir = Path(run_dir)
    find_adapter_files(run_dir)
    out = Path(out_file)
    if out.suffix != ".zip":
        raise InputError(f"The zip file name must end in .zip; got {out.name}.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in ZIP_FILES:
            if (run_dir / name).is_file():
                zf.write(run_dir / name, f"{run_dir.name}/{name}")
    os.replace(tmp, out)
    return out


def _base_model(run_dir: Path) -> str:
    import json

    cfg = json.loads((run_dir / "adapter_config.json").read_text())
    base = cfg.get("base_model_name_or_path")
    if not base:
        raise InputError(f"{run_dir}/adapter_config.json names no base model (base_model_name_or_path).")
    return base


def merged_card(run_dir: Path, base: str) -> str:
    card = (run_dir / "README.md").read_text(encoding="utf-8") if (run_dir / "README.md").is_file() else ""
    body = card.split("---", 2)[-1] if card.startswith("---") else card
    return (f"---\nbase_model: {base}\nlibrary_name: transformers\npipeline_tag: text-generation\ntags: [lora-lab, merged, lora]\n---\n"
            f"\n**Merged model**: the LoRA adapter `{run_dir.name}` folded into `{base}` (16-bit, safetensors). "
            f"Load it with `AutoModelForCausalLM.from_pretrained`.\n{body}")  # fmt: skip


def export_merged(run_dir: str | Path, out_dir: str | Path, dtype: str = "bf16") -> Path:
    """Merge the adapter into its base and save a 16-bit model that plain AutoModelForCausalLM loads.

    On CUDA with Unsloth installed, Unsloth's merged save (`save_pretrained_merged(..., "merged_16bit")`) is used,
    which also dequantizes a 4-bit base; elsewhere PEFT's merge_and_unload on a 16-bit load of the base.
    """
    run_dir, out = Path(run_dir), Path(out_dir)
    find_adapter_files(run_dir)
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} already exists and is not empty: pick a new folder so nothing is overwritten.")
    base = _base_model(run_dir)
    from lora_demo.device import detect

    plan = detect()
    if plan.backend == "unsloth":
        _merge_unsloth(run_dir, out, base)
    else:
        _merge_peft(run_dir, out, base, dtype, plan.device)
    (out / "README.md").write_text(merged_card(run_dir, base), encoding="utf-8")
    return out


def _merge_peft(run_dir: Path, out: Path, base: str, dtype: str, device: str) -> None:
    from peft import PeftModel

    from lora_demo.models import load_model

    # Merge in fp32 on CPU (CPU half-precision matmuls are slow and lossy), then store 16-bit.
    lm = load_model(base, dtype="fp32" if device == "cpu" else dtype, device=device)
    model = PeftModel.from_pretrained(lm.model, str(run_dir)).merge_and_unload()
    import torch

    model = model.to({"bf16": torch.bfloat16, "fp16": torch.float16}[dtype])
    model.save_pretrained(str(out), safe_serialization=True)
    lm.tokenizer.save_pretrained(str(out))


def _merge_unsloth(run_dir: Path, out: Path, base: str) -> None:
    """Unsloth's merged 16-bit save, in a fresh process (unsloth must be imported before transformers)."""
    import json
    import tempfile

    from lora_demo.models import model_path

    with tempfile.TemporaryDirectory() as tmp:
        # Unsloth opens an adapter folder by its base_model_name_or_path: point that at the resolved base.
        adapter = Path(tmp) / "adapter"
        shutil.copytree(run_dir, adapter, ignore=shutil.ignore_patterns("checkpoints", "data", "*.log"))
        cfg = json.loads((adapter / "adapter_config.json").read_text())
        cfg["base_model_name_or_path"] = model_path(base)
        (adapter / "adapter_config.json").write_text(json.dumps(cfg))
        code = ("import sys, unsloth\nfrom unsloth import FastLanguageModel\n"
                "m, t = FastLanguageModel.from_pretrained(sys.argv[1], load_in_4bit=True)\n"
                "m.save_pretrained_merged(sys.argv[2], t, save_method='merged_16bit')\n")  # fmt: skip
        res = subprocess.run([sys.executable, "-c", code, str(adapter), str(out)], capture_output=True, text=True)
    if res.returncode != 0:
        tail = (res.stderr.strip().splitlines() or ["?"])[-1][:300]
        raise InputError(f"Unsloth's merged save failed: {tail}")


def gguf_converter() -> Path | None:
    """llama.cpp's convert_hf_to_gguf.py, from $LLAMA_CPP_DIR or the PATH, if present."""
    root = os.environ.get("LLAMA_CPP_DIR")
    if root and (Path(root) / "convert_hf_to_gguf.py").is_file():
        return Path(root) / "convert_hf_to_gguf.py"
    found = shutil.which("convert_hf_to_gguf.py") or shutil.which("convert-hf-to-gguf.py")
    return Path(found) if found else None


def export_gguf(merged_dir: str | Path, out_file: str | Path, outtype: str = "q8_0") -> Path:
    """GGUF of a merged model via llama.cpp's converter; a clear InputError when the converter is not installed."""
    conv = gguf_converter()
    if conv is None:
        raise InputError(
            "GGUF export needs llama.cpp's converter, which is not installed here: "
            "git clone https://github.com/ggml-org/llama.cpp, pip install -r llama.cpp/requirements.txt, "
            "then set LLAMA_CPP_DIR to that folder. The merged 16-bit model and the zip work without it."
        )
    merged = Path(merged_dir)
    if not (merged / "config.json").is_file():
        raise InputError(f"{merged} is not a merged model folder: export a merged model first.")
    out = Path(out_file)
    res = subprocess.run([sys.executable, str(conv), str(merged), "--outfile", str(out), "--outtype", outtype],
                         capture_output=True, text=True)  # fmt: skip
    if res.returncode != 0 or not out.is_file():
        raise InputError(f"llama.cpp's converter failed: {(res.stderr.strip().splitlines() or ['?'])[-1][:300]}")
    return out
