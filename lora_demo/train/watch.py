"""What changed in a run folder since the last look: the Train tab polls this every 2 s.

Watching must cost the training next to nothing (on 2 cores the page and the worker share the CPU), so a look
reads two small files and stats two more, and reports only what changed: the progress bar on every new step,
the log when the log grew, the curve when there are new points but at most every CURVE_EVERY_S seconds (and
always at the end of a run, or when another run is shown). Anything unchanged is reported as None, and the
UI sends nothing for it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from lora_demo.rundir import RunDir
from lora_demo.train.runs import FINAL, log_tail, read_progress, read_status

CURVE_EVERY_S = 5.0
LOG_EVERY_S = 3.0


@dataclass
class Look:
    """One look at a run: each field is None when it did not change since the last look."""

    status: dict | None = None
    progress: list[dict] | None = None  # the records, when the bar or the curve needs them
    curve: bool = False  # whether the curve should be redrawn from `progress`
    log: str | None = None
    seen: dict = field(default_factory=dict)  # hand this back on the next look

    @property
    def changed(self) -> bool:
        return self.status is not None or self.log is not None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def look(run_dir: str | Path, seen: dict | None = None, now: float | None = None) -> Look:
    """What to redraw for run_dir, given what the previous look saw (None: draw everything)."""
    run_dir, seen, now = Path(run_dir), dict(seen or {}), time.time() if now is None else now
    new_run = seen.get("run") != str(run_dir)
    if new_run:
        seen = {"run": str(run_dir)}
    st = read_status(run_dir)
    # probes.jsonl too: the final probe answers land after the last progress record.
    folder = RunDir(run_dir)
    key = [st.get("status"), st.get("step"), _size(folder.progress_path), _size(folder.probes_path)]
    out = Look(seen=seen)
    final = st.get("status") in FINAL
    if key != seen.get("key"):
        seen["key"] = key
        out.status, out.progress = st, read_progress(run_dir)
        points = sum(1 for p in out.progress if p.get("type") in ("log", "eval"))
        seen["pending"] = seen.get("pending") or points != seen.get("points") or key[3] != (seen.get("probes") or -1)
        seen["probes"] = key[3]
        seen["points"] = points
    due = now - seen.get("curve_t", 0.0) >= CURVE_EVERY_S
    if new_run or (seen.get("pending") and (due or final)):
        out.progress = out.progress if out.progress is not None else read_progress(run_dir)
        out.curve, seen["curve_t"], seen["pending"] = True, now, False
    log_size = _size(folder.log_path)
    if log_size != seen.get("log_size") and (new_run or final or now - seen.get("log_t", 0.0) >= LOG_EVERY_S):
        out.log, seen["log_size"], seen["log_t"] = log_tail(run_dir), log_size, now
    return out
