"""Decode speed of the side-by-side chat: our one-batch mode against plain PEFT usage, in one run.

    python bench/bench_chat.py            # CPU: SmolLM2-135M + an r=16 all-linear adapter
    python bench/bench_chat.py --gpu      # CUDA: the Qwen3-1.7B architecture (random bf16 weights) + r=16 adapter

Modes (greedy, fixed length, same prompt):
- sequential: the plain-library way: base inside `disable_adapter()`, then the adapter (two generate calls);
- batch: both sides in ONE generate with per-row adapters (adapter_names=["__base__", "default"]);
- batch+static (CUDA): the same with a static KV cache, which lets transformers compile the decode step;
  the first call includes compilation and is reported separately.
Prints tokens/s per side and the wall time until both answers are complete; `--json` ends with one JSON line
of the same figures (per variant: wall_s, speedup, base/tuned tok_per_s, ttft_ms, or error).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def random_adapter(model_id: str, out: Path) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model

    from lora_demo.models import load_model
    from lora_demo.train.settings import ALL_LINEAR

    lm = load_model(model_id, dtype="bf16" if torch.cuda.is_available() else "fp32")
    pm = get_peft_model(lm.model, LoraConfig(r=16, lora_alpha=16, target_modules=ALL_LINEAR))
    torch.manual_seed(0)
    for n, p in pm.named_parameters():
        if "lora_B" in n:
            p.data.normal_(0, 0.01)
    pm.save_pretrained(out)
    cfg = json.loads((out / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = model_id
    (out / "adapter_config.json").write_text(json.dumps(cfg))
    return out


def timed(engine, prompt: str, n: int, mode: str) -> tuple[float, dict]:
    from lora_demo.chat.engine import GenSettings

    gen = GenSettings(max_new_tokens=n, min_new_tokens=n, greedy=True, repetition_penalty=1.0)
    t0 = time.perf_counter()
    res = engine.answer_pair(prompt, gen, mode=mode)
    return time.perf_counter() - t0, res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--model", help="model id/folder (default: smollm2 on CPU, a random Qwen3-1.7B on GPU)")
    ap.add_argument("--tokens", type=int, default=None, help="new tokens a side (default: 64 on CPU, 256 on GPU)")
    ap.add_argument("--json", action="store_true", help="end with one JSON line of all figures")
    args = ap.parse_args()
    from lora_demo.chat.engine import ChatEngine

    tmp = Path(tempfile.mkdtemp())
    if args.gpu:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from test_gpu import build_random_qwen3

        model = args.model or str(build_random_qwen3(Path("/tmp/qwen3-1.7b")))
    else:
        model = args.model or "smollm2-135m-instruct"
    n = args.tokens or (256 if args.gpu else 64)
    adapter = random_adapter(model, tmp / "adapter")
    engine = ChatEngine()
    list(engine.load(model, str(adapter)))
    prompt = "Explain in detail why low-rank adaptation works for fine-tuning large language models."
    print(f"{model} on {engine.device}, greedy, {n} new tokens a side")
    result = {"model": model, "device": engine.device, "greedy": True, "new_tokens_per_side": n, "adapter_r": 16,
              "speedup_vs": None, "variants": {}}  # fmt: skip
    timed(engine, "Hi", 4, "batch")  # warm-up of the eager path
    base_wall = None

    def report(key, label, mode, text=prompt):
        nonlocal base_wall
        fig = result["variants"][key] = {"label": label, "mode": mode}
        try:
            wall, res = timed(engine, text, n, mode)
        except Exception as e:  # noqa: BLE001 - a failing variant is a result too
            fig["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:150] if str(e) else ''}"
            print(f"  {label:40s} FAILED: {fig['error']}", flush=True)
            return
        if base_wall is None:
            result["speedup_vs"] = key  # the variant whose wall time the speed-ups divide
        base_wall = base_wall or wall
        b, t = res["base_stats"], res["tuned_stats"]
        fig.update(wall_s=round(wall, 4), speedup=round(base_wall / wall, 4), base_tok_per_s=b["tokens_per_s"],
                   tuned_tok_per_s=t["tokens_per_s"], ttft_ms=b["ttft_s"] * 1000)  # fmt: skip
        print(f"  {label:40s} both answers in {wall:6.2f} s ({base_wall / wall:4.2f}x)  base {b['tokens_per_s'] or 0:7.1f} "
              f"tok/s  tuned {t['tokens_per_s'] or 0:7.1f} tok/s  ttft {b['ttft_s'] * 1000:6.0f} ms", flush=True)  # fmt: skip

    report("sequential", "sequential (disable_adapter, then on)", "sequential")
    report("batch", "batch (one generate, adapter_names)", "batch")
    if engine.device == "cuda":
        engine.static_cache = True
        for cmode in ("default",):
            engine.compile_mode = cmode
            report(f"batch_static_{cmode}_1st", f"batch+static [{cmode}] 1st (compiles)", "batch")
            report(f"batch_static_{cmode}_2nd", f"batch+static [{cmode}] 2nd", "batch")
            report(f"batch_static_{cmode}_new_prompt", f"batch+static [{cmode}] new prompt", "batch",
                   prompt + " Use examples.")  # fmt: skip
            report(f"sequential_static_{cmode}", f"sequential+static [{cmode}]", "sequential")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
