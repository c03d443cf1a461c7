"""Tracking: every run writes TensorBoard event files into RUN_DIR/tensorboard, and passes its logs on to W&B or
MLflow when the settings' report_to names them (the user's own configuration: nothing is sent without it).

The scalars come from transformers' own TensorBoardCallback (train/loss, train/learning_rate, train/grad_norm,
train/tokens_per_second, eval/loss); the worker moves it, and any W&B / MLflow callback, after LoRA Lab's
ProgressCallback, which adds the tokens/s it measures to the logs they send. The probe answers go in as text
(MilestoneCallback, through ProbeText). Under DDP only global rank 0 writes: the Trainer's reporting callbacks
log on the main process only, and the milestones run on rank 0 only.
"""

from __future__ import annotations

from pathlib import Path

from lora_demo.rundir import RunDir

# The key ProgressCallback adds to each training log: TensorBoard shows it as train/tokens_per_second.
TOKENS_PER_SECOND = "tokens_per_second"
PROBE_TAG = "probes/answers"


def tensorboard_dir(run_dir: str | Path) -> Path:
    return RunDir(run_dir).tensorboard_dir


def report_to(settings) -> list[str]:
    """transformers' report_to for a run: TensorBoard always, then the trackers the settings name (never "all")."""
    return ["tensorboard", *dict.fromkeys(t for t in settings.report_to if t != "tensorboard")]


def trackers_last(trainer, run_dir: str | Path) -> None:
    """Move the Trainer's reporting callbacks after every other one (so the logs they send hold what LoRA Lab's
    callbacks add to them), and point TensorBoard's at the run folder (transformers 5 has no logging_dir)."""
    from transformers.integrations import TensorBoardCallback, get_reporting_integration_callbacks

    for cls in get_reporting_integration_callbacks(trainer.args.report_to):
        callback = trainer.pop_callback(cls)
        if callback is None:
            continue
        if isinstance(callback, TensorBoardCallback):
            callback.logging_dir = str(tensorboard_dir(run_dir))
        trainer.add_callback(callback)


def probe_markdown(kind: str, prompts: list[dict], answers: list[str]) -> str:
    """One probe point as the Markdown TensorBoard's text tab shows: each prompt in bold, its answer quoted."""
    parts = [f"*{kind}*"]
    for row, answer in zip(prompts, answers, strict=False):
        prompt = row.get("instruction", "") + (f"\n\n{row['input']}" if row.get("input") else "")
        quoted = "\n".join("> " + line for line in (answer or "").splitlines()) or "> (empty)"
        parts.append(f"**{prompt.strip()}**\n\n{quoted}")
    return "\n\n".join(parts)


class ProbeText:
    """The probe answers as TensorBoard text, in the run's event folder beside the Trainer's scalars (its own event
    file, opened at the first answer and flushed after each, so a stopped or killed run keeps what it wrote)."""

    def __init__(self, run_dir: str | Path):
        self.dir = tensorboard_dir(run_dir)
        self.writer = None

    def add(self, step: int, kind: str, prompts: list[dict], answers: list[str]) -> None:
        """Never fails the run (a full disk, a missing tensorboard): the answers are in probes.jsonl anyway."""
        try:
            if self.writer is None:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(log_dir=str(self.dir))
            self.writer.add_text(PROBE_TAG, probe_markdown(kind, prompts, answers), step)
            self.writer.flush()
        except Exception:  # noqa: BLE001
            import traceback

            traceback.print_exc()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
