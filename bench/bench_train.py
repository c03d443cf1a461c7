"""Training speed and memory: LoRA Lab's choices against the plain-library baseline, in one run.

    python bench/bench_train.py              # CPU: thread/precision policy on qwen3-tiny and SmolLM2-135M
    python bench/bench_train.py --gpu MODEL  # CUDA: the engine with Unsloth vs transformers+bitsandbytes+PEFT+TRL

CPU: a plain LoRA training loop (PEFT, AdamW, 4-row batches of the persona example) timed per step for 1 and 2
threads, fp32 and bf16 autocast. The baseline is what a plain script does: fp32 with torch's default threads.
GPU: the same engine run twice on long synthetic rows (Qwen3-1.7B architecture, 4 bit), once per backend
(LORA_LAB_BACKEND), read back from the runs' progress.jsonl: s/step (median after the first 3 steps, which
include Unsloth's compile), tokens/s and peak GPU memory.
`--json` ends with one JSON line of all figures (CPU: s_per_step per model/threads/precision and the policy's
speed-up; GPU: per backend s_per_step, tok_per_s, gpu_peak_gib, wall_seconds, losses, or an error).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def cpu_loop(model_id: str, threads: int, precision: str, steps: int, seq_len: int) -> float:
    """Median seconds per optimizer step of a plain PEFT LoRA loop."""
    import torch
    from peft import LoraConfig, get_peft_model

    from lora_demo.data import build_example, load_example
    from lora_demo.models import load_model
    from lora_demo.train.settings import ALL_LINEAR

    torch.set_num_threads(threads)
    lm = load_model(model_id)
    model = get_peft_model(lm.model, LoraConfig(r=16, lora_alpha=16, target_modules=ALL_LINEAR))
    model.train()
    rows = load_example("persona")
    exs = [build_example(r, lm.tokenizer, "alpaca", seq_len) for r in rows]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    times = []
    for i in range(steps):
        batch = exs[(4 * i) % len(exs) : (4 * i) % len(exs) + 4] or exs[:4]
        n = max(len(e.input_ids) for e in batch)
        pad = lm.tokenizer.pad_token_id
        ids = torch.tensor([e.input_ids + [pad] * (n - len(e.input_ids)) for e in batch])
        labels = torch.tensor([e.labels + [-100] * (n - len(e.labels)) for e in batch])
        mask = (torch.arange(n)[None, :] < torch.tensor([len(e.input_ids) for e in batch])[:, None]).long()
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[2:])


def bench_cpu(steps: int) -> dict:
    import torch

    from lora_demo.device import choose_threads, detect

    default_threads = torch.get_num_threads()
    print(f"CPU: {os.cpu_count()} cores, torch {torch.__version__}, default threads {default_threads}, "
          f"policy precision {detect().precision}")  # fmt: skip
    out = {"device": "cpu", "cores": os.cpu_count(), "torch": torch.__version__, "default_threads": default_threads,
           "policy_precision": detect().precision, "steps": steps, "batch": 4, "seq_len": 128, "dataset": "persona",
           "lora_r": 16, "models": {}}  # fmt: skip
    for model_id, work in (("qwen3-tiny", 10_000_000), ("smollm2-135m-instruct", 106_000_000)):
        policy = choose_threads(work, 4 * 128)
        print(f"policy for {model_id}: {policy} thread(s), {detect(work, 4 * 128).precision}")
        print(f"\n{model_id} (policy: {policy} thread(s)), s/step, batch 4, persona rows:")
        fig = out["models"][model_id] = {"policy_threads": policy, "policy_precision": detect(work, 4 * 128).precision,
                                         "variants": []}  # fmt: skip
        results = {}
        for threads in sorted({1, default_threads}):
            for precision in ("fp32", "bf16"):
                results[(threads, precision)] = cpu_loop(model_id, threads, precision, steps, 128)
                fig["variants"].append({"threads": threads, "precision": precision,
                                        "s_per_step": results[(threads, precision)]})  # fmt: skip
                print(f"  threads={threads} {precision}: {results[(threads, precision)]:.3f} s/step", flush=True)
        base = results[(default_threads, "fp32")]
        ours = results[(policy, detect(work, 4 * 128).precision)]
        fig.update(baseline_threads=default_threads, baseline_precision="fp32", baseline_s_per_step=base,
                   policy_s_per_step=ours, speedup=base / ours)  # fmt: skip
        print(f"  baseline (fp32, {default_threads} threads) {base:.3f} s/step -> policy {ours:.3f} s/step: "
              f"{base / ours:.2f}x")  # fmt: skip
    return out


def synthetic_rows(n: int, words: int) -> list[dict]:
    import random

    rng = random.Random(0)
    vocab = [
        "low",
        "rank",
        "adaptation",
        "matrix",
        "singular",
        "value",
        "energy",
        "update",
        "frozen",
        "weight",
        "factor",
        "training",
    ]
    return [{"instruction": " ".join(rng.choice(vocab) for _ in range(words // 4)), "input": "",
             "output": " ".join(rng.choice(vocab) for _ in range(3 * words // 4))} for _ in range(n)]  # fmt: skip


def bench_gpu(model: str, steps: int, batch: int, words: int, backends=("unsloth", "transformers"), processes=(1,)):
    """Each backend × number of processes (DDP over that many GPUs: transformers only). tok/s counts the tokens of
    all processes (the Trainer gathers them), so scaling = tok/s with N processes / tok/s with 1."""
    from lora_demo.train.runner import Runner
    from lora_demo.train.runs import read_progress
    from lora_demo.train.settings import TrainSettings

    tmp = Path(tempfile.mkdtemp())
    print(f"GPU: {model}, {steps} steps, micro batch {batch} per GPU, ~{words} words a row, 4-bit, r=16 all linear")
    out = {"device": "cuda", "model": model, "steps": steps, "batch": batch, "words_per_row": words,
           "load_in_4bit": True, "lora_r": 16, "max_seq_length": 2048, "optimizer": "adamw_8bit", "backends": {}}  # fmt: skip
    for backend, n in [(b, n) for b in backends for n in processes if b == "transformers" or n == 1]:
        key = backend if n == 1 else f"{backend}_x{n}"
        os.environ["LORA_LAB_BACKEND"] = backend
        s = TrainSettings(model=model, dataset="synthetic", template="chat", max_seq_length=2048, load_in_4bit=True,
                          micro_batch_size=batch, gradient_accumulation_steps=1, max_steps=steps, warmup=1,
                          learning_rate=2e-4, optimizer="adamw_8bit", num_processes=n)  # fmt: skip
        runner = Runner(tmp / key, tmp / "data")
        t0 = time.time()
        run_dir = runner.start(s, synthetic_rows(batch * steps * n, words))
        st = runner.wait(900)
        logs = [p for p in read_progress(run_dir) if p.get("type") == "log"]
        if st.get("status") != "completed":
            out["backends"][key] = {"status": st.get("status"), "error": f"{st.get('status')} {st.get('error')}"}
            print(f"  {key}: {st.get('status')} {st.get('error')}\n{(run_dir / 'train.log').read_text()[-3000:]}")
            continue
        per = [b["time"] - a["time"] for a, b in zip(logs, logs[1:], strict=False)][3:]
        tps = [p["tokens_per_s"] for p in logs[4:] if "tokens_per_s" in p]
        out["backends"][key] = {"status": "completed", "processes": n, "s_per_step": statistics.median(per),
                                    "tok_per_s": statistics.median(tps),
                                    "gpu_peak_gib": max(p["gpu_peak_gb"] for p in logs),
                                    "wall_seconds": time.time() - t0, "loss_first": logs[0]["loss"],
                                    "loss_last": logs[-1]["loss"]}  # fmt: skip
        print(f"  {key:16s}: {statistics.median(per):.3f} s/step, {statistics.median(tps):,.0f} tok/s, peak GPU "
              f"{max(p['gpu_peak_gb'] for p in logs):.2f} GiB, wall {time.time() - t0:.0f} s (load+compile incl.), "
              f"loss {logs[0]['loss']:.3f} -> {logs[-1]['loss']:.3f}", flush=True)  # fmt: skip
    one, two = out["backends"].get("transformers", {}), out["backends"].get("transformers_x2", {})
    if one.get("tok_per_s") and two.get("tok_per_s"):
        out["ddp_scaling_x2"] = round(two["tok_per_s"] / one["tok_per_s"], 3)
        print(f"  DDP scaling, 2 GPUs vs 1 (transformers backend): {out['ddp_scaling_x2']:.2f}x")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpu", metavar="MODEL", help="model folder or id for the CUDA comparison")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps (default: 12 on CPU, 20 on GPU)")
    ap.add_argument("--batch", type=int, default=4, help="micro batch (GPU; the CPU loop always uses 4)")
    ap.add_argument("--words", type=int, default=700, help="words per synthetic row (GPU)")
    ap.add_argument("--backends", default="unsloth,transformers", help="GPU: comma-separated backends")
    ap.add_argument("--processes", default="1", help="GPU: comma-separated process counts, e.g. 1,2 (DDP)")
    ap.add_argument("--json", action="store_true", help="end with one JSON line of all figures")
    args = ap.parse_args()
    if args.gpu:
        result = bench_gpu(args.gpu, args.steps or 20, args.batch, args.words, args.backends.split(","),
                           [int(n) for n in args.processes.split(",")])  # fmt: skip
    else:
        result = bench_cpu(args.steps or 12)
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
