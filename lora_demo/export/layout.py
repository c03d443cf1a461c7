"""Where a run's exports live: the one place their file names are spelled.

runs/<run>/merged/                 the adapter folded into its base (16-bit safetensors, tokenizer, model card)
runs/<run>/exports/<run>.zip       the adapter as a zip
runs/<run>/exports/<run>-<type>.gguf       the merged model as GGUF (f16, bf16, q8_0)
runs/<run>/exports/<run>-lora-<type>.gguf  the adapter alone as a LoRA GGUF (llama.cpp's --lora)
runs/<run>/exports/Modelfile       Ollama's recipe for the last GGUF written (FROM it, the run's prompt format)
runs/<run>/exports/parity.json     the last parity report
"""

from __future__ import annotations

from pathlib import Path

from lora_demo.rundir import RunDir

GGUF_TYPES = ("f16", "bf16", "q8_0")  # what llama.cpp's converter writes without its compiled quantize tool
LORA_GGUF_TYPES = ("f16", "bf16", "q8_0")
MODELFILE = "Modelfile"
PARITY = "parity.json"


def exports_dir(run_dir: str | Path) -> Path:
    return RunDir(run_dir).exports_dir


def merged_dir(run_dir: str | Path) -> Path:
    return RunDir(run_dir).merged_dir


def zip_file(run_dir: str | Path) -> Path:
    return exports_dir(run_dir) / f"{Path(run_dir).name}.zip"


def gguf_file(run_dir: str | Path, outtype: str) -> Path:
    return exports_dir(run_dir) / f"{Path(run_dir).name}-{outtype}.gguf"


def lora_gguf_file(run_dir: str | Path, outtype: str = "f16") -> Path:
    return exports_dir(run_dir) / f"{Path(run_dir).name}-lora-{outtype}.gguf"


def exported_ggufs(run_dir: str | Path) -> dict[str, Path]:
    """The merged-model GGUFs already written, by type (f16 first: the most faithful)."""
    return {t: gguf_file(run_dir, t) for t in GGUF_TYPES if gguf_file(run_dir, t).is_file()}
