"""GGUF through llama.cpp's converter, when it is installed; otherwise a message saying how to get it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from lora_demo.errors import InputError
from lora_demo.i18n import msg


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
            msg(
                "GGUF export needs llama.cpp's converter, which is not installed here: "
                "git clone https://github.com/ggml-org/llama.cpp, pip install -r llama.cpp/requirements.txt, "
                "then set LLAMA_CPP_DIR to that folder. The merged 16-bit model and the zip work without it."
            )
        )
    merged = Path(merged_dir)
    if not (merged / "config.json").is_file():
        raise InputError(msg("{path} is not a merged model folder: export a merged model first.", path=str(merged)))
    out = Path(out_file)
    res = subprocess.run([sys.executable, str(conv), str(merged), "--outfile", str(out), "--outtype", outtype],
                         capture_output=True, text=True)  # fmt: skip
    if res.returncode != 0 or not out.is_file():
        raise InputError(
            msg("llama.cpp's converter failed: {tail}", tail=(res.stderr.strip().splitlines() or ["?"])[-1][:300])
        )
    return out
