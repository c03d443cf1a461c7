"""Run folders: runs/<unique name>/ holds everything about one training run (lora_demo.rundir names its files).

Here: making a run folder, its status (read, settled, reconciled), progress, log tail, stop, delete and model card.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import psutil

from lora_demo import env
from lora_demo.data.templates import ALPACA_NO_INPUT
from lora_demo.errors import InputError
from lora_demo.i18n import Msg, msg
from lora_demo.io import open_fd, read_jsonl, write_atomic
from lora_demo.models.registry import REGISTRY
from lora_demo.paths import safe_name
from lora_demo.rundir import LOG, PROGRESS, STATUS, TENSORBOARD, RunDir
from lora_demo.train.rewards import described

ACTIVE = ("starting", "loading", "compiling", "training", "saving")
FINAL = ("completed", "stopped", "failed")
# Set in the worker's environment when it must end with the process that started it (the CLI without --detach):
# "<pid>:<start>" of that process (worker.die_with_owner).
OWNER_ENV = env.OWNER
# The run's TensorBoard event files (worker.sft_config, milestones), in this subfolder of the run folder.
TENSORBOARD_DIR = TENSORBOARD


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text.split("/")[-1]).strip("-.")[:40] or "run"


def new_run_dir(runs_dir: str | Path, model: str, dataset: str, name: str = "", suffix: str = "") -> Path:
    """A fresh, unique run folder (created atomically, so no run ever overwrites another); suffix: e.g. "-node1"
    for the folder of another machine of a multi-node run."""

    root = Path(runs_dir)
    root.mkdir(parents=True, exist_ok=True)
    base = (
        safe_name(name, msg("run name"))
        if name.strip()
        else (f"{time.strftime('%Y%m%d-%H%M%S')}-{_slug(model)}-{_slug(dataset.removeprefix('example:'))}")
    )
    base += suffix
    for i in range(1000):
        path = root / (base if i == 0 else f"{base}-{i + 1}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise InputError(msg("Could not find a free run name for {base!r}.", base=base))


def read_status(run_dir: str | Path) -> dict:
    return RunDir(run_dir).read_status()


def update_status(run_dir: str | Path, **fields) -> dict:
    status = {**read_status(run_dir), **fields}
    RunDir(run_dir).write_status(status)
    return status


def error_fields(error) -> dict:
    """status.json's fields for an error: `error`, the English text (the CLI, logs, scripts read it), and for a
    message the UI can translate, `error_msg`, its Msg.to_json() form (read back with error_of)."""
    return {"error": str(error), "error_msg": error.to_json() if isinstance(error, Msg) else None}


def error_of(status: dict):
    """A status's error for the UI: the Msg when it was stored as one, else the plain text (older run folders)."""
    error, data = status.get("error"), status.get("error_msg")
    if isinstance(data, dict) and error is not None:
        try:
            m = Msg.from_json(data)
        except (KeyError, IndexError, ValueError, TypeError, AttributeError):
            return error
        if m == error:  # (a later plain error, written without its message, wins)
            return m
    return error


def read_progress(run_dir: str | Path) -> list[dict]:
    """The progress records so far (a half-written last line is skipped), as the run now stands: a resume from
    step k drops what was logged after k before it (those steps were done again), keeping its own marker."""
    records = read_jsonl(RunDir(run_dir).progress_path)
    out: list[dict] = []
    for rec in records:
        if rec.get("type") == "stage" and rec.get("stage") == "resumed":
            k = rec.get("step", 0)
            out = [r for r in out if r.get("step", 0) <= k or r.get("stage") == "resumed"]
        out.append(rec)
    return out


# What the Train tab shows of train.log: fewer lines than its log box shows without scrolling (ui/train_tab.py sizes
# the box from this, with room for a horizontal scrollbar), so the newest line is always in view.
LOG_TAIL_LINES = 12
# Escape sequences (colours, tqdm's cursor-up "\x1b[A", window titles): never shown.
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")


