"""Several clients on the OpenAI-compatible endpoint at once: aggregate tokens/s for 1, 2 and 4 clients.

    python bench/bench_openai.py [--json] [--tokens 48] [--model smollm2-135m-instruct]

The real app (build_app + launch, as app.py) with a random r=16 adapter on the base (and one more for every client
beyond the first, so clients name different adapters), the official `openai` client in threads, greedy, a fixed
number of new tokens (min = max). For each client count N: N requests at once (they wait together and share one
batch: chat/batcher.py) against the same N requests one after another (the serialized baseline, what a server that
decodes one request at a time gives), aggregate tok/s = N x tokens / wall time. `--json` ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PROMPT = "Explain in detail why low-rank adaptation works for fine-tuning large language models."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--clients", default="1,2,4")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    import openai

    from bench.bench_chat import random_adapter
    from lora_demo.guard import server_options
    from lora_demo.ui import AppSettings, build_app

    root = Path(tempfile.mkdtemp())
    counts = [int(c) for c in args.clients.split(",")]
    names = [f"adapter-{k}" for k in range(max(counts))]
    for k, name in enumerate(names):
        random_adapter(args.model, root / "runs" / name, r=16, seed=k)
    demo = build_app(AppSettings(runs_dir=root / "runs", data_dir=root / "data"))
    demo.queue(default_concurrency_limit=None)
    demo.launch(
        prevent_thread_lock=True,
        server_name="127.0.0.1",
        server_port=None,
        ssr_mode=False,
        quiet=True,
        **server_options(root / "runs"),
    )
    client = openai.OpenAI(base_url=demo.local_url.rstrip("/") + "/v1", api_key="x", max_retries=0, timeout=600)
    extra = {"min_tokens": args.tokens}  # fixed length (the endpoint's extension; the page's min_new_tokens)

    def ask(name: str) -> int:
        r = client.chat.completions.create(
            model=name,
            temperature=0,
            max_tokens=args.tokens,
            extra_body=extra,
            messages=[{"role": "user", "content": PROMPT}],
        )
        return r.usage.completion_tokens

    for name in names:  # load the base, attach every adapter, warm each batch size once
        ask(name)
    lab = demo.lab
    out = {"model": args.model, "tokens": args.tokens, "clients": {}}
    for n in counts:
        with ThreadPoolExecutor(n) as pool:
            ask_all = list(pool.map(ask, names[:n]))  # warm this many rows
            t0 = time.perf_counter()
            batches0 = sum(e.batcher.batches for e in lab.chat.loaded())
            together = list(pool.map(ask, names[:n]))
            wall = time.perf_counter() - t0
            batches = sum(e.batcher.batches for e in lab.chat.loaded()) - batches0
        t1 = time.perf_counter()
        alone = [ask(name) for name in names[:n]]
        wall_seq = time.perf_counter() - t1
        out["clients"][str(n)] = {
            "aggregate_tok_s": round(sum(together) / wall, 1),
            "batches": batches,
            "one_after_another_tok_s": round(sum(alone) / wall_seq, 1),
            "speedup": round((sum(together) / wall) / (sum(alone) / wall_seq), 2),
        }
        del ask_all
        c = out["clients"][str(n)]
        print(
            f"  {n} client(s) at once: {c['aggregate_tok_s']} tok/s in all ({batches} batches); one after another "
            f"{c['one_after_another_tok_s']} tok/s: {c['speedup']}x",
            flush=True,
        )
    demo.close()
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
