"""MilestoneCallback: what the worker does at step 0, after each checkpoint and at the end of a run.

- After the Trainer has written a checkpoint (on_save), it makes the folder self-describing and marks it whole
  (checkpoints.finish), and notes it in progress.jsonl so the curve can mark it.
- At step 0 and after each checkpoint it asks the probe prompts (probes.answer) and records the answers.
  The step-0 model of a new adapter is the base model (PEFT and Unsloth start B at 0), so its answers are taken
  just after step 1 with the adapter disabled (the same model, bit for bit): the first step and its loss come that
  much sooner (the first generation, which loads its kernels, was a visible part of the wait before step 1). A
  run that continues an adapter (init_adapter) answers at step 0 itself.
Only rank 0 acts under DDP (the others wait at their next collective, a few seconds at most).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from transformers import TrainerCallback

from lora_demo.i18n import msg
from lora_demo.io import append_jsonl, read_text
from lora_demo.rundir import RunDir
from lora_demo.train import checkpoints, probes, tracking

_MAIN = int(os.environ.get("RANK", "0")) == 0


class MilestoneCallback(TrainerCallback):
    def __init__(self, run_dir: Path, settings, model, tok, probe_rows: list[dict], unsloth: bool = False):
        self.run_dir, self.s, self.model, self.tok = Path(run_dir), settings, model, tok
        self.unsloth = unsloth  # Unsloth's generate switches modes itself (see probes.answer)
        self.rows = probe_rows if settings.probe_tokens > 0 else []
        self.config_yaml = read_text(RunDir(self.run_dir).config_path)
        # The step-0 answers are the base model's: taken after step 1 with the adapter off (see the docstring).
        self.base_is_start = not getattr(settings, "init_adapter", "") and hasattr(model, "disable_adapter")
        self.start_pending = False
        self.text = tracking.ProbeText(self.run_dir)

    def probe(self, step: int, kind: str) -> None:
        """Answer the probe prompts now and record them (nothing when probes are off). Probes are optional: one that
        fails (out of memory, a template error) is reported once in the log and the timeline, then turned off, and
        training goes on."""
        if not (_MAIN and self.rows):
            return
        t0 = time.perf_counter()
        try:
            answers = probes.answer(self.model, self.tok, self.rows, self.s, self.s.probe_tokens, self.unsloth)
        except Exception as e:  # noqa: BLE001 - never worth failing a run for
            import traceback

            traceback.print_exc()
            why = msg(
                "Probes turned off after an error at step {step}: {kind}: {first}",
                step=step,
                kind=type(e).__name__,
                first=(str(e).splitlines() or [""])[0][:200],
            )
            probes.record(self.run_dir, step, kind, self.rows, [], time.perf_counter() - t0, error=why)
            self.rows = []
            return
        probes.record(self.run_dir, step, kind, self.rows, answers, time.perf_counter() - t0)
        self.text.add(step, kind, self.rows, answers)  # and as TensorBoard text, beside the run's scalars

    def start_probe(self) -> None:
        """The step-0 answers when they were left for later: the base model's, with the adapter disabled."""
        if not self.start_pending:
            return
        self.start_pending = False
        with self.model.disable_adapter():
            self.probe(0, "start")

    def on_train_begin(self, args, state, control, **kw):
        recorded = {p["step"] for p in probes.read(self.run_dir)} if _MAIN and self.rows else set()
        if state.global_step == 0:
            if self.base_is_start:
                self.start_pending = bool(_MAIN and self.rows)
            else:
                self.probe(0, "start")
            return
        # Resumed: the base answers if they were never recorded (killed before they were taken), and those of the
        # checkpoint resumed from if the worker was killed just after saving it.
        self.start_pending = bool(self.base_is_start and self.rows and 0 not in recorded)
        if _MAIN and self.rows and state.global_step not in recorded:
            self.probe(state.global_step, "checkpoint")

    def on_step_begin(self, args, state, control, **kw):
        if self.start_pending and state.global_step >= 1:
            self.start_probe()

    def on_save(self, args, state, control, **kw):
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()  # every rank has written its RNG state before rank 0 marks the checkpoint whole
        if not _MAIN:
            return
        ckpt = Path(args.output_dir) / f"{checkpoints.PREFIX}{state.global_step}"
        if not (ckpt / "trainer_state.json").is_file():
            return
        loss = next((h["loss"] for h in reversed(state.log_history) if "loss" in h), None)
        checkpoints.finish(
            ckpt,
            self.config_yaml,
            self.s.model,
            {"step": state.global_step, "total": state.max_steps, "loss": loss, "time": time.time()},
        )
        append_jsonl(
            RunDir(self.run_dir).progress_path,
            {"type": "checkpoint", "step": state.global_step, "total": state.max_steps, "time": round(time.time(), 3)},
        )
        if not control.should_training_stop:  # a user waiting on Stop does not wait for probes too
            self.start_probe()
            self.probe(state.global_step, "checkpoint")

    def final(self, step: int) -> None:
        """The answers of the finished model (reused when the last checkpoint was at this very step)."""
        if not (_MAIN and self.rows):
            return
        self.start_probe()  # (a run of one step)
        points = probes.read(self.run_dir)
        if points and points[-1]["step"] == step:
            last = points[-1]
            probes.record(self.run_dir, step, "final", last["prompts"], last["answers"], 0.0)
        else:
            self.probe(step, "final")
        self.text.close()
