"""Runner: starts one training at a time as a separate process, watches it, stops it.

The worker is a fresh interpreter (`python -m lora_demo.train.worker RUN_DIR`, its own session), so the app
survives whatever happens to it. Progress travels through files in the run folder, which also lets a reloaded
page, a second browser or a restarted app re-attach to a running job.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from lora_demo.data import resolve_rows, split_rows, validate_rows
from lora_demo.data.preferences import checked_pairs, pairs_to_jsonl, resolve_pairs
from lora_demo.data.store import rows_to_jsonl
from lora_demo.errors import InputError
from lora_demo.i18n import Msg, joined, msg
from lora_demo.io import open_fd, write_atomic
from lora_demo.rundir import RunDir
from lora_demo.train.checkpoints import pick_for_resume, resumable, step_of
from lora_demo.train.grpo import checked_prompts, checked_rewards, resolve_prompts
from lora_demo.train.lineage import parent_problems
from lora_demo.train.plan import process_problems
from lora_demo.train.prewarm import WarmWorker, wanted
from lora_demo.train.runs import (
    ACTIVE,
    FINAL,
    OWNER_ENV,
    error_fields,
    is_foreign,
    new_run_dir,
    process_start,
    read_status,
    reconcile_runs,
    request_stop,
    run_dirs,
    settled,
    stop_command,
    this_host,
    update_status,
)
from lora_demo.train.settings import TrainSettings, tracker_problems


def resolve_data(settings: TrainSettings, data_dir: str | Path = "data", runs_dir: str | Path = "runs") -> list[dict]:
    """What a run trains on: instruction rows (resolve_rows), or for a DPO run its preference pairs as they are
    (data/preferences.py: votes:<run> or a file; check them with preferences.check_pairs)."""
    if settings.method == "dpo":
        return resolve_pairs(settings.dataset, runs_dir, settings.init_adapter, data_dir)
    if settings.method == "grpo":  # prompts: instruction rows or a prompt file (train/grpo.py; check_prompts)
        return resolve_prompts(settings.dataset, data_dir)
    return resolve_rows(settings.dataset, data_dir)


def worker_command(run_dir: Path, settings: TrainSettings | None = None, resume: bool = False) -> list[str]:
    """One worker process, or settings.num_processes of them under torchrun (DDP). torchrun ends every rank when one
    dies, and exits non-zero, so a failed rank fails the whole run and leaves none behind.

    Several machines: torchrun's static rendezvous (a TCPStore on node 0 at master_addr:master_port), so node
    ranks are the ones given and global rank 0, which writes the run folder, is on node 0 (the c10d rendezvous
    numbers the nodes in the order they join). No restarts: a lost machine fails the run."""
    worker = ["-m", "lora_demo.train.worker", str(run_dir), *(["--resume"] if resume else [])]
    procs, nodes = (settings.num_processes, settings.num_nodes) if settings else (1, 1)
    if procs * nodes <= 1:
        return [sys.executable, *worker]
    torchrun = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={procs}"]
    if nodes <= 1:
        return [*torchrun, "--standalone", *worker]
    return [
        *torchrun,
        f"--nnodes={nodes}",
        f"--node-rank={settings.node_rank}",
        f"--master-addr={settings.master_addr}",
        f"--master-port={settings.master_port}",
        "--max-restarts=0",
        *worker,
    ]


def clean_env(env: dict[str, str]) -> dict[str, str]:
    """The app's environment without torch.distributed's variables: an app started under torchrun (or with RANK
    left set) must not make a single worker believe it is a rank of another job."""
    dist = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT")
    return {k: v for k, v in env.items() if k not in (*dist, OWNER_ENV)}  # (an owner is the Runner's own choice)


def ddp_env(world_size: int) -> dict[str, str]:
    """Environment for a DDP run: NCCL's NVLink multicast (NVLS) off (it is not supported on every host here)."""
    return {"NCCL_NVLS_ENABLE": "0", "OMP_NUM_THREADS": "1"} if world_size > 1 else {}


