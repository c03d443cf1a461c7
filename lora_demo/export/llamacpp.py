"""llama.cpp's converters, where install.sh puts them, run so that a failure is one clear line and no half file.

install.sh copies the converters that llama-cpp-python's source release vendors (convert_hf_to_gguf.py,
convert_lora_to_gguf.py, their conversion/ package and gguf-py/) into <venv>/share/llama.cpp; $LLAMA_CPP_DIR
points at another llama.cpp checkout instead. They run in a child process, as llama.cpp documents them.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

from lora_demo.errors import InputError
from lora_demo.i18n import msg

CONVERT_MODEL = "convert_hf_to_gguf.py"
CONVERT_LORA = "convert_lora_to_gguf.py"
TIMEOUT_S = 3600


def converters_dir() -> Path | None:
    """The folder holding llama.cpp's converters: $LLAMA_CPP_DIR, else <venv>/share/llama.cpp (install.sh)."""
    for root in (os.environ.get("LLAMA_CPP_DIR"), Path(sys.prefix) / "share" / "llama.cpp"):
        if root and (Path(root) / CONVERT_MODEL).is_file():
            return Path(root)
    return None


def llama_cpp_version() -> str | None:
    """The llama-cpp-python release the converters came from (install.sh writes it), if known."""
    root = converters_dir()
    version = root / "VERSION" if root else None
    return version.read_text().strip() if version and version.is_file() else None


def require_converters() -> Path:
    root = converters_dir()
    if root is None:
        raise InputError(
            msg(
                "GGUF export needs llama.cpp's converters, which are not installed: run `bash "
                "install.sh` again (it builds llama-cpp-python and copies its converters), or set "
                "LLAMA_CPP_DIR to a llama.cpp checkout."
            )
        )
    return root


def runtime_available() -> bool:
    """Whether llama.cpp's runtime (llama-cpp-python) is importable, for the parity check."""
    return importlib.util.find_spec("llama_cpp") is not None


def check_space(folder: Path, need_bytes: int) -> None:
    """One clear line before writing when the disk cannot hold need_bytes (+10%)."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < need_bytes * 1.1:
        raise InputError(
            msg(
                "Not enough disk space in {path}: the export needs about {need} MB and {free} MB are "
                "free. Free some space (delete old runs or exports) and try again.",
                path=str(folder),
                need=round(need_bytes / 1e6),
                free=round(free / 1e6),
            )
        )


def convert(script: str, args: list[str], out: Path) -> Path:
    """Run one of llama.cpp's converters writing `out`: to a temporary name first, renamed when complete, so `out`
    is a whole GGUF or not there (the old one stays until the new one is whole)."""
    root = require_converters()
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(f".{out.name}.part-{os.getpid()}")
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}  # its own gguf-py, matching the converter
    try:
        res = subprocess.run(
            [sys.executable, str(root / script), *args, "--outfile", str(part)],
            capture_output=True,
            text=True,
            env=env,
            timeout=TIMEOUT_S,
        )
        if res.returncode != 0 or not part.is_file():
            raise InputError(explain_failure(res.stderr + res.stdout))
        os.replace(part, out)
    finally:
        part.unlink(missing_ok=True)
    return out


def explain_failure(log: str) -> str:
    """The converter's failure as one line saying what is wrong (its own last line when it is none we know)."""
    lines = [ln.strip() for ln in log.strip().splitlines() if ln.strip()]
    last = lines[-1] if lines else "?"
    if "No space left on device" in log:
        return msg("The disk filled up while writing the GGUF (nothing was kept): free some space and try again.")
    for ln in reversed(lines):
        if "not supported" in ln and ("Architecture" in ln or "Model" in ln):
            return msg(
                "llama.cpp's converter does not know this model's architecture ({detail}): GGUF export "
                "works for the Qwen3 and Llama families (SmolLM2 included). The merged 16-bit model and "
                "the zip still work.",
                detail=ln.split(":")[-1].strip()[:120],
            )
        if "pre-tokenizer was not recognized" in ln:
            return msg(
                "llama.cpp's converter does not recognise this model's tokenizer, so a GGUF would tokenize "
                "differently from the app; export the merged 16-bit model instead."
            )
    return msg("llama.cpp's converter failed: {tail}", tail=last[:300])
