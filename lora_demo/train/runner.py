"""Runner: starts one training at a time as a separate process, watches it, stops it.

The worker is a fresh interpreter (`python -m lora_demo.train.worker RUN_DIR`, its own session), so the app
survives whatever happens to it. Progress travels through files in the run folder, which also lets a reloaded
page, a second browser or a restarted app re-attach to a running job.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from lora_demo.errors import InputError
from lora_demo.train.runs import (
    ACTIVE,
    FINAL,
    new_run_dir,
    read_status,
    reconcile,
    request_stop,
    update_status,
)
from lora_demo.train.settings import TrainSettings

# Functions called before a training starts, e.g. the Chat tab releasing the model it holds on the GPU.
BEFORE_TRAIN_HOOKS: list[Callable[[], None]] = []


def resolve_rows(dataset: str, data_dir: str | Path) -> list[dict]:
    """Rows of a dataset reference: 'example:<name>', a saved dataset name, or a file path."""
    from lora_demo.data import DatasetStore, import_file, load_example

    if dataset.startswith("example:"):
        return load_example(dataset.split(":", 1)[1])
    store = DatasetStore(data_dir)
    if dataset in store.names():
        return store.load(dataset)
    path = Path(dataset)
    if path.suffix.lower() in (".json", ".jsonl", ".csv", ".parquet") and path.is_file():
        res = import_file(path)
        if res.needs_mapping:
            raise InputError(
                f"{path.name}: its columns {res.columns} need mapping: import it in the Dataset tab first."
            )
        return res.rows
    raise InputError(
        f"Dataset {dataset!r} not found: use a saved dataset name ({', '.join(store.names()) or 'none saved yet'}), "
        "'example:persona', or the path of a .json/.jsonl/.csv/.parquet file."
    )


class Runner:
    """One training at a time for a runs folder."""

    def __init__(self, runs_dir: str | Path, data_dir: str | Path = "data"):
        self.runs_dir = Path(runs_dir)
        self.data_dir = Path(data_dir)
        self.lock = threading.Lock()
        self.proc: subprocess.Popen | None = None
        self.run_dir: Path | None = None

    # --- state ---
    def current(self) -> Path | None:
        """The active run's folder (this app's, or one left running by an earlier app), else None."""
        if self.proc is not None and self.proc.poll() is None:
            if read_status(self.run_dir).get("status") not in FINAL:
                return self.run_dir
            # The worker has recorded its result and is only shutting its interpreter down: not a running job.
            return None
        if self.proc is not None:
            self._reap()
        for p in sorted(self.runs_dir.glob("*/status.json"), key=lambda p: p.stat().st_mtime, reverse=True)[:20]:
            st = reconcile(p.parent, read_status(p.parent))
            if st.get("status") in ACTIVE:
                return p.parent
        return None

    def _reap(self) -> None:
        """The worker exited: if it could not record why (SIGKILL, crash), record it here."""
        code, run_dir = self.proc.returncode, self.run_dir
        self.proc = None
        st = read_status(run_dir)
        if st.get("status") in ACTIVE:
            if code is not None and code < 0:
                sig = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
                why = f"The training process was killed ({sig})"
                why += ": most likely out of memory." if -code == signal.SIGKILL else "."
            else:
                why = f"The training process exited with code {code} without finishing; see train.log."
            update_status(run_dir, status="failed", ended=time.time(), error=why)

    # --- actions ---
    def start(self, settings: TrainSettings, rows: list[dict] | None = None) -> Path:
        """Check, snapshot the data, and launch the worker. Raises InputError when a run is active or input is bad."""
        from lora_demo.data import split_rows, validate_rows
        from lora_demo.data.store import rows_to_jsonl

        with self.lock:
            active = self.current()
            if active is not None:
                st = read_status(active)
                since = time.strftime("%H:%M:%S", time.localtime(st.get("started", time.time())))
                step = f", step {st.get('step', 0)}/{st.get('total_steps', '?')}" if st.get("total_steps") else ""
                raise InputError(f"A training run is in progress: {active.name} ({st.get('status')}{step}), started at "
                                 f"{since}. Wait for it or stop it first; one training runs at a time.")  # fmt: skip
            rows = resolve_rows(settings.dataset, self.data_dir) if rows is None else rows
            errors = validate_rows(rows)["errors"]
            if errors:
                shown = "; ".join(f"row {e['row']}: {e['message']}" for e in errors[:5])
                raise InputError(f"The dataset has {len(errors)} error(s), which block training: {shown}.")
            for hook in BEFORE_TRAIN_HOOKS:
                hook()
            run_dir = new_run_dir(self.runs_dir, settings.model, settings.dataset, settings.run_name)
            train, val = split_rows(rows, settings.val_fraction, settings.seed)
            (run_dir / "data").mkdir()
            (run_dir / "data" / "train.jsonl").write_text(rows_to_jsonl(train), encoding="utf-8")
            (run_dir / "data" / "val.jsonl").write_text(rows_to_jsonl(val), encoding="utf-8")
            (run_dir / "config.yaml").write_text(settings.to_yaml(), encoding="utf-8")
            update_status(run_dir, status="starting", started=time.time(), model=settings.model,
                          dataset=settings.dataset, train_rows=len(train), val_rows=len(val))  # fmt: skip
            log = open(run_dir / "train.log", "w", encoding="utf-8")  # noqa: SIM115 - handed to the child
            env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
            root = str(Path(__file__).resolve().parents[2])
            env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "lora_demo.train.worker", str(run_dir)], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=env, start_new_session=True,
            )  # fmt: skip
            log.close()
            self.run_dir = run_dir
            update_status(run_dir, pid=self.proc.pid)
            return run_dir

    def stop(self, wait: float = 0.0) -> Path | None:
        """Ask the active run to stop after its current step (it then saves the adapter so far)."""
        run_dir = self.current()
        if run_dir is None:
            return None
        request_stop(run_dir)
        deadline = time.time() + wait
        while wait and time.time() < deadline and self.current() is not None:
            time.sleep(0.2)
        return run_dir

    def kill(self) -> None:
        """Hard stop (SIGKILL) of this app's worker: for tests of the failure path and a stuck worker."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def wait(self, timeout: float | None = None) -> dict:
        """Block until the active run ends; returns its final status."""
        run_dir = self.run_dir
        deadline = None if timeout is None else time.time() + timeout
        while self.current() is not None:
            if deadline and time.time() > deadline:
                raise TimeoutError(f"run {run_dir} still active after {timeout} s")
            time.sleep(0.25)
        return read_status(run_dir) if run_dir else {}


_RUNNERS: dict[str, Runner] = {}


def get_runner(runs_dir: str | Path, data_dir: str | Path = "data") -> Runner:
    """The one Runner of a runs folder in this process (so two browser sessions share it)."""
    key = str(Path(runs_dir).resolve())
    if key not in _RUNNERS:
        _RUNNERS[key] = Runner(runs_dir, data_dir)
    return _RUNNERS[key]


def load_settings(run_dir: str | Path) -> TrainSettings:
    return TrainSettings.from_yaml(Path(run_dir) / "config.yaml")


def equivalent_command(run_dir: str | Path) -> str:
    return f"python -m lora_demo train --config {Path(run_dir) / 'config.yaml'}"


__all__ = ["BEFORE_TRAIN_HOOKS", "Runner", "equivalent_command", "get_runner", "load_settings", "resolve_rows"]
