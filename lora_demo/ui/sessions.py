"""The one kind of store for what the server keeps per browser session (its language, its last error, what its panels
show, its Stop): bounded, so visitors who never come back cannot grow it, and safe to use from Gradio's threads.

Here in ui/ because only the tabs keep per-session state (and ui/ imports from the package only the engine, i18n and
ui/ itself)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any

from cachetools import FIFOCache


class SessionStore:
    """A thread-safe map of at most `maxsize` keys (one per session, or per session and status line). Writing a key
    makes it the newest; when a new key would exceed `maxsize`, the key written longest ago is dropped. Reading does
    not count as use: an idle visitor's entry ages out even while other code reads it (cachetools' FIFOCache, which
    moves a key to the end when it is set again)."""

    def __init__(self, maxsize: int):
        self._items: FIFOCache = FIFOCache(maxsize)
        self._lock = threading.Lock()

    @property
    def maxsize(self) -> int:
        return int(self._items.maxsize)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def get(self, key: Hashable, default: Any = None) -> Any:
        with self._lock:
            return self._items.get(key, default)

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._items[key] = value

    def pop(self, key: Hashable, default: Any = None) -> Any:
        with self._lock:
            return self._items.pop(key, default)

    def update(self, key: Hashable, change: Callable[[Any], Any], default: Any = None) -> Any:
        """Write change(the key's value, or `default`) under one lock (no concurrent write is lost); returns it."""
        with self._lock:
            value = change(self._items.get(key, default))
            self._items[key] = value
            return value
