"""What the browser tests share: where Chromium and the artifacts are, a free port, reading a chat answer."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


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


def start_app(root: Path, *flags: str):
    """`python app.py --model qwen3-tiny` with its runs/ and data/ in root (and flags), on a free port, as a user
    starts it; returns (the process, its URL) once it answers."""
    port = free_port()
    log = open(root / "app.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "app.py",
            "--port",
            str(port),
            "--model",
            "qwen3-tiny",
            "--runs-dir",
            str(root / "runs"),
            "--data-dir",
            str(root / "data"),
            *flags,
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError((root / "app.log").read_text()) from None
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("the app did not start in 120 s")


def new_blind_pair(page, button: str = "#blind-ask", timeout_s: float = 120) -> None:
    """Press Ask blind (or Vote on the run's rows) and wait for the NEW pair: the section first says it is dealing
    one (the last pair's answers cleared), which a MutationObserver catches however fast the answers come."""
    page.evaluate("""() => {
      window.__dealt = false;
      const box = document.querySelector('#blind-status');
      new MutationObserver((_, obs) => {
        if (box.innerText.includes('Dealing')) { window.__dealt = true; obs.disconnect(); }
      }).observe(box, {childList: true, subtree: true, characterData: true});
    }""")
    page.locator(button).click()
    page.wait_for_function(
        "() => window.__dealt && document.querySelector('#blind-status').innerText.includes('Which answer is better')",
        timeout=timeout_s * 1000,
    )
