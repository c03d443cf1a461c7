"""ProgressCallback: the worker's TrainerCallback that writes progress.jsonl and honours a stop request."""

from __future__ import annotations

import os
import time
from collections import deque
from pathlib import Path

from transformers import TrainerCallback

from lora_demo.io import append_jsonl
from lora_demo.rundir import RunDir
from lora_demo.train.runs import read_status, stop_requested
from lora_demo.train.runs import update_status as _update_status
from lora_demo.train.tracking import TOKENS_PER_SECOND

_MAIN = int(os.environ.get("RANK", "0")) == 0  # under DDP only rank 0 writes the run's files
# The speed and the ETA come from this many recent optimizer steps (the first step of a process, which loads and
# may compile kernels, never counts).
RECENT_STEPS = 10
# DPO's metrics (TRL's names → progress.jsonl's): the implicit rewards β·log(π/π_ref) of the chosen and the rejected
# answers, their mean margin, and the share of pairs whose chosen answer has the higher reward. TensorBoard gets them
# under TRL's names (train/rewards/margins, ...) from the same logs.
DPO_METRICS = (
    ("rewards/margins", "reward_margin"),
    ("rewards/accuracies", "reward_accuracy"),
    ("rewards/chosen", "reward_chosen"),
    ("rewards/rejected", "reward_rejected"),
    ("eval_rewards/margins", "eval_reward_margin"),
    ("eval_rewards/accuracies", "eval_reward_accuracy"),
)
# GRPO's metrics (train/grpo.py): the mean reward of the step's answers (the weighted mean of the rewards, each from
# 0 to 1), its spread, the answers' mean length in tokens and the share cut at grpo_max_tokens; each reward's own mean
# arrives as rewards/<name>/mean and is written as reward_<name> (e.g. reward_format). TensorBoard gets them under
# TRL's names (train/reward, train/rewards/format/mean, ...) from the same logs.
GRPO_METRICS = (
    ("reward", "reward"),
    ("reward_std", "reward_std"),
    ("completions/mean_length", "completion_length"),
    ("completions/clipped_ratio", "completion_clipped"),
    ("eval_reward", "eval_reward"),
)


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
    """Writes one record per log (loss, lr, grad norm, tokens/s, ETA, GPU memory) and stops on request.

    Speed: each optimizer step is timed from its start (after every other callback's on_step_begin, by `clock`,
    which the worker adds last: the step-0 probes run there) to its end, with the tokens it trained; tokens/s,
    s/step and the ETA come from the last RECENT_STEPS steps, the process's first step (model warm-up, compile)
    left out. Probes, checkpoints and evaluations between steps therefore never make the ETA jump. At the end of
    training a "summary" record holds the run's real average: its tokens over its wall time in training."""

    def __init__(self, run_dir: Path, compiles_first_step: bool = False, save_on_stop: bool = False):
        self.run_dir = Path(run_dir)
        self.path = RunDir(self.run_dir).progress_path
        self.t0 = time.time()
        self.train_t0: float | None = None  # end of this process's first step (which may compile: Unsloth)
        self.train_step0 = 0
        self.compiles_first_step = compiles_first_step
        self.first_loss = None
        self.first_reward = None  # GRPO
        self.stopped = False  # a stop was honoured (the same on every rank)
        self.save_on_stop = save_on_stop  # a checkpoint at the stop, so Resume continues from exactly there
        self.recent: deque[tuple[float, int]] = deque(maxlen=RECENT_STEPS)  # (seconds, tokens) of recent steps
        self.step_began: tuple[float, int] | None = None  # (time, tokens seen) when the current step began
        self.first_step: tuple[float, int] | None = None  # (seconds, tokens) of this process's first step
        self.begin: tuple[float, int, int] | None = None  # (time, tokens seen, step) at on_train_begin
        self.clock = StepClock(self)

    def write(self, record: dict) -> None:
        if not _MAIN:
            return
        record = {"time": round(time.time(), 3), "elapsed": round(time.time() - self.t0, 2), **record}
        append_jsonl(self.path, record)

    def on_train_begin(self, args, state, control, **kw):
        if state.global_step:  # resumed: the curve and the first loss go on from the earlier part of the run
            self.first_loss = read_status(self.run_dir).get("first_loss")
            self.first_reward = read_status(self.run_dir).get("first_reward")
        self.train_step0 = state.global_step
        stage = "compiling" if self.compiles_first_step else "training"
        update_status(self.run_dir, status=stage, total_steps=state.max_steps, step=state.global_step)
        self.write({"type": "stage", "stage": stage, "step": state.global_step, "total": state.max_steps})
        self.begin = (time.time(), _tokens(state), state.global_step)

    def on_step_begin(self, args, state, control, **kw):
        self.step_began = (time.time(), _tokens(state))  # again in `clock`, after the other callbacks

    def on_step_end(self, args, state, control, **kw):
        now = time.time()
        took = (now - self.step_began[0], _tokens(state) - self.step_began[1]) if self.step_began else None
        if self.train_t0 is None:  # the first step of this process (step 1, or the first after a resume)
            update_status(self.run_dir, status="training")
            self.train_t0, self.train_step0, self.first_step = now, state.global_step, took
        elif took is not None:
            self.recent.append(took)
        self.step_began = None
        if stop_agreed(self.run_dir, args.device):
            control.should_training_stop = self.stopped = True
            control.should_save = control.should_save or self.save_on_stop
            self.write({"type": "stage", "stage": "stopping", "step": state.global_step, "total": state.max_steps})
        return control

    def on_log(self, args, state, control, logs=None, **kw):
        logs = logs or {}
        step, total = state.global_step, state.max_steps
        rec = {
            "type": "eval" if "eval_loss" in logs else "log",
            "step": step,
            "total": total,
            "epoch": round(state.epoch or 0, 3),
        }
        for key, name in (
            ("loss", "loss"),
            ("learning_rate", "lr"),
            ("grad_norm", "grad_norm"),
            ("eval_loss", "eval_loss"),
            *DPO_METRICS,
            *GRPO_METRICS,
        ):
            if key in logs and logs[key] is not None:
                rec[name] = float(logs[key])
        for key, value in logs.items():  # GRPO: each reward's mean
            if key.startswith("rewards/") and key.endswith("/mean") and value is not None:
                rec["reward_" + key[len("rewards/") : -len("/mean")]] = float(value)
        rec.update(self.speed(step, total))
        rec.update(gpu_memory())
        if "loss" in logs and rec.get("tokens_per_s"):  # for the trackers, which log after this callback (tracking.py)
            logs[TOKENS_PER_SECOND] = rec["tokens_per_s"]
        if "loss" in rec or "eval_loss" in rec:
            self.write(rec)
        extra = {"step": step}
        if "loss" in rec:
            self.first_loss = self.first_loss if self.first_loss is not None else rec["loss"]
            extra.update(final_loss=rec["loss"], first_loss=self.first_loss)
        if "eval_loss" in rec:
            extra["eval_loss"] = rec["eval_loss"]
        extra.update({k: rec[k] for k in ("reward_margin", "reward_accuracy") if k in rec})  # DPO: the latest
        if "reward" in rec and "loss" in rec:  # GRPO: the latest mean reward, and the first
            self.first_reward = self.first_reward if self.first_reward is not None else rec["reward"]
            extra.update(reward=rec["reward"], first_reward=self.first_reward)
        update_status(self.run_dir, **extra)

    def speed(self, step: int, total: int) -> dict:
        """tokens/s, s/step and the ETA from the recent steps ({} before there is one to go by)."""
        seconds = sum(t for t, _ in self.recent)
        if not self.recent or seconds <= 0:  # only the first step so far: its own speed, warm-up and all, no ETA
            took = self.first_step
            return {"tokens_per_s": round(took[1] / took[0], 1)} if took and took[0] > 0 and took[1] else {}
        per_step = seconds / len(self.recent)
        out = {"s_per_step": round(per_step, 3), "eta_s": round(per_step * max(0, total - step), 1)}
        tokens = sum(n for _, n in self.recent)
        if tokens:
            out["tokens_per_s"] = round(tokens / seconds, 1)
        return out

    def summary(self, state) -> dict | None:
        """The run's real average in this process: tokens trained over the wall time since training began (every
        step, probes, checkpoints and evaluations included)."""
        if self.begin is None or state.global_step <= self.begin[2]:
            return None
        seconds = time.time() - self.begin[0]
        steps, tokens = state.global_step - self.begin[2], _tokens(state) - self.begin[1]
        out = {
            "type": "summary",
            "step": state.global_step,
            "total": state.max_steps,
            "steps": steps,
            "train_s": round(seconds, 2),
            "s_per_step": round(seconds / steps, 3),
        }
        if tokens > 0 and seconds > 0:
            out["tokens"], out["tokens_per_s"] = tokens, round(tokens / seconds, 1)
        return out

    def on_train_end(self, args, state, control, **kw):
        summary = self.summary(state)
        if summary:
            self.write(summary)
        self.write({"type": "stage", "stage": "saving", "step": state.global_step, "total": state.max_steps})
        update_status(self.run_dir, status="saving", step=state.global_step)


class StepClock(TrainerCallback):
    """Marks when an optimizer step really begins: added after every other callback, so what they do at
    on_step_begin (the step-0 probes) is not counted as the step's time."""

    def __init__(self, progress: ProgressCallback):
        self.progress = progress

    def on_step_begin(self, args, state, control, **kw):
        self.progress.step_began = (time.time(), _tokens(state))


def _tokens(state) -> int:
    return int(getattr(state, "num_input_tokens_seen", 0) or 0)


def gpu_memory() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {}
    return {
        "gpu_mem_gb": round(torch.cuda.memory_allocated() / 2**30, 2),
        "gpu_peak_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2),
    }
