"""What the browser tests share: where Chromium and the artifacts are, a free port, reading a chat answer."""

from __future__ import annotations

import socket
import time
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answer(page, elem_id: str, timeout_s: float = 30) -> str:
    """The last message's text once rendered (the Chatbot first shows a "Loading content" placeholder)."""
    deadline = time.time() + timeout_s
    while True:
        text = page.locator(f"#{elem_id} .message").last.inner_text().strip()
        if (text and "Loading content" not in text) or time.time() > deadline:
            return text
        page.wait_for_timeout(200)