def _refuse_status(run_dir: Path, st: dict) -> None:
    """An InputError unless the run's settled status st lets it resume in place: stopped or failed, on one
    machine (the other machines' ranks would need the checkpoint's files too)."""
    if st.get("status") == "completed":
        raise InputError(
            msg(
                "{run} completed: nothing to resume. 'Continue training' starts a new run from "
                "its adapter (with more epochs, or new data).",
                run=run_dir.name,
            )
        )
    if st.get("status") not in ("stopped", "failed"):
        raise InputError(
            msg("{run} cannot be resumed (status: {status}).", run=run_dir.name, status=st.get("status", "unknown"))
        )
    nodes = st.get("num_nodes") or 1
    if nodes > 1:
        raise InputError(
            msg(
                "{run} trained on {nodes} machines: a run over several machines does not resume. "
                "Continue from its newest checkpoint instead, on every machine: python -m "
                "lora_demo train --continue-from {ckpts}/checkpoint-N --node-rank R (the same "
                "settings otherwise; copy that checkpoint to the same path on every machine "
                "unless the runs folder is shared).",
                run=run_dir.name,
                nodes=nodes,
                ckpts=str(RunDir(run_dir).checkpoints_dir),
            )
        )


class Runner:
    """One training at a time for a runs folder.

    Reading (current) never writes. Two things record a result on disk: the thread that waits for this Runner's
    own worker (its exit reason, e.g. SIGKILL, when the worker could not record one), and reap(), which marks
    failed the runs whose worker vanished (an earlier app's, a killed CLI's).

    attached: the worker ends when this process ends, even by SIGKILL (the CLI without --detach; worker.die_with_owner;
    start runs from a thread that lives as long as the process). The app's workers are not attached: a run outlives
    an app restart, and the restarted app re-attaches it.
    """

    def __init__(
        self,
        runs_dir: str | Path,
        data_dir: str | Path = "data",
        before_start: list[Callable[[], None]] | None = None,
        attached: bool = False,
        shared: bool = False,
    ):
        self.runs_dir = Path(runs_dir)
        self.shared = shared  # the app is reachable beyond this machine: python rewards are refused (train/rewards.py)
        self.attached = attached
        self.data_dir = Path(data_dir)
        # Called before a training starts, e.g. the chat engine releasing the model it holds on the GPU.
        self.before_start: list[Callable[[], None]] = list(before_start or [])
        self.lock = threading.RLock()  # start() and reap(): a run being launched is never reaped half-made
        self.proc: subprocess.Popen | None = None
        self.run_dir: Path | None = None
        self._waiter: threading.Thread | None = None
        self.warm = WarmWorker()  # a pre-imported worker for the next start (prewarm.py)

    # --- state (read only) ---
    def _own_running(self) -> bool:
        """Whether this Runner's worker is running (or its exit is being recorded)."""
        return self._waiter is not None and self._waiter.is_alive()

    def current(self) -> Path | None:
        """The active run's folder (this app's, or one left running by an earlier app), else None. Writes nothing."""
        if self._own_running():
            if read_status(self.run_dir).get("status") not in FINAL:
                return self.run_dir
            # The worker has recorded its result and is only shutting its interpreter down: not a running job.
            return None
        for run_dir in run_dirs(self.runs_dir)[:20]:
            st = read_status(run_dir)
            if not is_foreign(st) and settled(run_dir, st).get("status") in ACTIVE:  # (another host's GPUs are its own)
                return run_dir
        return None

    # --- recording ---
    def reap(self) -> list[Path]:
        """Record as failed every run whose status says active but whose worker is gone; returns those folders.

        For the UI's runs-refresh button; start() calls it too. This Runner's own worker is left to its waiter,
        which records the exact exit reason."""
        with self.lock:
            return reconcile_runs(self.runs_dir, skip=(self.run_dir,) if self._own_running() else ())

    @staticmethod
    def _wait_for_exit(proc: subprocess.Popen, run_dir: Path) -> None:
        """The waiter thread: when the worker exits without recording why (SIGKILL, crash), record it here."""
        code = proc.wait()
        st = read_status(run_dir)
        # Only its own run: a resumed run in the same folder has another pid, and its status is not this exit's.
        if st.get("status") in ACTIVE and st.get("pid") == proc.pid:
            update_status(run_dir, status="failed", ended=time.time(), **error_fields(exit_reason(code)))

    # --- actions ---
    def start(self, settings: TrainSettings, rows: list[dict] | None = None) -> Path:
        """Check, snapshot the data, and launch the worker. Raises InputError when a run is active or input is bad."""

        if settings.method == "grpo":  # before the lock: importing a python reward's file may take up to 2 minutes
            checked_rewards(settings, shared=self.shared)
        with self.lock:
            self.reap()
            self._refuse_if_active(job=job_key(settings) if settings.num_nodes > 1 else "")
            if settings.method == "dpo":  # preference pairs, not instruction rows (data/preferences.py)
                rows = checked_pairs(settings.dataset, self.runs_dir, settings.init_adapter, rows, self.data_dir)
            elif settings.method == "grpo":  # prompts (train/grpo.py); the rewards' files were imported above
                settings, rows = checked_prompts(settings, self.data_dir, rows, shared=self.shared, files=False)
            else:
                rows = resolve_rows(settings.dataset, self.data_dir) if rows is None else rows
                errors = validate_rows(rows)["errors"]
                if errors:
                    shown = joined(
                        [msg("row {row}: {message}", row=e["row"], message=e["message"]) for e in errors[:5]]
                    )
                    raise InputError(
                        msg(
                            "The dataset has {n} error(s), which block training: {errors}.", n=len(errors), errors=shown
                        )
                    )
            self._refuse_too_many_processes(settings)
            self._refuse_bad_parent(settings)
            for hook in self.before_start:
                hook()
            suffix = f"-node{settings.node_rank}" if settings.node_rank else ""  # another machine's own folder
            run_dir = new_run_dir(self.runs_dir, settings.model, settings.dataset, settings.run_name, suffix)
            self._snapshot(run_dir, settings, rows)
            self._launch(run_dir, settings)
            return run_dir

    def resume(self, run_dir: str | Path) -> tuple[Path, list[Msg]]:
        """Continue a stopped or failed run from its newest whole checkpoint, in the same folder: the same step
        count, curve and progress file. Returns (the checkpoint, a message per broken newer one set aside)."""

        run_dir = Path(run_dir)
        with self.lock:
            self._let_own_run_end(run_dir)
            self.reap()
            self._refuse_if_active(also=run_dir)  # (a run of another runs folder, e.g. the CLI's --resume PATH)
            st = settled(run_dir, read_status(run_dir))
            self._refuse_unresumable(run_dir, st)
            settings = load_settings(run_dir)
            self._refuse_too_many_processes(settings)
            for hook in self.before_start:
                hook()
            ckpt, skipped = pick_for_resume(run_dir)  # sets the broken ones aside before any rank reads
            RunDir(run_dir).stop_path.unlink(missing_ok=True)
            gone = ("error", "error_msg", "ended", "pid", "pid_start", "notices", "prepared")
            kept = {k: v for k, v in st.items() if k not in gone}
            resumes = [*st.get("resumes", []), {"step": step_of(ckpt), "time": time.time()}]
            RunDir(run_dir).write_status({**kept, "status": "starting", "resumes": resumes, "notices": skipped})
            self._launch(run_dir, settings, resume=True)
            return ckpt, skipped

    def _let_own_run_end(self, run_dir: Path) -> None:
        """When this Runner's own run of run_dir has said it stopped but is still shutting down, wait up to a
        minute for it to free its memory; an InputError if it is still there then."""
        if self._own_running() and self.run_dir == run_dir and read_status(run_dir).get("status") in FINAL:
            self._waiter.join(60)
            if self._waiter.is_alive():
                raise InputError(msg("{run} is still shutting down; press Resume again in a moment.", run=run_dir.name))

    def _refuse_unresumable(self, run_dir: Path, st: dict) -> None:
        """An InputError unless the run (its settled status st) can resume: stopped or failed, on one machine,
        with its rewards allowed here (GRPO) and a whole checkpoint."""

        _refuse_status(run_dir, st)
        if self.shared and st.get("method") == "grpo":  # python rewards are refused here (train/grpo.py)
            checked_rewards(load_settings(run_dir), shared=True, files=False)
        ckpt, skipped = resumable(run_dir)
        if ckpt is None:
            why = joined(skipped, sep=" ") or msg(
                "It saved no checkpoint (checkpoints were off, or it ended before the first)."
            )
            raise InputError(
                msg(
                    "{run} has no whole checkpoint to resume from. {why} Start it again with the same "
                    "settings, or use 'Continue training' if it has an adapter.",
                    run=run_dir.name,
                    why=why,
                )
            )

    @staticmethod
    def _refuse_bad_parent(settings: TrainSettings) -> None:

        problems = parent_problems(settings)
        if problems:
            raise InputError(msg("Cannot continue training: {problems}.", problems=joined(problems)))

    @staticmethod
    def _refuse_too_many_processes(settings: TrainSettings) -> None:
        """Processes this machine cannot hold, FSDP where it cannot run, a tracker whose package is missing."""
        from lora_demo.device import detect  # deferred: device imports torch

        s = settings
        problems = process_problems(s.num_processes, detect().device, s.fsdp, s.load_in_4bit)
        if problems:
            raise InputError(problems[0])
        missing = tracker_problems(s.report_to, installed=True)
        if missing:
            raise InputError(msg("Invalid settings: {problems}.", problems=joined(missing)))

    def _refuse_if_active(self, also: Path | None = None, job: str = "") -> None:
        """Refuse while a run is active; on a shared disk the other machines' parts of the same multi-node run
        (the same job key) do not count."""
        active = self.current()
        if active is not None and job and read_status(active).get("job") == job:
            others = [d for d in run_dirs(self.runs_dir)[:20] if read_status(d).get("job") != job]
            active = next((d for d in others if settled(d, read_status(d)).get("status") in ACTIVE), None)
        if active is None and also is not None and settled(also, read_status(also)).get("status") in ACTIVE:
            active = also
        if active is not None:
            st = read_status(active)
            since = time.strftime("%H:%M:%S", time.localtime(st.get("started", time.time())))
            how = stop_command(active)
            if st.get("total_steps"):
                raise InputError(
                    msg(
                        "A training run is in progress: {run} ({status}, step {step}/{total}), started at "
                        "{since}. Wait for it or stop it first (the Stop button of the Train tab, or "
                        "{command}); one training runs at a time.",
                        run=active.name,
                        status=st.get("status"),
                        step=st.get("step", 0),
                        total=st["total_steps"],
                        since=since,
                        command=how,
                    )
                )
            raise InputError(
                msg(
                    "A training run is in progress: {run} ({status}), started at {since}. Wait for it or "
                    "stop it first (the Stop button of the Train tab, or {command}); one training runs at "
                    "a time.",
                    run=active.name,
                    status=st.get("status"),
                    since=since,
                    command=how,
                )
            )

    @staticmethod
    def _snapshot(run_dir: Path, settings: TrainSettings, rows: list[dict]) -> None:
        """The exact rows and settings of the run into its folder: all the worker reads."""

        train, val = split_rows(rows, settings.val_fraction, settings.seed)
        to_jsonl = pairs_to_jsonl if settings.method == "dpo" else rows_to_jsonl  # DPO: prompt/chosen/rejected rows
        folder = RunDir(run_dir)
        write_atomic(folder.train_rows_path, to_jsonl(train))
        write_atomic(folder.val_rows_path, to_jsonl(val))
        write_atomic(folder.config_path, settings.to_yaml())
        parent = {"parent": settings.init_adapter} if settings.init_adapter else {}
        parent.update({"method": settings.method} if settings.method != "sft" else {})  # (lineage: SFT → DPO)
        job = (
            {"num_nodes": settings.num_nodes, "node_rank": settings.node_rank, "job": job_key(settings)}
            if (settings.num_nodes > 1)
            else {}
        )
        update_status(
            run_dir,
            status="starting",
            started=time.time(),
            host=this_host(),
            model=settings.model,
            dataset=settings.dataset,
            train_rows=len(train),
            val_rows=len(val),
            **parent,
            **job,
        )

    def _launch(self, run_dir: Path, settings: TrainSettings, resume: bool = False) -> None:
        """The worker in its own session (a signal to the app's group never reaches it), and its waiter thread. An
        attached Runner names itself the worker's owner: the worker ends when this process ends."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
        owner = {OWNER_ENV: f"{os.getpid()}:{process_start(os.getpid()) or ''}"} if self.attached else {}
        # A resumed run appends to its log: the first part's lines (and why it ended) stay readable.
        mode = os.O_APPEND if resume else os.O_TRUNC  # never through a planted link (open_fd)
        log_fd = open_fd(RunDir(run_dir).log_path, os.O_WRONLY | os.O_CREAT | mode)
        with os.fdopen(log_fd, "w", encoding="utf-8") as log:
            if resume:
                log.write(f"\n===== resumed at {time.strftime('%Y-%m-%d %H:%M:%S')} =====\n")
                log.flush()
            proc = self._popen(
                worker_command(run_dir, settings, resume),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**clean_env(env), **ddp_env(settings.world_size), **owner},
                start_new_session=True,
            )
        self.proc, self.run_dir = proc, run_dir
        update_status(
            run_dir,
            pid=proc.pid,
            pid_start=process_start(proc.pid),
            num_processes=settings.world_size,
            host=this_host(),
        )
        self._waiter = threading.Thread(
            target=self._wait_for_exit, args=(proc, run_dir), daemon=True, name=f"wait-{run_dir.name}"
        )
        self._waiter.start()

    def prewarm(self) -> None:
        """Keep one worker with the training libraries imported for the next start (prewarm.py): called while the
        user edits settings; nothing while a run is active or where prewarming is off (CPU by default)."""

        if wanted() and self.current() is None:
            self.warm.start(clean_env({**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}))

    def _popen(self, cmd: list[str], **kw) -> subprocess.Popen:
        """The pre-imported worker when one waits with this very environment (a plain single-process start), else
        a fresh process."""
        if cmd[1:3] == ["-m", "lora_demo.train.worker"]:
            proc = self.warm.take(cmd[3:], kw["env"], append=getattr(kw.get("stdout"), "mode", "w") == "a")
            if proc is not None:
                return proc
        return subprocess.Popen(cmd, **kw)

    def stop(self, wait: float = 0.0) -> Path | None:
        """Ask the active run to stop (runs.request_stop; runs.stop_notice says what that will do at its stage)."""
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
        if self._own_running():
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                os.killpg(self.proc.pid, signal.SIGKILL)
            self._waiter.join(10)  # when this returns, the waiter has recorded the exit reason

    def wait(self, timeout: float | None = None) -> dict:
        """Block until the active run ends; returns its final status."""
        run_dir = self.run_dir
        deadline = None if timeout is None else time.time() + timeout
        while self.current() is not None:
            if deadline and time.time() > deadline:
                raise TimeoutError(f"run {run_dir} still active after {timeout} s")
            time.sleep(0.25)
        return read_status(run_dir) if run_dir else {}


def exit_reason(code: int | None) -> Msg:
    """Why a worker that exited with this code (negative: killed by that signal) did not finish."""
    if code is not None and code < 0:
        sig = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        if -code == signal.SIGKILL:
            return msg("The training process was killed ({signal}): most likely out of memory.", signal=sig)
        return msg("The training process was killed ({signal}).", signal=sig)
    return msg("The training process exited with code {code} without finishing; see train.log.", code=code)


def job_key(settings: TrainSettings) -> str:
    """What the machines of one multi-node run share: the rendezvous address and the run name."""
    return f"{settings.master_addr}:{settings.master_port}/{settings.run_name}"


def load_settings(run_dir: str | Path) -> TrainSettings:
    return TrainSettings.from_yaml(RunDir(run_dir).config_path)


def equivalent_command(run_dir: str | Path) -> str:
    return f"python -m lora_demo train --config {RunDir(run_dir).config_path}"


__all__ = ["Runner", "equivalent_command", "exit_reason", "load_settings", "resolve_data", "resolve_rows"]
