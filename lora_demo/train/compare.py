"""Compare runs: the loss curves of several run folders on one plot, and a table of what each reached and how it was
set (the Train tab's "Compare runs", `python -m lora_demo runs --compare RUN RUN ...`).

Everything comes from the files a run already writes: progress.jsonl (runs.read_progress: the curve as the run now
stands, resumes included), status.json (runs.run_summary: status, steps, wall time) and config.yaml (the settings).
Read only; the caller names the folders (LabEngine.compare_runs keeps them inside the runs folder).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from lora_demo.errors import InputError
from lora_demo.i18n import msg
from lora_demo.rundir import RunDir
from lora_demo.train.runs import read_progress, read_status, run_summary

# The table's columns, in order (keys of each row); COLUMN_LABELS gives their printed names.
COLUMNS = (
    "run",
    "status",
    "steps",
    "final_loss",
    "min_eval_loss",
    "final_eval_loss",
    "learning_rate",
    "r",
    "lora_alpha",
    "effective_batch",
    "tokens_per_s",
    "wall_s",
)
COLUMN_LABELS = {
    "run": "run",
    "status": "status",
    "steps": "steps",
    "final_loss": "final train loss",
    "min_eval_loss": "min eval loss",
    "final_eval_loss": "final eval loss",
    "learning_rate": "learning rate",
    "r": "r",
    "lora_alpha": "alpha",
    "effective_batch": "effective batch",
    "tokens_per_s": "tokens/s",
    "wall_s": "wall time (s)",
}
# Settings that differ between any two runs by nature, so naming them says nothing.
NOT_COMPARED = ("run_name", "node_rank")
MAX_RUNS = 12


def run_settings(run_dir: Path) -> dict:
    """The run's config.yaml as written (not re-validated: an older or foreign run still compares), {} if unreadable."""
    try:
        data = RunDir(run_dir).read_config()
    except (OSError, ValueError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def curves(progress: list[dict]) -> dict:
    """{"train": [[step, loss], ...], "eval": [[step, eval_loss], ...]} from a run's progress records."""
    train = [[p["step"], p["loss"]] for p in progress if p.get("type") == "log" and "loss" in p and "step" in p]
    evals = [[p["step"], p["eval_loss"]] for p in progress if p.get("type") == "eval" and "eval_loss" in p]
    return {"train": train, "eval": evals}


def _tokens_per_s(progress: list[dict]):
    """The run's average tokens/s (its last training's summary record), else the last logged recent speed."""
    summary = None
    for p in progress:
        if p.get("type") == "summary":
            summary = p
        elif p.get("stage") == "resumed":
            summary = None
    if summary and summary.get("tokens_per_s"):
        return summary["tokens_per_s"]
    return next(
        (p["tokens_per_s"] for p in reversed(progress) if p.get("type") == "log" and p.get("tokens_per_s")), None
    )


def _number(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def summary_row(run_dir: Path, settings: dict, progress: list[dict]) -> dict:
    """One row of the table (None where the run has no such value, e.g. no validation rows)."""
    info, status = run_summary(Path(run_dir)), read_status(run_dir)
    c = curves(progress)
    evals = [v for _, v in c["eval"]]
    micro = _number(status.get("micro_batch_size")) or _number(settings.get("micro_batch_size"))  # the worker's
    accum = _number(status.get("gradient_accumulation_steps")) or _number(settings.get("gradient_accumulation_steps"))
    procs = _number(status.get("num_processes")) or _number(settings.get("num_processes")) or 1
    effective = int(micro * accum * procs) if micro and accum else None
    final = c["train"][-1][1] if c["train"] else _number(info.get("final_loss"))
    return {
        "run": Path(run_dir).name,
        "status": info["status"],
        "steps": info.get("step"),
        "final_loss": final,
        "min_eval_loss": min(evals) if evals else None,
        "final_eval_loss": evals[-1] if evals else _number(info.get("eval_loss")),
        "learning_rate": settings.get("learning_rate"),
        "r": settings.get("r"),
        "lora_alpha": settings.get("lora_alpha"),
        "effective_batch": effective,
        "tokens_per_s": _tokens_per_s(progress),
        "wall_s": info.get("duration_s"),
    }


def differences(settings: list[dict]) -> dict[str, list]:
    """{setting: [its value in each run]} for every setting whose value is not the same in all of them."""
    keys = list(dict.fromkeys(k for s in settings for k in s))
    return {
        k: [s.get(k) for s in settings]
        for k in keys
        if k not in NOT_COMPARED and any(s.get(k) != settings[0].get(k) for s in settings)
    }


def compare_runs(run_dirs: list[Path]) -> dict:
    """{"runs": [row per run, COLUMNS keys], "curves": {run: {"train": [[step, loss]], "eval": [...]}},
    "differs": {setting: [value per run]}} for the given run folders (in that order)."""
    run_dirs = [Path(d) for d in dict.fromkeys(run_dirs)]
    if not run_dirs:
        raise InputError(msg("Pick the runs to compare (two or more: e.g. two learning rates)."))
    if len(run_dirs) > MAX_RUNS:
        raise InputError(msg("Compare at most {n} runs at once (got {count}).", n=MAX_RUNS, count=len(run_dirs)))
    for d in run_dirs:
        if not RunDir(d).is_run():
            raise InputError(msg("{path} is not a run folder (it has no status.json).", path=str(d)))
    settings = [run_settings(d) for d in run_dirs]
    progress = [read_progress(d) for d in run_dirs]
    return {
        "runs": [summary_row(d, s, p) for d, s, p in zip(run_dirs, settings, progress, strict=True)],
        "curves": {d.name: curves(p) for d, p in zip(run_dirs, progress, strict=True)},
        "differs": differences(settings),
    }


def cell_text(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-2 or abs(value) >= 1e5 else f"{value:.4f}".rstrip("0").rstrip(".")
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def table_text(result: dict) -> str:
    """The comparison as the CLI prints it: the runs table, then the settings that differ (pandas' to_string)."""
    import pandas as pd

    rows = [[cell_text(r[k]) for k in COLUMNS] for r in result["runs"]]
    out = pd.DataFrame(rows, columns=[COLUMN_LABELS[k] for k in COLUMNS]).to_string(index=False)
    names = [r["run"] for r in result["runs"]]
    if result["differs"]:
        diff = pd.DataFrame(
            [[k, *map(cell_text, v)] for k, v in result["differs"].items()], columns=["setting", *names]
        )
        out += "\n\nsettings that differ:\n" + diff.to_string(index=False)
    elif len(names) > 1:
        out += "\n\nsame settings in every run"
    return out