def _as_shown(line: str) -> str:
    """One line's latest state: a carriage return starts the line again (tqdm redraws its bar so, and wipes it with
    spaces), so what was written after the last one that was followed by anything is what remains ("text\r\n"
    stays "text")."""
    return next((part for part in reversed(line.split("\r")) if part), "").rstrip()


def clean_log(text: str) -> list[str]:
    """The lines of a log as a terminal would show them: escape sequences removed, carriage-return refreshes
    collapsed to each line's latest state, lines left blank by a cleared progress bar dropped."""
    out = []
    for raw in _ANSI.sub("", text).split("\n"):
        line = _as_shown(raw)
        if line or not raw:  # a real empty line stays; a bar wiped with spaces goes
            out.append(line)
    while out and not out[-1]:
        out.pop()
    return out


def log_tail(run_dir: str | Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines of the run's train.log, cleaned for reading (clean_log)."""
    try:
        with os.fdopen(open_fd(RunDir(run_dir).log_path), "rb") as f:  # a planted link is never shown
            f.seek(0, 2)
            start = max(0, f.tell() - 65536)
            f.seek(start)
            data = f.read()
    except OSError:
        return ""
    if start and b"\n" in data:  # began mid-line: that line's start is not here
        data = data[data.index(b"\n") + 1 :]
    return "\n".join(clean_log(data.decode("utf-8", errors="replace"))[-lines:])


# This boot's identity (Linux: a fresh random id at each boot). psutil has none, and its boot_time() moves when the
# clock is set, so it cannot tell a boot apart from the next one a status file was written in.
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_start(pid: int) -> str | None:
    """Which process a pid is: "<boot id>:<start>", so a pid reused after a reboot or by another program is not
    taken for the worker. None where that is unknown (no Linux boot id, no such process).

    <start> is the process's start in clock ticks since boot, as /proc/PID/stat gives it and as every status.json
    holds it (`pid_start`, and $LORA_LAB_OWNER): psutil's create_time() is those ticks plus the boot time, so
    subtracting the boot time gives them back exactly. Unlike the wall-clock start time, they do not move when the
    clock is set."""
    try:
        boot = BOOT_ID.read_text().strip()
        since_boot = psutil.Process(pid).create_time() - psutil.boot_time()
    except (OSError, psutil.Error):
        return None
    return f"{boot}:{round(since_boot * CLOCK_TICKS)}"


def pid_alive(pid: int | None, start: str | None = None) -> bool:
    """Whether the process is there (and, given its recorded start, is still the same process).

    A zombie (exited, not yet reaped) counts as alive here: its parent, the app's Runner, reaps it and records the
    precise reason (e.g. "killed (SIGKILL)"), which this generic check could not know."""
    if not pid:
        return False
    if start is not None and process_start(pid) not in (None, start):
        return False
    return psutil.pid_exists(pid)


GONE = msg("The training process ended unexpectedly (killed, or the app was restarted).")


def _last_write(run_dir: Path) -> float | None:
    """When the run's files last changed: the best guess of when a vanished worker stopped."""
    times = []
    for name in (STATUS, PROGRESS, LOG):
        try:
            times.append((run_dir / name).stat().st_mtime)
        except OSError:
            pass
    return max(times, default=None)


def this_host() -> str:
    import socket

    return socket.gethostname()


FOREIGN_STALE_S = 3600.0  # a run of another host whose files have not changed for this long is taken for dead
LAUNCH_GRACE_S = 60.0  # a run being launched: status written, its worker's pid not yet


def is_foreign(status: dict) -> bool:
    """Whether the run was started on another machine (a runs folder on a shared disk)."""
    return status.get("host", this_host()) != this_host()


def settled(run_dir: str | Path, status: dict) -> dict:
    """The status as it is to be shown: one that says active while its worker is gone reads as failed.

    Computed in memory only (reading never writes); reconcile_runs records it. A run started on another machine
    (a runs folder on a shared disk, e.g. the other nodes of a multi-node run) is taken as it says, since its pid
    means nothing here, until its files have not changed for FOREIGN_STALE_S (its machine went away without a
    word). A run whose status was just written and whose worker is being started is left alone for a moment."""
    if status.get("status") not in ACTIVE:
        return status
    if is_foreign(status):
        last = _last_write(Path(run_dir))
        if last is None or time.time() - last < FOREIGN_STALE_S:
            return status
        return {
            **status,
            "status": "failed",
            "ended": last,
            **error_fields(
                msg(
                    "No sign of life from {host} for over an hour: its training process ended without recording why "
                    "(the machine was lost, or the job was cancelled).",
                    host=status.get("host"),
                )
            ),
        }
    if not status.get("pid") and time.time() - float(status.get("started") or 0) < LAUNCH_GRACE_S:
        return status
    if pid_alive(status.get("pid"), status.get("pid_start")):
        return status
    ended = status.get("ended") or _last_write(Path(run_dir)) or time.time()
    error = {} if status.get("error") else error_fields(GONE)
    return {**status, "status": "failed", "ended": ended, **error}


def reconcile_runs(runs_dir: str | Path, skip: tuple[Path, ...] = ()) -> list[Path]:
    """Record as failed every run whose status says active but whose worker is gone (killed, app restarted).

    The one place that writes what settled() shows; returns the run folders it marked. Runs in skip are left
    alone (a Runner's own child, whose exit it records with the exact reason)."""
    marked = []
    for run_dir in run_dirs(runs_dir):
        if run_dir in skip:
            continue
        st = read_status(run_dir)
        shown = settled(run_dir, st)
        if shown is not st:
            update_status(run_dir, **{k: shown[k] for k in ("status", "ended", "error", "error_msg") if k in shown})
            marked.append(run_dir)
    return marked


def run_summary(run_dir: Path) -> dict:
    """One row of the runs table (read only: a vanished worker's run shows as failed without being rewritten)."""
    st = settled(run_dir, read_status(run_dir))
    started, ended = st.get("started"), st.get("ended")
    duration = (ended or time.time()) - started if started else None
    return {
        "name": run_dir.name,
        "status": st.get("status", "unknown"),
        "model": st.get("model", ""),
        "dataset": st.get("dataset", ""),
        "final_loss": st.get("final_loss"),
        "eval_loss": st.get("eval_loss"),
        "step": st.get("step"),
        "total_steps": st.get("total_steps"),
        "duration_s": round(duration, 1) if duration is not None else None,
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "",
        "error": st.get("error"),
        "has_adapter": has_adapter(run_dir),
        "path": str(run_dir),
    }


def run_dirs(runs_dir: str | Path) -> list[Path]:
    """Every run folder (those with a status.json), newest first."""
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    return [p.parent for p in sorted(root.glob(f"*/{STATUS}"), key=_mtime, reverse=True)]


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # removed meanwhile
        return 0.0


def list_runs(runs_dir: str | Path) -> list[dict]:
    """Every run folder (those with a status.json), newest first."""
    return [run_summary(d) for d in run_dirs(runs_dir)]


def has_adapter(run_dir: str | Path) -> bool:
    """Whether the run folder holds a saved adapter (its weights file), whatever its status says."""
    return RunDir(run_dir).has_weights()


def request_stop(run_dir: str | Path) -> None:
    """Ask the run's worker to stop: the one mechanism (the Train tab's Stop, `python -m lora_demo stop`, Ctrl-C of
    `train`). The worker honours it before training starts (nothing saved) or after the current optimizer step."""
    write_atomic(RunDir(run_dir).stop_path, str(time.time()))


def stop_command(run_dir: str | Path) -> str:
    return f"python -m lora_demo stop {Path(run_dir)}"


def stop_notice(run_dir: str | Path, status: dict | None = None) -> Msg:
    """What a stop requested now will do, by the run's stage; read after request_stop(). The worker marks
    `prepared` just before its last look at STOP ahead of training, so a run not yet prepared stops with nothing saved."""
    run_dir = Path(run_dir)
    st = read_status(run_dir) if status is None else status
    stage, run = st.get("status"), run_dir.name
    if stage == "saving":
        return msg("{run} is already saving its adapter; it ends in a moment.", run=run)
    if stage in ("starting", "loading") and (st.get("num_processes") or 1) > 1:
        return msg(
            "Stopping {run}: training has not started yet (its processes are loading the model); they stop "
            "together after the first step, and that adapter is saved (status: stopped).",
            run=run,
        )
    if stage in ("starting", "loading") and not st.get("prepared"):
        return msg(
            "Stopping {run}: training has not started yet (the model is still loading), so no adapter will be "
            "saved; the run folder will be marked stopped.",
            run=run,
        )
    return msg("Stopping {run} after the current step; the adapter so far will be saved (status: stopped).", run=run)


def delete_run(runs_dir: str | Path, name) -> Path:
    """Delete the run folder `name` of runs_dir and everything in it; returns the path removed.

    Never a run whose worker is alive (stop it first), never anything outside runs_dir (name must be a plain
    folder name), never a symlink's target: a run that is a symlink is removed as a link only. status.json goes
    first, so a folder half-deleted by an error no longer lists as a run."""
    import shutil

    name = safe_name(name, msg("run name"))
    path = Path(runs_dir).resolve() / name
    if path.is_symlink():
        path.unlink()  # the link only: whatever it points to is left alone
        return path
    if not path.is_dir():
        raise InputError(msg("No run named {name!r}.", name=name))
    if not RunDir(path).is_run():
        raise InputError(msg("{name!r} is not a run folder (it has no status.json); nothing was deleted.", name=name))
    st = settled(path, read_status(path))
    if st.get("status") in ACTIVE:
        raise InputError(
            msg(
                "{run} is still running ({status}): stop it first (the Stop button of the Train tab, or "
                "{command}), then delete it.",
                run=name,
                status=st["status"],
                command=stop_command(path),
            )
        )
    RunDir(path).status_path.unlink(missing_ok=True)
    shutil.rmtree(path)  # (on Linux it removes links inside the folder without following them)
    return path


def stop_requested(run_dir: str | Path) -> bool:
    return RunDir(run_dir).stop_path.exists()


CARD = """---
{{ card_data }}
---

# {{ name }}

A LoRA adapter for `{{ base }}`, trained with LoRA Lab ({{ backend }} backend).
{{ base_note }}

## Training data

`{{ dataset }}`: {{ train_rows }} training rows, {{ val_rows }} validation rows, {{ template }} template
(the exact rows are in `data/` next to this card; the zip export and a Hub push carry them).
{{ lineage }}

## Training procedure

{{ hyperparameters }}

## Results

{{ metrics }}

## How to use

Run from the folder that holds this one (`{{ name }}/`), prompted as it was trained:

```python
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

base = AutoModelForCausalLM.from_pretrained("{{ base }}")
tokenizer = AutoTokenizer.from_pretrained("{{ base }}")
model = PeftModel.from_pretrained(base, "{{ name }}")
prompt = {{ prompt_code }}
ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
out = model.generate(ids, max_new_tokens=64, do_sample=False)
print(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
```
Repeat this run: `python -m lora_demo train --config {{ name }}/config.yaml`

## Framework versions

- {{ versions }}
"""


def _card_metrics(status: dict) -> str:
    lines = [
        f"- status: {status.get('status')}",
        f"- optimizer steps: {status.get('step')} of {status.get('total_steps')}",
    ]
    for key, label in (
        ("final_loss", "final training loss"),
        ("first_loss", "first logged training loss"),
        ("eval_loss", "validation loss"),
        ("reward_margin", "final DPO reward margin"),
        ("reward_accuracy", "final DPO reward accuracy"),
        ("first_reward", "first GRPO mean reward"),
        ("reward", "final GRPO mean reward"),
        ("eval_reward", "held-out GRPO mean reward"),
    ):
        if status.get(key) is not None:
            lines.append(f"- {label}: {status[key]:.4f}")
    if status.get("started") and status.get("ended"):
        lines.append(f"- duration: {status['ended'] - status['started']:.1f} s on {status.get('device', '?')}")
    return "\n".join(lines)


def _lineage(settings: dict, status: dict) -> str:
    lines = []
    if settings.get("method") == "dpo":
        source = settings.get("dataset", "")
        if source.strip() == "votes:":
            source = f"votes: (the blind votes on {settings.get('init_adapter')})"
        pairs = int(status.get("train_rows") or 0) + int(status.get("val_rows") or 0)
        lines.append(
            f"\nTrained with DPO on {pairs} preference pairs from `{source}` (beta {settings.get('dpo_beta')}; "
            f"{status.get('train_rows', '?')} trained on, {status.get('val_rows', 0)} held out); the "
            "reference model was its parent adapter, frozen."
        )
    if settings.get("method") == "grpo":
        prompts = int(status.get("train_rows") or 0) + int(status.get("val_rows") or 0)
        start = "its parent adapter" if settings.get("init_adapter") else "the base model (new LoRA factors)"
        lines.append(
            f"\nTrained with GRPO (reward tuning) on {prompts} prompts from `{settings.get('dataset', '')}` "
            f"({status.get('train_rows', '?')} trained on, {status.get('val_rows', 0)} held out), starting "
            f"from {start}: {settings.get('grpo_generations')} answers sampled per prompt (up to "
            f"{settings.get('grpo_max_tokens')} new tokens, temperature {settings.get('grpo_temperature')}), "
            f"scored by the rewards {', '.join(f'`{r}`' for r in described(settings.get('rewards') or []))} "
            "(the run's reward is their weighted mean, from 0 to 1)."
        )
    if settings.get("init_adapter"):
        lines.append(
            f"\nContinued from the adapter `{settings['init_adapter']}` (its parent): training started from "
            "its LoRA factors, not new ones."
        )
    if status.get("resumes"):
        steps = ", ".join(str(r.get("step")) for r in status["resumes"])
        lines.append(f"\nResumed from checkpoint(s) at step {steps}.")
    return "\n".join(lines)


def _framework_versions() -> str:
    import peft
    import torch
    import transformers
    import trl

    return f"PEFT {peft.__version__}, Transformers {transformers.__version__}, TRL {trl.__version__}, PyTorch {torch.__version__}"


def _prompt_code(settings: dict) -> str:
    """Python for the prompt of one question, in the run's format (the Alpaca text, or the chat template)."""
    question = "Who are you?"
    if settings.get("template") == "alpaca":
        return repr(ALPACA_NO_INPUT.format(instruction=question))
    think = "True" if settings.get("enable_thinking") else "False"
    return (
        f'tokenizer.apply_chat_template([{{"role": "user", "content": "{question}"}}], tokenize=False, '
        f"add_generation_prompt=True, enable_thinking={think})"
    )


def model_card(run_dir: Path, settings: dict, status: dict) -> str:
    """README.md in the Hugging Face model-card layout: base model, data, settings, final metrics."""
    from huggingface_hub import ModelCard, ModelCardData

    model = settings["model"]
    spec = REGISTRY.get(model)
    base = (spec.hub_id if spec else None) or model  # a name a stranger can load, where there is one
    data = ModelCardData(
        base_model=base,
        library_name="peft",
        pipeline_tag="text-generation",
        tags=["lora", settings.get("method") or "sft", "trl", "lora-lab", f"base_model:adapter:{base}"],
    )
    card = ModelCard.from_template(
        data,
        template_str=CARD,
        name=run_dir.name,
        base=base,
        base_note=spec.card_note if spec else "",
        prompt_code=_prompt_code(settings),
        dataset=settings["dataset"],
        template=settings["template"],
        backend=status.get("backend", "transformers"),
        train_rows=status.get("train_rows", "?"),
        val_rows=status.get("val_rows", 0),
        hyperparameters="\n".join(f"- {k}: {v}" for k, v in settings.items() if k not in ("model", "dataset")),
        metrics=_card_metrics(status),
        versions=_framework_versions(),
        lineage=_lineage(settings, status),
    )
    return str(card).rstrip("\n") + "\n"  # Jinja drops the final newline
