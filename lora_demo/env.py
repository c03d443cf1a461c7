"""LoRA Lab's environment settings: every LORA_LAB_* variable the package reads, in one place.

Each accessor reads `os.environ` when it is called, so a value is read exactly when its caller asks: a module
constant at import (LORA_LAB_CHAT_UPDATE_S, LORA_LAB_CHAT_GATHER_MS, LORA_LAB_MAX_UPLOAD_MB), everything else per
call (tests `monkeypatch.setenv` before calling).

The app and the CLI:
- LORA_LAB_AUTH (unset): the login USER:PASS the app requires (`--auth`'s default).
- LORA_LAB_API_KEY (unset): with a login, the OpenAI-compatible endpoint's key, instead of a generated one.
- LORA_LAB_CACHE (~/.cache/lora_lab): where embedded models are built.
- LORA_LAB_MAX_UPLOAD_MB (20): the largest dataset file the app reads, in MB.
- LORA_LAB_DEBUG (unset): when set, model loads print where from and how long they took.

Training:
- LORA_LAB_BACKEND (unset): `unsloth` or `transformers` forces that training backend (DPO runs on transformers
  unless it says `unsloth`).
- LORA_LAB_PREWARM (on with a CUDA GPU, else off): 1/0 keeps a worker with its libraries imported, or not.
- LORA_LAB_OWNER (set by the CLI in its worker's environment): the process whose end ends the worker.

The chat:
- LORA_LAB_CHAT_UPDATE_S (0.12): the least seconds between two updates of the Chat tab's answers on the page.
- LORA_LAB_CHAT_BASES (1 on CUDA, 2 elsewhere): how many base models stay loaded at once.
- LORA_LAB_CHAT_ADAPTERS (8): how many adapters stay attached to a base at once.
- LORA_LAB_CHAT_RANK_BUCKET (64 on CUDA, 1 elsewhere): stacked LoRA rank columns are allocated in multiples of it.
- LORA_LAB_CHAT_FUSE (1): 0 has each LoRA layer run its own matmuls (no shared q/k/v and gate/up ones).
- LORA_LAB_CHAT_STEP (layers-graph): how a CUDA decoding step runs (lora_demo/chat/decode.py's STEP_MODES).
- LORA_LAB_CHAT_GATHER_MS (15): how long a batch waits after its first request for others sent at the same time.

Read by the tests only: LORA_LAB_SCREENSHOTS (1: the browser tests save screenshots), LORA_LAB_GPU_MODEL (the
model folder of the GPU tests). LORA_LAB_SHARED is no longer read.
"""

from __future__ import annotations

import os
from pathlib import Path

OWNER = "LORA_LAB_OWNER"  # (a name only: the Runner writes it into a worker's environment, the worker reads it)


def _text(name: str) -> str:
    return os.environ.get(name, "").strip()


def _positive_int(name: str) -> int | None:
    v = _text(name)
    return int(v) if v.isdigit() and int(v) > 0 else None


# --- the app and the CLI ---
def auth() -> str | None:
    """LORA_LAB_AUTH as given (None when unset)."""
    return os.environ.get("LORA_LAB_AUTH")


def api_key() -> str:
    """LORA_LAB_API_KEY, stripped ("" when unset)."""
    return _text("LORA_LAB_API_KEY")


def cache() -> Path:
    """LORA_LAB_CACHE, else ~/.cache/lora_lab."""
    return Path(os.environ.get("LORA_LAB_CACHE") or Path.home() / ".cache" / "lora_lab")


def max_upload_mb() -> float:
    """LORA_LAB_MAX_UPLOAD_MB, default 20."""
    return float(os.environ.get("LORA_LAB_MAX_UPLOAD_MB", "20"))


def debug() -> bool:
    """Whether LORA_LAB_DEBUG is set (to anything but "")."""
    return bool(os.environ.get("LORA_LAB_DEBUG"))


# --- training ---
def backend() -> str:
    """LORA_LAB_BACKEND, stripped and lower-cased ("" when unset; the callers accept unsloth and transformers)."""
    return _text("LORA_LAB_BACKEND").lower()


def prewarm(default: bool) -> bool:
    """LORA_LAB_PREWARM: off for 0/false/no/off, on for anything else, `default` when unset."""
    v = _text("LORA_LAB_PREWARM").lower()
    return default if not v else v not in ("0", "false", "no", "off")


# --- the chat ---
def chat_update_s() -> float:
    """LORA_LAB_CHAT_UPDATE_S, default 0.12."""
    return float(os.environ.get("LORA_LAB_CHAT_UPDATE_S", "0.12"))


def chat_bases() -> int | None:
    """LORA_LAB_CHAT_BASES when a positive integer, else None (the pool decides by device)."""
    return _positive_int("LORA_LAB_CHAT_BASES")


def chat_adapters() -> int:
    """LORA_LAB_CHAT_ADAPTERS when an integer, else 8."""
    v = _text("LORA_LAB_CHAT_ADAPTERS")
    return int(v) if v.isdigit() else 8


def chat_rank_bucket() -> int | None:
    """LORA_LAB_CHAT_RANK_BUCKET when a positive integer, else None (the engine decides by device)."""
    return _positive_int("LORA_LAB_CHAT_RANK_BUCKET")


def chat_fuse() -> bool:
    """LORA_LAB_CHAT_FUSE: False only for "0"."""
    return os.environ.get("LORA_LAB_CHAT_FUSE", "1").strip() != "0"


def chat_step() -> str:
    """LORA_LAB_CHAT_STEP, stripped ("" when unset: the decoder's default)."""
    return _text("LORA_LAB_CHAT_STEP")


def chat_gather_ms() -> float:
    """LORA_LAB_CHAT_GATHER_MS, default 15."""
    return float(os.environ.get("LORA_LAB_CHAT_GATHER_MS", "15"))
