"""The pre-imported worker (lora_demo/train/prewarm.py): started while settings are edited, it runs the next start."""

from __future__ import annotations

import os
import time

import psutil

from lora_demo.train.runner import Runner
from lora_demo.train.runs import read_progress
from lora_demo.train.settings import TrainSettings

TINY = dict(
    model="qwen3-tiny",
    dataset="example:persona",
    max_seq_length=64,
    micro_batch_size=4,
    warmup=0,
    max_steps=2,
    learning_rate=5e-3,
)


def _wait_ready(runner, timeout=120):
    deadline = time.time() + timeout
    while not runner.warm.ready():
        assert runner.warm.proc is not None and runner.warm.proc.poll() is None, "the prewarm process died"
        assert time.time() < deadline, "the prewarm process did not finish its imports"
        time.sleep(0.2)


def test_prewarmed_worker_runs_the_next_start(tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_LAB_PREWARM", "1")
    runner = Runner(tmp_path / "runs", tmp_path / "data")
    runner.prewarm()
    warm = runner.warm.proc
    _wait_ready(runner)
    runner.prewarm()  # asked again with the same environment: the same process, not a second one
    assert runner.warm.proc is warm
    run_dir = runner.start(TrainSettings(**TINY))
    assert runner.proc is warm and runner.warm.proc is None  # the waiting process took the run
    st = runner.wait(300)
    log = (run_dir / "train.log").read_text()
    assert st["status"] == "completed", log[-2000:]
    assert "prewarm: imports done" in log and len([p for p in read_progress(run_dir) if p.get("type") == "log"]) == 2
    assert (run_dir / "adapter_model.safetensors").is_file()


def test_a_changed_environment_gets_a_fresh_worker_and_the_old_one_ends(tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_LAB_PREWARM", "1")
    runner = Runner(tmp_path / "runs", tmp_path / "data")
    runner.prewarm()
    old, folder = runner.warm.proc, runner.warm.folder
    monkeypatch.setenv("LORA_LAB_BACKEND", "transformers")  # the run would get another environment
    run_dir = runner.start(TrainSettings(**TINY))
    assert runner.proc is not old
    assert runner.wait(300)["status"] == "completed", (run_dir / "train.log").read_text()[-2000:]
    assert "prewarm:" not in (run_dir / "train.log").read_text()
    old.wait(10)  # discarded: it does not linger, nor does its folder
    assert not folder.exists()
    assert not psutil.pid_exists(old.pid) or psutil.Process(old.pid).status() == psutil.STATUS_ZOMBIE


def test_prewarm_is_off_on_the_cpu_by_default_and_the_process_ends_with_its_stdin(tmp_path, monkeypatch):
    monkeypatch.delenv("LORA_LAB_PREWARM", raising=False)
    runner = Runner(tmp_path / "runs", tmp_path / "data")
    runner.prewarm()
    assert runner.warm.proc is None  # no CUDA here: nothing is started
    monkeypatch.setenv("LORA_LAB_PREWARM", "1")
    runner.prewarm()
    proc = runner.warm.proc
    proc.stdin.close()  # what happens when the app exits
    assert proc.wait(120) == 0
    assert os.environ.get("LORA_LAB_PREWARM") == "1"
