"""Data-parallel training through torchrun: `--num-processes 2` on the CPU (gloo), as CI can run it.

The 2-process run must train on the same rows per optimizer step as a 1-process run with the same effective batch
(2 × micro 2 = 1 × micro 4), so with the same seed the logged losses agree; only rank 0 writes the run's files.
"""

from __future__ import annotations

import json
import signal
import time

import psutil
import pytest

from lora_demo.train.plan import optimizer_steps
from lora_demo.train.runner import Runner
from lora_demo.train.runs import read_progress, read_status
from lora_demo.train.settings import TrainSettings

pytestmark = pytest.mark.slow
COMMON = dict(
    model="qwen3-tiny",
    dataset="example:persona",
    max_seq_length=128,
    gradient_accumulation_steps=1,
    max_steps=4,
    val_fraction=0.0,
    learning_rate=5e-3,
    warmup=0,
    seed=3407,
)


def losses(run_dir) -> list[float]:
    return [p["loss"] for p in read_progress(run_dir) if p.get("type") == "log" and "loss" in p]


def test_two_processes_match_one_with_the_same_effective_batch(tmp_path):
    runner = Runner(tmp_path / "runs", tmp_path / "data")
    one = runner.start(TrainSettings(**COMMON, micro_batch_size=4, run_name="one"))
    assert runner.wait(300)["status"] == "completed"
    two = runner.start(TrainSettings(**COMMON, micro_batch_size=2, num_processes=2, run_name="two"))
    st = runner.wait(300)
    assert st["status"] == "completed", (two / "train.log").read_text()[-2000:]
    assert st["num_processes"] == 2 and st["backend"] == "transformers"
    assert len(losses(two)) == 4  # one record per step: only rank 0 wrote progress.jsonl
    assert losses(two) == pytest.approx(losses(one), rel=1e-3)
    assert [p.name for p in two.glob("adapter_model.safetensors")] == ["adapter_model.safetensors"]
    assert json.loads((two / "adapter_config.json").read_text())["base_model_name_or_path"] == "qwen3-tiny"


def test_the_plan_counts_steps_and_batch_across_processes():
    s = TrainSettings(
        model="qwen3-tiny", micro_batch_size=2, gradient_accumulation_steps=3, num_processes=2, num_epochs=1
    )
    steps = optimizer_steps(44, s)
    assert steps["effective_batch"] == 12  # micro × accumulation × processes
    assert steps["steps_per_epoch"] == 4  # 22 rows a process → 11 micro-batches → 4 optimizer steps


def test_one_dead_rank_fails_the_run_and_leaves_no_rank_behind(tmp_path):
    runner = Runner(tmp_path / "runs", tmp_path / "data")
    run = runner.start(TrainSettings(**{**COMMON, "max_steps": 5000}, micro_batch_size=2, num_processes=2))
    deadline = time.time() + 240
    while read_status(run).get("status") != "training" and time.time() < deadline:
        time.sleep(0.5)
    launcher = psutil.Process(read_status(run)["pid"])
    ranks = [p for p in launcher.children(recursive=True) if "lora_demo.train.worker" in " ".join(p.cmdline())]
    assert len(ranks) == 2
    ranks[1].send_signal(signal.SIGKILL)
    st = runner.wait(120)
    assert st["status"] == "failed" and st.get("error")
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in ranks)


def test_more_processes_than_the_machine_has_is_refused_before_anything_starts(tmp_path):
    import os

    from lora_demo.errors import InputError

    runner = Runner(tmp_path / "runs", tmp_path / "data")
    too_many = (os.cpu_count() or 1) + 1
    with pytest.raises(InputError, match=f"{too_many} processes asked for, but this machine has"):
        runner.start(TrainSettings(**COMMON, micro_batch_size=2, num_processes=too_many))
    assert not list((tmp_path / "runs").glob("*/status.json"))  # no run folder was made


def test_stopping_a_two_process_run_saves_the_adapter_and_ends_stopped(tmp_path):
    """Every rank must stop after the same step and exit cleanly: torchrun takes a non-zero exit for a crash and
    would end rank 0 while it saves."""
    runner = Runner(tmp_path / "runs", tmp_path / "data")
    run = runner.start(TrainSettings(**{**COMMON, "max_steps": 5000}, micro_batch_size=2, num_processes=2))
    deadline = time.time() + 240
    while (read_status(run).get("step") or 0) < 2 and time.time() < deadline:
        time.sleep(0.3)
    runner.stop()
    st = runner.wait(180)
    assert st["status"] == "stopped", st.get("error")
    assert (run / "adapter_model.safetensors").is_file() and (run / "README.md").is_file()
    assert 2 <= st["step"] < 5000
