"""The Train tab's work on the engine side: the lists its form offers, the runs it shows and what can be done with
them. LabEngine owns one as `lab.train`; every method returns plain data and Msg values (no gradio), so the tab
(ui/train_tab.py) lays out and renders, and the tests can do what it does without a page.
"""

from __future__ import annotations

from pathlib import Path

from lora_demo.data import example_names
from lora_demo.data.preferences import PAIRS, VOTES
from lora_demo.errors import InputError
from lora_demo.i18n import Msg, msg
from lora_demo.rundir import CHECKPOINTS, RunDir
from lora_demo.train import probes
from lora_demo.train.checkpoints import can_resume, checkpoint_choices, step_of
from lora_demo.train.compare import COLUMNS, cell_text
from lora_demo.train.plan import plan_markdown
from lora_demo.train.runner import equivalent_command
from lora_demo.train.runs import LOG_TAIL_LINES, error_of, has_adapter, list_runs, read_status, settled, stop_notice
from lora_demo.train.settings import defaults_for
from lora_demo.train.watch import Look, look


def run_outcome(run_dir, status: dict) -> dict:
    """What a run's progress box says under its bar: `error` (a Msg when it was stored as one), and for a run that
    ended (completed or stopped) whose folder is given and that is node 0's part, `adapter` (whether one was saved)
    and `command` (the command that repeats the run, when it was)."""
    out = {"error": error_of(status), "adapter": False, "command": None}
    ended = status.get("status") in ("completed", "stopped") and run_dir and not status.get("node_rank")
    if ended and has_adapter(run_dir):
        out["adapter"], out["command"] = True, equivalent_command(run_dir)
    return out


def visible_gpus() -> int:
    """The CUDA GPUs this process sees (0 without CUDA): the Train form's GPUs field offers up to this many."""
    import torch  # (heavy: read when the Train tab is built or its form filled, not when the engine is imported)

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


class TrainActions:
    """The Train tab's actions over one LabEngine (lab): its runs folder, runner and datasets."""

    COMPARE_COLUMNS = COLUMNS  # the compared runs' table, its columns in order (keys of each row)
    LOG_TAIL_LINES = LOG_TAIL_LINES  # the log tail's lines (the tab's log box is sized to show them all)

    def __init__(self, lab):
        self.lab = lab

    def form_defaults(self) -> dict:
        """The form's first values: the settings that really train on this device, with the app's model."""
        from lora_demo.device import detect  # (imports torch: when the tab is built, not when the engine is imported)

        return defaults_for(detect().device, self.lab.default_model).to_dict()

    def dataset_choices(self, saved: bool = True, method: str = "sft") -> list:
        """The examples, then (saved=True) the data folder's datasets, read now. A DPO run's: preference pairs
        instead, as (label, value): the parent's votes, each run's votes, the saved preference sets (a label may be
        a Msg, shown in the page's language)."""
        if method == "dpo":
            return [(msg("votes: (the parent's votes)"), VOTES), *self.lab.preference_sources()]
        return [f"example:{n}" for n in example_names()] + (self.lab.datasets.names() if saved else [])

    @staticmethod
    def is_preferences(dataset) -> bool:
        """Whether a dataset value names preference pairs (votes:<run>, pairs:<name>): only DPO trains on them."""
        return isinstance(dataset, str) and (dataset.startswith(VOTES) or dataset.startswith(PAIRS))

    @staticmethod
    def adapter_name(path) -> str:
        """A run's name, or run/checkpoint-N for one of its checkpoints."""
        p = Path(str(path))
        return f"{p.parent.parent.name}/{p.name}" if p.parent.name == CHECKPOINTS else p.name

    # --- the runs folder ---
    def runs(self) -> list[dict]:
        """Every run's summary (runs.list_runs), newest first."""
        return list_runs(self.lab.runs_dir)

    def run_names(self) -> list[str]:
        return [r["name"] for r in self.runs()]

    def has_run(self, name) -> bool:
        return bool(name) and (self.lab.runs_dir / str(name)).is_dir()

    def resumable(self, name) -> bool:
        """Whether Resume belongs on this run: stopped or failed, with a finished checkpoint (presence of its files
        only; Resume itself reads them and says which one it skips). A run over several machines does not resume
        (Runner.resume says why)."""
        run_dir = self.lab.runs_dir / name
        st = settled(run_dir, read_status(run_dir))
        if (st.get("num_nodes") or 1) > 1:
            return False
        return st.get("status") in ("stopped", "failed") and can_resume(run_dir)

    def active(self) -> str | None:
        """The name of the run training now, or None."""
        run = self.lab.runner.current()
        return run.name if run is not None else None

    def refresh(self) -> None:
        """A run whose worker is gone (killed, app restarted) is recorded as failed."""
        self.lab.runner.reap()

    # --- one run ---
    @staticmethod
    def command(run_dir) -> str:
        """The command that repeats a run from a terminal."""
        return equivalent_command(run_dir)

    @staticmethod
    def plan_text(plan: dict, lang: str = "en") -> str:
        """A plan (LabEngine.plan) as Markdown in `lang`, as the CLI prints it."""
        return plan_markdown(plan, lang)

    def resume(self, name) -> tuple[int, list]:
        """Resume a stopped or failed run: (the step of the checkpoint it continues from, messages on skipped ones)."""
        ckpt, skipped = self.lab.resume(name)
        return step_of(ckpt), skipped

    def adapter_or_checkpoint(self, name) -> str:
        """The run's final adapter, else (a failed or running run) its newest finished checkpoint."""
        try:
            return self.lab.adapter_for_chat(name)
        except InputError:
            ckpts = checkpoint_choices(self.lab.run_dir(name))
            if not ckpts:
                raise
            return str(RunDir(self.lab.runs_dir / name).checkpoints_dir / ckpts[0][1].name)

    def stop(self) -> Msg:
        """Stop the active run: what it does at the run's stage (nothing is saved while the model loads)."""
        run_dir = self.lab.runner.stop()
        return msg("No training is running.") if run_dir is None else stop_notice(run_dir)

    def check_delete(self, name) -> None:
        """Raise what stops deleting this run now (no such run; it is training, and how to stop it)."""
        self.lab.run_dir(name)  # a run of this folder, or the message why not
        if self.active() == name:
            self.lab.delete_run(name)  # refuses, saying how to stop it

    # --- watching ---
    def look(self, name: str, seen: dict | None) -> Look:
        """What changed in a run's folder since the last look (train.watch.look)."""
        return look(self.lab.runs_dir / name, seen)

    def probe_points(self, name: str) -> list[dict]:
        """A run's probe answers so far (train.probes.read)."""
        return probes.read(self.lab.runs_dir / name)

    @staticmethod
    def compare_note(result: dict):
        """Which settings differ between the compared runs (the names as in config.yaml)."""
        if len(result["runs"]) < 2:
            return msg("Pick another run to compare it with.")
        if not result["differs"]:
            return msg("The runs have the same settings.")
        lines = "; ".join(
            f"`{k}` " + " · ".join(cell_text(v) for v in values) for k, values in result["differs"].items()
        )
        return msg("Settings that differ (in the order of the table): {settings}", settings=lines)
