"""GGUF through llama.cpp's own converters (llamacpp.py): the merged model, and the adapter alone for `--lora`."""

from __future__ import annotations

from pathlib import Path

from lora_demo.adapters import check_adapter
from lora_demo.errors import InputError
from lora_demo.export.layout import GGUF_TYPES, LORA_GGUF_TYPES
from lora_demo.export.llamacpp import CONVERT_LORA, CONVERT_MODEL, check_space, convert
from lora_demo.i18n import msg

BYTES_PER_WEIGHT = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32}  # q8_0: 32 int8 + one f16 scale


def _check_type(outtype: str, allowed: tuple[str, ...]) -> None:
    if outtype not in allowed:
        raise InputError(
            msg("GGUF type must be one of {types}; got {value!r}.", types=", ".join(allowed), value=outtype)
        )


def _weights_bytes(folder: Path, pattern: str) -> int:
    return sum(f.stat().st_size for f in folder.glob(pattern) if f.is_file())


def export_gguf(merged_dir: str | Path, out_file: str | Path, outtype: str = "q8_0") -> Path:
    """The merged model (export_merged's folder) as one GGUF of type f16, bf16 or q8_0, by convert_hf_to_gguf.py.

    The GGUF carries the merged tokenizer's chat template, which is the run's prompt format."""
    _check_type(outtype, GGUF_TYPES)
    merged, out = Path(merged_dir), Path(out_file)
    if not (merged / "config.json").is_file():
        raise InputError(msg("{path} is not a merged model folder: export a merged model first.", path=str(merged)))
    stored = _weights_bytes(merged, "*.safetensors")  # 16-bit
    check_space(out.parent, int(stored / 2 * BYTES_PER_WEIGHT[outtype]))
    return convert(CONVERT_MODEL, [str(merged), "--outtype", outtype], out)


def export_lora_gguf(adapter_dir: str | Path, base_dir: str | Path, out_file: str | Path, outtype: str = "f16") -> Path:
    """The adapter alone as a LoRA GGUF (llama.cpp's `--lora`, Ollama's ADAPTER), by convert_lora_to_gguf.py.

    base_dir: a local folder with the base model's config.json (the converter reads the architecture from it)."""

    _check_type(outtype, LORA_GGUF_TYPES)
    info = check_adapter(adapter_dir)
    out = Path(out_file)
    check_space(out.parent, int(info.size * 1.2))
    return convert(CONVERT_LORA, ["--base", str(base_dir), "--outtype", outtype, str(adapter_dir)], out)
