"""Training speed and memory: LoRA Lab's engine against the plain libraries, in one run.

    python bench/bench_train.py              # CPU: thread/precision policy on qwen3-tiny and SmolLM2-135M
    python bench/bench_train.py --gpu MODEL  # CUDA: the engine vs raw Unsloth / transformers loops, short rows

CPU: a plain LoRA training loop (PEFT, AdamW, 4-row batches of the persona example) timed per step for 1 and 2
threads, fp32 and bf16 autocast. The baseline is what a plain script does: fp32 with torch's default threads.
GPU (one process tree, the same rows for all; Qwen3-1.7B-shaped MODEL, 4-bit, r=16 on all linear, adamw_8bit):
- long rows, every one 2048 tokens, micro batch 4 × accumulation 1: the engine (Unsloth), the engine
  (transformers + bitsandbytes + PEFT + TRL), a raw Unsloth loop and a raw transformers + bitsandbytes + PEFT loop
  (forward, backward, 8-bit AdamW; no Trainer, no data loading) in their own processes;
- Alpaca-like short rows (synthesised offline, 50-500 tokens), effective batch 8: the engine's defaults
  (padding-free, micro batch chosen from free memory) against the seed's configuration (micro batch 1 ×
  accumulation 8, padded, no packing);
- the raw processes also profile the engine's parts: the same model under SFTTrainer with one suspect removed at a
  time (token counting, progress callback, per-step logging, padding choice; TRL's metrics for transformers).
Engine runs go through the Runner with a pre-imported worker (as the app does while settings are edited), so
"start → first step" is what a user waits on a warm app: model load + the first step (Unsloth compiles there).
Each prints tokens/s (pads included), useful tokens/s (pads excluded), peak GPU memory (max allocated),
MFU = tokens/s × 6 × params / 790e12, and the seconds from start to the first step.
--processes 1,2 adds DDP runs of the transformers engine over N GPUs.
`--json` ends with one JSON line of all figures (CPU: s_per_step per model/threads/precision and the policy's
speed-up; GPU: "configs" by name with tok_per_s, useful_tok_per_s, gpu_peak_gib, mfu, start_to_first_step_s, ...,
"ratios" and the raw processes' "profile").
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

import yaml

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
    print(
        f"CPU: {os.cpu_count()} cores, torch {torch.__version__}, default threads {default_threads}, "
        f"policy precision {detect().precision}"
    )
    out = {
        "device": "cpu",
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "default_threads": default_threads,
        "policy_precision": detect().precision,
        "steps": steps,
        "batch": 4,
        "seq_len": 128,
        "dataset": "persona",
        "lora_r": 16,
        "models": {},
    }
    for model_id, work in (("qwen3-tiny", 10_000_000), ("smollm2-135m-instruct", 106_000_000)):
        policy = choose_threads(work, 4 * 128)
        print(f"policy for {model_id}: {policy} thread(s), {detect(work, 4 * 128).precision}")
        print(f"\n{model_id} (policy: {policy} thread(s)), s/step, batch 4, persona rows:")
        fig = out["models"][model_id] = {
            "policy_threads": policy,
            "policy_precision": detect(work, 4 * 128).precision,
            "variants": [],
        }
        results = {}
        for threads in sorted({1, default_threads}):
            for precision in ("fp32", "bf16"):
                results[(threads, precision)] = cpu_loop(model_id, threads, precision, steps, 128)
                fig["variants"].append(
                    {"threads": threads, "precision": precision, "s_per_step": results[(threads, precision)]}
                )
                print(f"  threads={threads} {precision}: {results[(threads, precision)]:.3f} s/step", flush=True)
        base = results[(default_threads, "fp32")]
        ours = results[(policy, detect(work, 4 * 128).precision)]
        fig.update(
            baseline_threads=default_threads,
            baseline_precision="fp32",
            baseline_s_per_step=base,
            policy_s_per_step=ours,
            speedup=base / ours,
        )
        print(
            f"  baseline (fp32, {default_threads} threads) {base:.3f} s/step -> policy {ours:.3f} s/step: "
            f"{base / ours:.2f}x"
        )
    return out


_WORD_TEXT = (
    "the of and to in is that for it as with was on be by this are or from at an have not but which they "
    "model data train rank matrix value answer question explain write list short example step because when "
    "people city water history simple story describe three reasons language learning weight update number "
    "between first second important result using each other about would could should make made time year "
    "work world small large quickly carefully review summary code function return error table recipe plan "
    "health travel music science energy market letter email poem translate sentence paragraph idea"
)
WORDS = _WORD_TEXT.split()
PEAK_FLOPS = 790e12  # the H200's dense bf16 peak used for MFU, as in ../shared/gpu/README.md


def alpaca_like_rows(n: int, tok, seed: int = 0, lo: int = 50, hi: int = 500) -> list[dict]:
    """Rows shaped like Alpaca's: an instruction, sometimes an input, an answer; total lengths log-uniform in
    [lo, hi] tokens (with the chat template), synthesised offline from common words."""
    import math
    import random

    from lora_demo.data import build_example

    rng = random.Random(seed)
    rows = []
    while len(rows) < n:
        target = int(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        instr = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 30))).capitalize() + "?"
        inp = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 60))) if rng.random() < 0.4 else ""
        row = {"instruction": instr, "input": inp, "output": ""}
        base = len(build_example(row, tok, "chat", None).input_ids)
        words = max(3, int((target - base) / 1.15))
        row["output"] = " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."
        rows.append(row)
    return rows


def long_rows(n: int, seed: int = 1) -> list[dict]:
    """Rows longer than 2048 tokens, cut to max_seq_length 2048 by the template: every row is 2048 tokens."""
    import random

    rng = random.Random(seed)
    return [
        {
            "instruction": " ".join(rng.choice(WORDS) for _ in range(40)),
            "input": "",
            "output": " ".join(rng.choice(WORDS) for _ in range(2600)),
        }
        for _ in range(n)
    ]


def _tok(model: str):
    from transformers import AutoTokenizer

    from lora_demo.models import model_path

    return AutoTokenizer.from_pretrained(model_path(model))


def _batches(rows, tok, micro: int, max_len: int):
    """Padded batches (input ids, attention mask, labels) of the rows, as the engine's seed collator makes them."""
    import torch

    from lora_demo.data import build_example

    exs = [build_example(r, tok, "chat", max_len) for r in rows]
    out = []
    for i in range(0, len(exs) - micro + 1, micro):
        group = exs[i : i + micro]
        n = max(len(e.input_ids) for e in group)
        pad = tok.pad_token_id or 0
        ids = torch.tensor([e.input_ids + [pad] * (n - len(e.input_ids)) for e in group])
        labels = torch.tensor([e.labels + [-100] * (n - len(e.labels)) for e in group])
        mask = torch.tensor([[1] * len(e.input_ids) + [0] * (n - len(e.input_ids)) for e in group])
        out.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return out


