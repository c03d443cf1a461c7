"""A training worker started before it is needed, so pressing Train does not wait for the imports.

Importing Unsloth (on a CPU machine transformers, PEFT and TRL) is a large part of the wait before step 1 (README's
Performance section). While the user edits settings (each edit asks for a plan), the Runner keeps one process that
has already imported them and waits for a run folder on its stdin:

    python -m lora_demo.train.prewarm READY_FILE      (the Runner starts it; READY_FILE appears once imported)

Given the worker's arguments (one JSON line), it sends its output to the run's train.log (the import messages first) and runs exactly what
`python -m lora_demo.train.worker RUN_DIR` runs. It is used only when the environment it was started with is the
one the run would get (e.g. the same LORA_LAB_BACKEND); otherwise it is ended and a fresh worker starts. It ends on
its own when its stdin closes (the app exited or discarded it). While it waits it holds a CUDA context
(~0.5 GB of GPU memory) and the imported libraries' RAM. On by default with a CUDA GPU;
LORA_LAB_PREWARM=1/0 turns it on or off (on a 2-core CPU machine the imports would compete with the browser).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from lora_demo import env
from lora_demo.io import open_fd
from lora_demo.rundir import RunDir
from lora_demo.train import worker


def wanted() -> bool:

    try:
        import torch

        cuda = torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        cuda = False
    return env.prewarm(cuda)


class WarmWorker:
    """At most one pre-imported worker process, waiting for a run folder."""

    def __init__(self):
        self.lock = threading.Lock()
        self.proc: subprocess.Popen | None = None
        self.env: dict[str, str] | None = None
        self.folder: Path | None = None
        self.started = 0.0

    def start(self, env: dict[str, str]) -> None:
        """Have one pre-imported worker for this environment (a no-op when it exists already)."""
        with self.lock:
            if self._alive() and self.env == env:
                return
            self._discard()
            self.folder = Path(tempfile.mkdtemp(prefix="lora-lab-prewarm-"))
            with open(self.folder / "prewarm.log", "w", encoding="utf-8") as log:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "lora_demo.train.prewarm", str(self.folder / "ready")],
                    stdin=subprocess.PIPE,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                    text=True,
                )
            self.env, self.started = dict(env), time.time()

    def ready(self) -> bool:
        """Whether the waiting worker has finished its imports."""
        with self.lock:
            return self._alive() and (self.folder / "ready").is_file()

    def take(self, worker_args: list[str], env: dict[str, str], append: bool = False) -> subprocess.Popen | None:
        """Hand the worker's arguments (RUN_DIR [--resume]) to the waiting worker and return its process; None when
        there is none for this environment (then the caller starts a fresh worker). append: add to train.log."""
        with self.lock:
            if not (self._alive() and self.env == env):
                self._discard()
                return None
            proc = self.proc
            try:
                proc.stdin.write(json.dumps({"argv": list(worker_args), "append": append}) + "\n")
                proc.stdin.close()
            except OSError:  # it died just now
                self._discard()
                return None
            self.proc = self.env = self.folder = None  # the worker reads its import log, then removes the folder
            return proc

    def discard(self) -> None:
        with self.lock:
            self._discard()

    def _alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _discard(self) -> None:
        proc, self.proc, self.env = self.proc, None, None
        if proc is None:
            return
        if self.folder is not None:  # its ready file and import log (a worker that took a run removed them itself)
            shutil.rmtree(self.folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            proc.stdin.close()
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)  # it holds no run yet: nothing is lost
        threading.Thread(target=proc.wait, daemon=True).start()  # reap it


def warm_imports() -> None:
    """What the worker would import first: Unsloth before transformers (it patches them) when it is the backend."""
    from lora_demo.device import detect  # deferred: device imports torch

    plan = detect()
    if plan.backend == "unsloth":
        import unsloth  # noqa: F401
        from unsloth import FastLanguageModel  # noqa: F401
    import datasets  # noqa: F401
    import peft  # noqa: F401
    import torch
    import transformers  # noqa: F401
    from trl import SFTConfig, SFTTrainer  # noqa: F401

    import lora_demo.train.batching  # noqa: F401
    import lora_demo.train.callback  # noqa: F401
    import lora_demo.train.worker  # noqa: F401
    from lora_demo.data import build_example  # noqa: F401
    from lora_demo.models import load_model  # noqa: F401

    if plan.device == "cuda":
        torch.cuda.init()  # the CUDA context too


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ready = Path(argv[0])
    t0 = time.time()
    warm_imports()
    print(f"prewarm: imports done in {time.time() - t0:.1f} s", flush=True)
    ready.write_text(f"{time.time() - t0:.1f}\n")
    line = sys.stdin.readline().strip()
    if not line:
        return 0  # discarded, or the app ended
    order = json.loads(line)
    run_dir = Path(order["argv"][0])
    early = (ready.parent / "prewarm.log").read_text(encoding="utf-8", errors="replace")
    shutil.rmtree(ready.parent, ignore_errors=True)
    sys.stdout.flush()
    sys.stderr.flush()
    mode = os.O_APPEND if order.get("append") else os.O_TRUNC
    fd = open_fd(RunDir(run_dir).log_path, os.O_WRONLY | os.O_CREAT | mode)  # never through a planted link
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    print(early, end="", flush=True)

    return worker.main(order["argv"])


if __name__ == "__main__":
    sys.exit(main())
