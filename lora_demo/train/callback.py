"""ProgressCallback: the worker's TrainerCallback that writes progress.jsonl and honours a stop request."""

from __future__ import annotations

import os
import time
from pathlib import Path

from transformers import TrainerCallback

from lora_demo.io import append_jsonl
from lora_demo.train.runs import stop_requested
from lora_demo.train.runs import update_status as _update_status

_MAIN = int(os.environ.get("RANK", "0")) == 0  # under DDP only rank 0 writes the run's files


def update_status(run_dir, **fields) -> None:
    if _MAIN:
        _update_status(run_dir, **fields)


def stop_agreed(run_dir: Path, device) -> bool:
    """Whether any rank saw the STOP file. Under DDP every rank must stop after the same step (a rank that went on
    alone would wait for the others forever), so the ranks agree with one all-reduce of a flag."""
    stop = stop_requested(run_dir)
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return stop
    import torch

    flag = torch.tensor([1.0 if stop else 0.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


class ProgressCallback(TrainerCallback):
    """Writes one record per log (loss, lr, grad norm, tokens/s, ETA, GPU memory) and stops on request."""

    def __init__(self, run_dir: Path, compiles_first_step: bool = False, save_on_stop: bool = False):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "progress.jsonl"
        self.t0 = time.time()
        self.train_t0: float | None = None  # start of step 2: the first step may compile (Unsloth)
        self.train_step0 = 0
        self.last_tokens = 0
        self.last_t = None
        self.compiles_first_step = compiles_first_step
        self.first_loss = None
        self.stopped = False  # a stop was honoured (the same on every rank)
        self.save_on_stop = save_on_stop  # a checkpoint at the stop, so Resume continues from exactly there

    def write(self, record: dict) -> None:
        if not _MAIN:
            return
        record = {"time": round(time.time(), 3), "elapsed": round(time.time() - self.t0, 2), **record}
        append_jsonl(self.path, record)

    def on_train_begin(self, args, state, control, **kw):
        if state.global_step:  # resumed: the curve and the first loss go on from the earlier part of the run
            from lora_demo.train.runs import read_status

            self.first_loss = read_status(self.run_dir).get("first_loss")
        self.train_step0 = state.global_step
        stage = "compiling" if self.compiles_first_step else "training"
        update_status(self.run_dir, status=stage, total_steps=state.max_steps, step=state.global_step)
        self.write({"type": "stage", "stage": stage, "step": state.global_step, "total": state.max_steps})
        self.last_t = time.time()

    def on_step_end(self, args, state, control, **kw):
        if self.train_t0 is None:  # the first step of this process (step 1, or the first after a resume)
            update_status(self.run_dir, status="training")
            self.train_t0, self.train_step0 = time.time(), state.global_step
        if stop_agreed(self.run_dir, args.device):
            control.should_training_stop = self.stopped = True
            control.should_save = control.should_save or self.save_on_stop
            self.write({"type": "stage", "stage": "stopping", "step": state.global_step, "total": state.max_steps})
        return control

    def on_log(self, args, state, control, logs=None, **kw):
        logs = logs or {}
        now = time.time()
        step, total = state.global_step, state.max_steps
        rec = {"type": "eval" if "eval_loss" in logs else "log", "step": step, "total": total,
               "epoch": round(state.epoch or 0, 3)}  # fmt: skip
        for key, name in (
            ("loss", "loss"),
            ("learning_rate", "lr"),
            ("grad_norm", "grad_norm"),
            ("eval_loss", "eval_loss"),
        ):
            if key in logs:
                rec[name] = float(logs[key])
        tokens = getattr(state, "num_input_tokens_seen", 0) or 0
        if tokens and self.last_t and now > self.last_t:
            rec["tokens_per_s"] = round((tokens - self.last_tokens) / (now - self.last_t), 1)
        self.last_tokens, self.last_t = tokens, now
        if self.train_t0 and step > self.train_step0:
            per_step = (now - self.train_t0) / (step - self.train_step0)
            rec["eta_s"] = round(per_step * (total - step), 1)
            rec["s_per_step"] = round(per_step, 3)
        rec.update(gpu_memory())
        if "loss" in rec or "eval_loss" in rec:
            self.write(rec)
        extra = {"step": step}
        if "loss" in rec:
            self.first_loss = self.first_loss if self.first_loss is not None else rec["loss"]
            extra.update(final_loss=rec["loss"], first_loss=self.first_loss)
        if "eval_loss" in rec:
            extra["eval_loss"] = rec["eval_loss"]
        update_status(self.run_dir, **extra)

    def on_train_end(self, args, state, control, **kw):
        self.write({"type": "stage", "stage": "saving", "step": state.global_step, "total": state.max_steps})
        update_status(self.run_dir, status="saving", step=state.global_step)


def gpu_memory() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {}
    return {"gpu_mem_gb": round(torch.cuda.memory_allocated() / 2**30, 2),
            "gpu_peak_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2)}  # fmt: skip