def raw_loop(model, batches, steps: int) -> dict:
    """A plain loop: forward with labels, backward, 8-bit AdamW step; bf16 autocast as the Trainer's bf16=True. The
    first step (Unsloth compiles there) is timed apart; then `steps` steps between two synchronisations."""
    import bitsandbytes as bnb
    import torch

    opt = bnb.optim.AdamW8bit([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    model.train()

    def step(b):
        b = {k: v.cuda(non_blocking=True) for k, v in b.items()}
        with torch.autocast("cuda" if torch.cuda.is_available() else "cpu", dtype=torch.bfloat16):
            loss = model(**b).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    t0 = time.perf_counter()
    first_loss = step(batches[0]).item()
    first = time.perf_counter() - t0
    step(batches[1 % len(batches)])
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    useful = computed = 0
    for i in range(steps):
        b = batches[(2 + i) % len(batches)]
        loss = step(b)
        useful += int(b["attention_mask"].sum())
        computed += b["input_ids"].numel()
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return {
        "first_step_s": round(first, 2),
        "s_per_step": dt / steps,
        "tok_per_s": computed / dt,
        "useful_tok_per_s": useful / dt,
        "gpu_peak_gib": torch.cuda.max_memory_allocated() / 2**30,
        "loss_first": first_loss,
        "loss_last": loss.item(),
    }


class _Timer:
    """A TrainerCallback timing optimizer steps [warm, warm + n) between two GPU synchronisations."""

    def __new__(cls, warm: int, n: int):
        import torch
        from transformers import TrainerCallback

        class Timer(TrainerCallback):
            t0 = t1 = None

            def on_step_end(self, args, state, control, **kw):
                if state.global_step in (warm, warm + n):
                    torch.cuda.synchronize()
                    if state.global_step == warm:
                        self.t0 = time.perf_counter()
                    else:
                        self.t1 = time.perf_counter()

        return Timer()


def trainer_variant(backend: str, model, tok, rows, name: str, steps: int, warm: int = 2, **over) -> dict:
    """One SFTTrainer configuration on the given rows (micro batch 4, no accumulation), timed in steady state.
    over: SFTConfig fields, plus callback=True (the engine's ProgressCallback), lean=True (LoRA Lab's metrics),
    counter=True (tokens counted in the collator)."""
    import tempfile

    import torch
    from trl import SFTConfig

    from lora_demo.train.batching import TokenCounter, lean_metrics
    from lora_demo.train.callback import ProgressCallback
    from lora_demo.train.settings import TrainSettings
    from lora_demo.train.worker import build_dataset

    callback, lean, counter = over.pop("callback", False), over.pop("lean", False), over.pop("counter", False)
    s = TrainSettings(model="qwen3-tiny", template="chat", max_seq_length=2048, micro_batch_size=4)
    ds = build_dataset(rows, tok, s)
    run_dir = Path(tempfile.mkdtemp())
    kw = dict(
        output_dir=str(run_dir / "checkpoints"),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=1,
        max_steps=warm + steps,
        learning_rate=2e-4,
        warmup_steps=1,
        optim="adamw_8bit",
        seed=3407,
        logging_steps=1,
        report_to="none",
        bf16=True,
        max_length=2048,
        dataloader_num_workers=0,
        include_num_input_tokens_seen="non_padding",
        disable_tqdm=True,
        logging_first_step=True,
        save_strategy="no",
        eval_strategy="no",
    )
    kw.update(over)
    from trl import SFTTrainer

    cls = lean_metrics(SFTTrainer) if lean else SFTTrainer
    timer = _Timer(warm, steps)
    cbs = [timer] + ([ProgressCallback(run_dir, compiles_first_step=backend == "unsloth")] if callback else [])
    trainer = cls(model=model, args=SFTConfig(**kw), train_dataset=ds, processing_class=tok, callbacks=cbs)
    if counter:
        counter = TokenCounter(trainer.data_collator, trainer)
        counter.install()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - t0
    dt = (timer.t1 - timer.t0) / steps
    out = {
        "name": name,
        "s_per_step": dt,
        "tok_per_s": 4 * 2048 / dt,
        "first_steps_s": total - dt * steps,
        "gpu_peak_gib": torch.cuda.max_memory_allocated() / 2**30,
        "padding_free": bool(getattr(trainer.args, "padding_free", False)),
        "config": {k: str(v) for k, v in over.items()},
    }
    if counter:
        out["collate_ms"] = 1000 * counter.seconds / max(1, counter.batches)
    print(
        f"    {name:55s} {dt:.3f} s/step  {out['tok_per_s']:8,.0f} tok/s  padding-free {out['padding_free']}",
        flush=True,
    )
    return out


def raw_process(backend: str, model_id: str, steps: int, out_file: str, profile: bool) -> None:
    """`--raw unsloth|transformers`: the plain-library loop (and the profile of the engine's trainer parts) in a
    process of its own, writing its figures to out_file."""
    t_import = time.time()
    res: dict = {"backend": backend}
    if backend == "unsloth":
        import unsloth  # noqa: F401
        from unsloth import FastLanguageModel

        res["import_s"] = round(time.time() - t_import, 1)
        t0 = time.time()
        from lora_demo.models import model_path

        model, tok = FastLanguageModel.from_pretrained(
            model_name=model_path(model_id), max_seq_length=2048, dtype=None, load_in_4bit=True
        )
        model = FastLanguageModel.get_peft_model(
            model,
            r=16,
            target_modules=ALL7,
            lora_alpha=16,
            lora_dropout=0,
            bias="none",
            use_gradient_checkpointing="unsloth",
            random_state=3407,
        )
        tok = getattr(tok, "tokenizer", tok)
    else:
        from peft import get_peft_model, prepare_model_for_kbit_training

        from lora_demo.models import load_model
        from lora_demo.train.lora_config import lora_config
        from lora_demo.train.settings import TrainSettings

        res["import_s"] = round(time.time() - t_import, 1)
        t0 = time.time()
        lm = load_model(model_id, dtype="bf16", device="cuda", load_in_4bit=True)
        model = prepare_model_for_kbit_training(
            lm.model, use_gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": False}
        )
        model = get_peft_model(model, lora_config(TrainSettings(model="qwen3-tiny")))
        tok = lm.tokenizer
    res["load_s"] = round(time.time() - t0, 1)
    rows = long_rows(4 * (steps + 2))
    res["raw"] = raw_loop(model, _batches(rows, tok, 4, 2048), steps)
    r = res["raw"]
    print(
        f"  raw {backend}: first step {r['first_step_s']:.1f} s, {r['s_per_step']:.3f} s/step, "
        f"{r['tok_per_s']:,.0f} tok/s, peak {r['gpu_peak_gib']:.2f} GiB",
        flush=True,
    )
    if profile:
        res["profile"] = []
        n = max(4, steps // 2)
        if backend == "unsloth":
            variants = [
                (
                    "engine before #18: Unsloth's padding choice, token count, callback, log each step",
                    dict(callback=True, padding_free=None),
                ),
                (
                    "  - include_num_input_tokens_seen (count in the collator)",
                    dict(callback=True, padding_free=None, include_num_input_tokens_seen="no", counter=True),
                ),
                ("  - the progress callback", dict(padding_free=None, include_num_input_tokens_seen="no")),
                (
                    "  - per-step logging (log every 1000 steps)",
                    dict(padding_free=None, include_num_input_tokens_seen="no", logging_steps=1000),
                ),
                (
                    "padded batches (padding_free=False), nothing else",
                    dict(padding_free=False, include_num_input_tokens_seen="no", logging_steps=1000),
                ),
                (
                    "padding-free (explicit), nothing else",
                    dict(padding_free=True, max_length=None, include_num_input_tokens_seen="no", logging_steps=1000),
                ),
            ]
        else:
            variants = [
                (
                    "TRL SFTTrainer as is (fused head + entropy/accuracy, 3 .item() a micro-batch)",
                    dict(padding_free=False),
                ),
                ("LoRA Lab lean metrics (same loss, metrics read once per log)", dict(padding_free=False, lean=True)),
                (
                    "  + no per-micro-batch token count",
                    dict(padding_free=False, lean=True, include_num_input_tokens_seen="no", counter=True),
                ),
            ]
        for name, over in variants:
            try:
                res["profile"].append(trainer_variant(backend, model, tok, rows, name, n, **over))
            except Exception as e:  # noqa: BLE001 - one failing variant must not lose the others
                res["profile"].append({"name": name, "error": f"{type(e).__name__}: {str(e)[:300]}"})
                print(f"    {name}: {type(e).__name__}: {str(e)[:300]}", flush=True)
            Path(out_file).write_text(json.dumps(res))
    Path(out_file).write_text(json.dumps(res))


ALL7 = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _run_raw(backend: str, model: str, steps: int, profile: bool, timeout: int = 900) -> dict:
    import subprocess

    out = Path(tempfile.mkdtemp()) / f"raw-{backend}.json"
    cmd = [sys.executable, __file__, "--raw", backend, "--gpu", model, "--steps", str(steps), "--raw-out", str(out)]
    if profile:
        cmd.append("--profile")
    t0 = time.time()
    proc = subprocess.run(cmd, text=True, capture_output=True, timeout=timeout)
    print(proc.stdout[-6000:], end="", flush=True)
    res = json.loads(out.read_text()) if out.is_file() else {}
    if proc.returncode != 0:
        res["error"] = f"exit {proc.returncode}: {proc.stderr[-1500:]}"
        print(f"  raw {backend} failed: {proc.stderr[-3000:]}", flush=True)
    res["wall_s"] = round(time.time() - t0, 1)
    return res


def engine_figures(run_dir: Path, t_start: float, skip: int = 3) -> dict:
    """Steady-state figures of an engine run from its progress.jsonl and status.json."""
    from lora_demo.train.runs import read_progress, read_status

    st = read_status(run_dir)
    prog = read_progress(run_dir)
    logs = [p for p in prog if p.get("type") == "log"]
    stage = next((p for p in prog if p.get("type") == "stage"), None)
    skip = max(0, min(skip, len(logs) - 2))  # (short runs keep at least one interval)
    # seconds per optimizer step between consecutive logs (logging_steps may be > 1)
    per = [(b["time"] - a["time"]) / max(1, b["step"] - a["step"]) for a, b in zip(logs, logs[1:], strict=False)][skip:]
    saves = sorted({p["step"] for p in prog if p.get("type") == "checkpoint"})
    # the same without the intervals that hold a checkpoint save and its probe answers (steps [a, b) saved at a)
    clean = [
        (b["time"] - a["time"]) / max(1, b["step"] - a["step"])
        for a, b in zip(logs, logs[1:], strict=False)
        if not any(a["step"] <= k < b["step"] for k in saves)
    ][skip:]
    from lora_demo.train import probes as _probes

    points = _probes.read(run_dir)
    # tokens/s of each interval between logs (the callback's own figure), without those that hold a checkpoint save
    # and its probes: the training speed, comparable with the raw loops (which save nothing). What checkpoints cost
    # is reported beside it: the wall rate over the same steps with them (wall_tok_per_s) and their seconds.
    pairs = list(zip(logs, logs[1:], strict=False))[skip:]
    tps = [
        (b["tokens_per_s"], b["time"] - a["time"], any(a["step"] <= k < b["step"] for k in saves))
        for a, b in pairs
        if "tokens_per_s" in b
    ]
    steady = [t for t, _, saved in tps if not saved] or [t for t, _, _ in tps]
    useful = statistics.median(steady) if steady else None
    wall = sum(t * dt for t, dt, _ in tps) / sum(dt for _, dt, _ in tps) if tps else None
    ratio = st.get("tokens_computed", 0) / st["tokens_useful"] if st.get("tokens_useful") else 1.0
    out = {
        "status": st.get("status"),
        "backend": st.get("backend"),
        "s_per_step": statistics.median(per) if per else None,
        "useful_tok_per_s": useful,
        "tok_per_s": useful * ratio if useful else None,
        "wall_tok_per_s": wall * ratio if wall else None,
        "padding_share": 1 - 1 / ratio if ratio else 0.0,
        "gpu_peak_gib": max(p.get("gpu_peak_gb", 0) for p in logs) if logs else None,
        "load_s": round(stage["time"] - t_start, 1) if stage else None,
        "start_to_first_step_s": round(logs[0]["time"] - t_start, 1) if logs else None,
        "first_step_s": round(logs[0]["time"] - stage["time"], 1) if logs and stage else None,
        "micro_batch_size": st.get("micro_batch_size"),
        "gradient_accumulation_steps": st.get("gradient_accumulation_steps"),
        "batching": st.get("batching"),
        "collate_ms": 1000 * st.get("collate_seconds", 0) / max(1, st.get("micro_batches", 1)),
        "loss_first": logs[0].get("loss") if logs else None,
        "loss_last": logs[-1].get("loss") if logs else None,
        "steps": len(logs),
        "step_s": [[b["step"], round(b["time"] - a["time"], 3)] for a, b in zip(logs, logs[1:], strict=False)],
        "checkpoint_steps": saves,
        "s_per_step_between_checkpoints": statistics.median(clean) if clean else None,
        "probe_s": [[p["step"], p.get("seconds")] for p in points],
    }
    if st.get("status") != "completed":
        out["error"] = f"{st.get('status')}: {st.get('error')}\n{(run_dir / 'train.log').read_text()[-3000:]}"
    return out


def bench_gpu_full(
    model: str,
    steps: int,
    backends: list[str],
    processes: list[int],
    only: list[str] | None = None,
    overrides: dict | None = None,
    profile: bool = True,
    json_out: str | None = None,
) -> dict:
    """Everything in one process tree, on the same rows: the engine (each backend), the raw loops, the seed's
    configuration and the engine on Alpaca-like rows; then DDP runs when --processes names N > 1.
    profile: the raw processes also time the engine's trainer parts. json_out: the figures so far are written there
    after each configuration (a run cut short by a time limit keeps them)."""
    from lora_demo.train.plan import count_parameters
    from lora_demo.train.runner import Runner
    from lora_demo.train.settings import TrainSettings, defaults_for

    tmp = Path(tempfile.mkdtemp())
    tok = _tok(model)
    short = alpaca_like_rows(8 * (steps + 2), tok)
    lens = sorted(
        len(__import__("lora_demo.data", fromlist=["build_example"]).build_example(r, tok, "chat", 2048).input_ids)
        for r in short
    )
    base = {
        **defaults_for("cuda").to_dict(),
        "model": model,
        "dataset": "bench",
        "warmup": 1,
        "max_steps": steps,
        **(overrides or {}),
    }
    params = count_parameters(TrainSettings(**base))["base_params"]
    out = {
        "device": "cuda",
        "model": model,
        "steps": steps,
        "params": params,
        "lora_r": 16,
        "load_in_4bit": True,
        "mfu_formula": "MFU = tokens/s × 6 × params / 790e12",
        "short_rows": {
            "n": len(short),
            "min": lens[0],
            "median": lens[len(lens) // 2],
            "max": lens[-1],
            "mean": sum(lens) / len(lens),
        },
        "configs": {},
    }
    print(
        f"GPU bench: {model} ({params:,} params), 4-bit, r=16 all linear, adamw_8bit; long rows = 2048 tokens "
        f"(micro batch 4, no accumulation); short rows: Alpaca-like {lens[0]}–{lens[-1]} tokens "
        f"(median {lens[len(lens) // 2]}), effective batch 8",
        flush=True,
    )
    long = long_rows(4 * (steps + 2))
    configs = []  # (key, backend, rows, overrides)
    if "unsloth" in backends:
        configs.append(("engine_unsloth", "unsloth", long, dict(micro_batch_size=4, gradient_accumulation_steps=1)))
        configs.append(
            ("engine_unsloth_short", "unsloth", short, dict(micro_batch_size=2, gradient_accumulation_steps=4))
        )
        configs.append(
            (
                "seed_unsloth_short",
                "unsloth",
                short,
                dict(
                    micro_batch_size=1,
                    gradient_accumulation_steps=8,
                    padding_free=False,
                    auto_micro_batch=False,
                    max_steps=max(6, steps * 2 // 3),
                ),
            )
        )
    if "transformers" in backends:
        configs.append(
            ("engine_transformers", "transformers", long, dict(micro_batch_size=4, gradient_accumulation_steps=1))
        )
    if only:
        configs = [c for c in configs if c[0] in only]
    runners = {key: Runner(tmp / key, tmp / "data") for key, *_ in configs}
    os.environ["LORA_LAB_PREWARM"] = "1"

    def prewarm(i):
        if i < len(configs):
            key, backend, *_ = configs[i]
            os.environ["LORA_LAB_BACKEND"] = backend
            runners[key].prewarm()

    def save() -> None:
        if json_out:
            Path(json_out).write_text(json.dumps(out))

    prewarm(0)  # the app would do this while the user edits settings; here it overlaps the raw loop
    out["overrides"] = overrides or {}
    if "unsloth" in backends and (not only or "raw_unsloth" in only):
        out["configs"]["raw_unsloth"] = _run_raw("unsloth", model, steps, profile=profile)
        save()
    for i, (key, backend, rows, over) in enumerate(configs):
        runner = runners[key]
        os.environ["LORA_LAB_BACKEND"] = backend
        deadline = time.time() + 120
        while not runner.warm.ready() and time.time() < deadline:  # the user is still editing: not counted
            time.sleep(0.5)
        s = TrainSettings(**{**base, **over, "run_name": key})
        t0 = time.time()
        run_dir = runner.start(s, rows)
        runner.wait(900)
        # The app pre-imports a worker only while no run is active (Runner.prewarm): so here, after this run, lest
        # the next worker's imports (Unsloth: ~30 s of CPU) compete with this run's timed steps.
        prewarm(i + 1)
        fig = out["configs"][key] = {
            **engine_figures(run_dir, t0),
            "prewarmed": "prewarm: imports done" in (run_dir / "train.log").read_text(),
        }
        if os.environ.get("BENCH_KEEP"):  # the run's files, for a look afterwards
            import shutil

            shutil.copytree(
                run_dir,
                Path(os.environ["BENCH_KEEP"]) / key,
                ignore=shutil.ignore_patterns("*.safetensors", "checkpoint*"),
            )
        _print_fig(key, fig)
        save()
    if "transformers" in backends and (not only or "raw_transformers" in only):
        out["configs"]["raw_transformers"] = _run_raw("transformers", model, steps, profile=profile)
    for key in ("raw_unsloth", "raw_transformers"):
        if key in out["configs"] and "raw" in out["configs"][key]:
            out["configs"][key].update(out["configs"][key]["raw"])
    for n in [n for n in processes if n > 1]:
        os.environ["LORA_LAB_BACKEND"] = "transformers"
        runner = Runner(tmp / f"ddp{n}", tmp / "data")
        s = TrainSettings(**{**base, "micro_batch_size": 4, "gradient_accumulation_steps": 1, "num_processes": n})
        t0 = time.time()
        run_dir = runner.start(s, long[: 4 * n * steps] * n)
        runner.wait(900)
        fig = out["configs"][f"engine_transformers_x{n}"] = engine_figures(run_dir, t0)
        _print_fig(f"engine_transformers_x{n}", fig)
    summarise(out, params)
    save()
    return out


def _print_fig(key: str, f: dict) -> None:
    if f.get("error") or not f.get("s_per_step"):
        print(f"  {key}: {str(f.get('error'))[-3000:]}", flush=True)
        return
    print(
        f"  {key}: {f.get('batching')} {f.get('micro_batch_size')}×{f.get('gradient_accumulation_steps')}, "
        f"{f['s_per_step']:.3f} s/step, {f['tok_per_s']:,.0f} tok/s ({f['useful_tok_per_s']:,.0f} useful), peak "
        f"{f['gpu_peak_gib']:.2f} GiB, start→first step {f['start_to_first_step_s']} s (load {f['load_s']} s, "
        f"first step {f['first_step_s']} s), loss {f['loss_first']:.3f} → {f['loss_last']:.3f}",
        flush=True,
    )
    if f.get("step_s"):
        between = f.get("s_per_step_between_checkpoints")
        print(
            f"    s between logs (step: s): {' '.join(f'{k}:{s}' for k, s in f['step_s'])}; checkpoints at "
            f"{f.get('checkpoint_steps')}; probes (step, s): {f.get('probe_s')}; median without checkpoint "
            f"intervals {between if between is None else round(between, 3)} s/step",
            flush=True,
        )


def summarise(out: dict, params: int) -> None:
    """MFU per configuration, the issue's ratios, and the table."""
    c = out["configs"]
    for f in c.values():
        if f.get("tok_per_s"):
            f["mfu"] = f["tok_per_s"] * 6 * params / PEAK_FLOPS
            f["useful_mfu"] = f["useful_tok_per_s"] * 6 * params / PEAK_FLOPS

    def ratio(a, b, key="tok_per_s"):
        x, y = c.get(a, {}).get(key), c.get(b, {}).get(key)
        return round(x / y, 3) if x and y else None

    out["ratios"] = {
        "engine_unsloth_vs_raw_unsloth": ratio("engine_unsloth", "raw_unsloth"),
        "engine_unsloth_vs_raw_transformers": ratio("engine_unsloth", "raw_transformers"),
        "engine_transformers_vs_raw_transformers": ratio("engine_transformers", "raw_transformers"),
        "raw_unsloth_vs_raw_transformers": ratio("raw_unsloth", "raw_transformers"),
        "short_useful_engine_vs_seed": ratio("engine_unsloth_short", "seed_unsloth_short", "useful_tok_per_s"),
        # with the checkpoint saves and probes of the engine's run counted in (the raw loops save nothing)
        "engine_unsloth_with_checkpoints_vs_raw_unsloth": (
            round(c["engine_unsloth"]["wall_tok_per_s"] / c["raw_unsloth"]["tok_per_s"], 3)
            if c.get("engine_unsloth", {}).get("wall_tok_per_s") and c.get("raw_unsloth", {}).get("tok_per_s")
            else None
        ),
    }
    print(f"\n{out['mfu_formula']} (params = {params:,}; 790e12 = H200 dense bf16)")
    print(
        "Engine tok/s: the median over intervals between logs without a checkpoint save (with saves and probes: "
        "'with ckpt', the rate over the same steps)"
    )
    print(
        f"{'configuration':28s} {'tok/s':>9s} {'useful tok/s':>13s} {'with ckpt':>10s} {'peak GiB':>9s} {'MFU':>6s} "
        f"{'start→step 1 s':>15s}"
    )
    for key, f in c.items():
        if not f.get("tok_per_s"):
            print(f"{key:28s} failed: {str(f.get('error'))[:200]}")
            continue
        first = f.get("start_to_first_step_s", f.get("first_step_s"))
        wall = f"{f['wall_tok_per_s']:,.0f}" if f.get("wall_tok_per_s") else "-"
        print(
            f"{key:28s} {f['tok_per_s']:9,.0f} {f['useful_tok_per_s']:13,.0f} {wall:>10s} {f['gpu_peak_gib']:9.2f} "
            f"{f['mfu']:6.3f} {first if first is not None else '-':>15}"
        )
    print("ratios:", json.dumps(out["ratios"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpu", metavar="MODEL", help="model folder or id for the CUDA comparison")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps a configuration (default: 12 CPU, 14 GPU)")
    ap.add_argument("--backends", default="unsloth,transformers", help="GPU: comma-separated engine backends")
    ap.add_argument("--processes", default="1", help="GPU: comma-separated process counts, e.g. 1,2 (DDP runs for N>1)")
    ap.add_argument("--json", action="store_true", help="end with one JSON line of all figures")
    ap.add_argument("--configs", default="", help="GPU: only these configurations (comma-separated names)")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SETTING=VALUE",
        help="GPU: a TrainSettings value for the engine runs, e.g. probe_tokens=0 (repeatable)",
    )
    ap.add_argument("--no-profile", action="store_true", help="GPU: skip timing the engine's trainer parts")
    ap.add_argument("--json-out", metavar="PATH", help="GPU: write the figures so far there after each configuration")
    ap.add_argument("--raw", choices=("unsloth", "transformers"), help=argparse.SUPPRESS)  # the raw-loop subprocess
    ap.add_argument("--raw-out", help=argparse.SUPPRESS)
    ap.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.raw:
        raw_process(args.raw, args.gpu, args.steps or 14, args.raw_out, args.profile)
        return
    if args.gpu:
        backends = [b.strip() for b in args.backends.split(",") if b.strip()]
        bad = [b for b in backends if b not in ("unsloth", "transformers")]
        if bad:
            ap.error(f"--backends takes unsloth and/or transformers (got {', '.join(bad)})")
        try:
            processes = [int(n) for n in args.processes.split(",")]
        except ValueError:
            ap.error(f"--processes takes comma-separated whole numbers, e.g. 1,2 (got {args.processes!r})")
        try:
            overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
        except ValueError:
            ap.error("--set takes SETTING=VALUE, e.g. probe_tokens=0")
        only = [c.strip() for c in args.configs.split(",") if c.strip()]
        result = bench_gpu_full(
            args.gpu,
            args.steps or 14,
            backends,
            processes,
            only,
            overrides,
            profile=not args.no_profile,
            json_out=args.json_out,
        )
    else:
        result = bench_cpu(args.steps or 12)
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
