"""The chat's base models: each loaded once (a ChatEngine), shared by every visitor and request that names it.

A request names (base, adapter); the pool loads the base if it is not loaded (least recently used bases are unloaded
beyond the budget: LORA_LAB_CHAT_BASES, 1 on CUDA, 2 elsewhere, never one that is generating) and attaches the
adapter to it, yielding the stages. Nothing a request does changes what another request gets: each names its own
adapter, and a base is only unloaded for another base.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator

from lora_demo import env
from lora_demo.chat.engine import ChatEngine
from lora_demo.errors import InputError
from lora_demo.i18n import msg


def _budget() -> int:
    if n := env.chat_bases():
        return n
    try:
        import torch

        return 1 if torch.cuda.is_available() else 2
    except ImportError:
        return 2


class ChatPool:
    """Base models by id, each a ChatEngine with its attached adapters."""

    def __init__(self, max_bases: int | None = None):
        self.max_bases = max_bases or _budget()
        self.engines: OrderedDict[str, ChatEngine] = OrderedDict()
        self.lock = threading.Lock()  # guards the dict (loading itself runs outside it, under a per-base lock)
        self.loading: dict[str, threading.Lock] = {}

    def get(self, model_id: str) -> ChatEngine | None:
        """The loaded engine of a base, or None."""
        with self.lock:
            engine = self.engines.get(model_id)
            if engine is not None:
                self.engines.move_to_end(model_id)
            return engine if engine is not None and engine.model is not None else None

    def loaded(self) -> list[ChatEngine]:
        with self.lock:
            return [e for e in self.engines.values() if e.model is not None]

    def ensure(self, model_id: str, adapter_dir: str | None = None) -> Iterator[str]:
        """Have `model_id` loaded and `adapter_dir` attached to it, yielding the stages (nothing when both already
        are). Two visitors asking for the same base at once load it once."""
        with self.lock:
            gate = self.loading.setdefault(model_id, threading.Lock())
        with gate:
            engine = self.get(model_id)
            if engine is None:
                engine = self._slot(model_id)
                yield from engine.load(model_id, adapter_dir)
                return
        if adapter_dir:
            yield from engine.attach(adapter_dir)

    def _slot(self, model_id: str) -> ChatEngine:
        """A fresh engine for a base, unloading the least recently used idle bases beyond the budget."""
        with self.lock:
            engine = self.engines.pop(model_id, None) or ChatEngine()
            while len([e for e in self.engines.values() if e.model is not None]) >= self.max_bases:
                idle = next((k for k, e in self.engines.items() if e.model is not None and not e.lock.locked()), None)
                if idle is None:
                    raise InputError(
                        msg(
                            "Every loaded base model is answering someone now, and this machine holds "
                            "{n} at a time: try again in a moment.",
                            n=self.max_bases,
                        )
                    )
                old = self.engines.pop(idle)
                with old.lock:
                    old.unload()
            self.engines[model_id] = engine
            return engine

    def release_for_training(self) -> None:
        """Before training on CUDA, free the GPU memory the chat's models hold."""
        for engine in self.loaded():
            engine.release_for_training()

    def unload(self) -> None:
        for engine in self.loaded():
            with engine.lock:
                engine.unload()
