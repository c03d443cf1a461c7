"""What the page shows: the Chat tab's tokens/s in headless Chromium against the engine's own figure, one run.

    python bench/bench_chat_page.py                 # SmolLM2-135M + a random r=16 adapter, 64 tokens, greedy
    python bench/bench_chat_page.py --update-s 0    # the page updated on every chunk (the old behaviour)

Starts the real app (`python app.py --port P`, fresh runs/data folders holding the adapter), loads the adapter in
the Chat tab, sends one prompt, and records in the page (every 20 ms) when each chat's text changes. Page tok/s of
a side = (tokens - 1) / (last change - first text), as the engine counts (tokens - 1) / (end - first token); the
engine's figure is the one the tab's stats line prints. `--json` ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

RECORDER = """() => {
  window.__chatLog = [];
  const text = (id) => { const m = document.querySelectorAll('#' + id + ' .message'); return m.length ?
      m[m.length - 1].innerText.trim() : ''; };
  let last = ['', ''];
  window.__chatTimer = setInterval(() => {
    const now = [text('chat-base'), text('chat-tuned')];
    if (now[0] !== last[0] || now[1] !== last[1]) {
      window.__chatLog.push({t: performance.now(), b: now[0].length, u: now[1].length});
      last = now;
    }
  }, 20);
  return performance.now();
}"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _side_rate(log: list[dict], key: str, tokens: int, t_send: float) -> tuple[float | None, float | None]:
    """(page tok/s, page time to first text) of one side from the recorded changes."""
    shown = [e for e in log if e[key] > 0 and not _placeholder(e, key)]
    if len(shown) < 2 or tokens < 2:
        return None, (shown[0]["t"] - t_send) / 1000 if shown else None
    first, last = shown[0]["t"], max(e["t"] for e in shown)
    return (tokens - 1) / max((last - first) / 1000, 1e-9), (first - t_send) / 1000


def _placeholder(e: dict, key: str) -> bool:
    return e[key] <= 1  # "…" while a side waits for its first token


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--tokens", type=int, default=64, help="max new tokens a side (greedy)")
    ap.add_argument(
        "--update-s",
        type=float,
        default=None,
        help="seconds between page updates (the app's LORA_LAB_CHAT_UPDATE_S; default: the app's 0.12)",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from bench_chat import random_adapter
    from playwright.sync_api import sync_playwright

    root = Path(tempfile.mkdtemp(prefix="chat-page-"))
    (root / "runs").mkdir()
    (root / "data").mkdir()
    adapter = random_adapter(args.model, root / "runs" / "page-bench-adapter")
    port = _free_port()
    env = dict(os.environ)
    if args.update_s is not None:
        env["LORA_LAB_CHAT_UPDATE_S"] = str(args.update_s)
    log_file = open(root / "app.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "app.py",
            "--port",
            str(port),
            "--runs-dir",
            str(root / "runs"),
            "--data-dir",
            str(root / "data"),
        ],
        cwd=ROOT,
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.time() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError((root / "app.log").read_text()[-2000:]) from None
                time.sleep(0.5)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, locale="en-US")
            page.goto(f"http://127.0.0.1:{port}/")
            page.get_by_role("tab", name="System").wait_for(timeout=60_000)
            page.get_by_role("tab", name="Chat", exact=True).click()
            page.wait_for_timeout(500)
            box = page.locator("#chat-adapter input")
            box.fill(str(adapter))
            box.press("Enter")
            page.locator("#chat-load").click()
            page.locator("#chat-status").get_by_text(re.compile("Ready in")).wait_for(timeout=300_000)
            status = page.locator("#chat-status").inner_text()
            page.get_by_text("Prompt and generation settings").click()
            page.get_by_label("greedy (deterministic)").check()
            page.get_by_role("spinbutton", name="max new tokens").fill(str(args.tokens))
            page.get_by_role("spinbutton", name="max new tokens").press("Enter")
            page.locator("#chat-input textarea").fill(
                "Write a long, detailed essay on the history of computing, from the abacus to modern GPUs."
            )
            t_send = page.evaluate(RECORDER)
            page.locator("#chat-send").click()
            for side in ("base", "tuned"):
                page.locator(f"#chat-{side}-stats").get_by_text("tok/s").wait_for(timeout=300_000)
            seen, still = None, time.time()  # the answers are complete when the stats stop changing for 2 s
            while time.time() - still < 2:
                now = [page.locator(f"#chat-{s}-stats").inner_text() for s in ("base", "tuned")]
                if now != seen:
                    seen, still = now, time.time()
                page.wait_for_timeout(100)
            log = page.evaluate("() => { clearInterval(window.__chatTimer); return window.__chatLog; }")
            stats = [page.locator(f"#chat-{s}-stats").inner_text() for s in ("base", "tuned")]
            answers = [page.locator(f"#chat-{s} .message").last.inner_text() for s in ("base", "tuned")]
            browser.close()
    finally:
        proc.terminate()
        proc.wait(30)
    result = {
        "model": args.model,
        "max_new_tokens": args.tokens,
        "update_s": args.update_s,
        "page_updates": len(log),
        "status": status.strip().splitlines()[-1][:300],
    }
    for side, key, line in (("base", "b", stats[0]), ("tuned", "u", stats[1])):
        m = re.search(r"(\d+) tokens · ([\d.]+) tok/s · first token (\d+) ms", line)
        tokens, engine_tps, engine_ttft = (int(m[1]), float(m[2]), int(m[3]) / 1000) if m else (0, None, None)
        page_tps, page_ttft = _side_rate(log, key, tokens, t_send)
        result[side] = {
            "tokens": tokens,
            "engine_tok_s": engine_tps,
            "page_tok_s": page_tps,
            "engine_ttft_s": engine_ttft,
            "page_first_text_s": page_ttft,
            "page_over_engine": page_tps / engine_tps if page_tps and engine_tps else None,
        }
        print(
            f"{side:5s}: {tokens} tokens; engine {engine_tps} tok/s; page {page_tps or 0:.1f} tok/s "
            f"({result[side]['page_over_engine'] or 0:.2f}x); text on the page {page_ttft or 0:.2f} s after Send"
        )
    print(f"page updates seen: {len(log)}; base answer: {answers[0][:120]!r}")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
