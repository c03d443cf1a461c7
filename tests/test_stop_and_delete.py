"""Issue 27, items 6 and 7: Stop says what it will do at each stage, the page says "Adapter saved" only when one
was, a run can be deleted (with a confirmation, never an active one, never outside the runs folder or through a
symlink), and a CLI run ends with its command unless --detach (then `stop` stops it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
from gradio_client.exceptions import AppError

from lora_demo.errors import InputError
from lora_demo.train.runs import read_status
from lora_demo.train.settings import TrainSettings
from lora_demo.ui.train_tab import FORM
from lora_demo.ui.views.train import progress_html

CLI_RUN = [
    "--model",
    "qwen3-tiny",
    "--dataset",
    "example:persona",
    "--max-steps",
    "3000",
    "--max-seq-length",
    "64",
    "--warmup",
    "0",
    "--save-steps",
    "-1",
    "--probe-tokens",
    "0",
]


def form(**over):
    values = {**TrainSettings(model="qwen3-tiny", max_seq_length=128, micro_batch_size=4, warmup=2).to_dict(), **over}
    return [values[k] for k in FORM]


def _wait(pred, timeout=120, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise TimeoutError(what)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # ended, waiting for a reaper
    except psutil.NoSuchProcess:
        return True


def _cli(*args, timeout=180):
    return subprocess.run(
        [sys.executable, "-m", "lora_demo", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def _run_names(client) -> list[str]:
    table, _ = client.predict(api_name="/train_runs")
    return [r[0] for r in table["data"]]


def test_stop_while_loading_says_nothing_is_saved_and_the_empty_run_can_be_deleted(app_client, app_dirs):
    started, *_ = app_client.predict(*form(max_steps=3000), api_name="/train_start")
    name = started.split("**")[1]
    run = app_dirs / "runs" / name
    assert read_status(run)["status"] in ("starting", "loading")  # the worker is still importing / loading
    with pytest.raises(AppError, match="is training: stop it first .*python -m lora_demo stop"):
        app_client.predict(name, True, api_name="/train_delete")
    told = app_client.predict(api_name="/train_stop")
    assert "training has not started yet" in told and "no adapter will be saved" in told, told
    assert "adapter so far" not in told
    _wait(lambda: read_status(run).get("status") in ("stopped", "failed", "completed"), what="the run to end")
    st = read_status(run)
    assert st["status"] == "stopped" and "no adapter was saved" in st["error"]
    assert not (run / "adapter_model.safetensors").exists()
    shown = progress_html(st, [], run)  # what the Train tab shows for it
    assert "No adapter was saved" in shown and "Adapter saved" not in shown
    # Delete needs the explicit confirmation, then removes it and the lists no longer have it.
    with pytest.raises(AppError, match="cannot be undone: confirm it"):
        app_client.predict(name, False, api_name="/train_delete")
    assert run.is_dir() and name in _run_names(app_client)
    said, table, view, *_ = app_client.predict(name, True, api_name="/train_delete")
    assert "Deleted" in said and not run.exists()
    assert name not in [r[0] for r in table["data"]] and view != name
    assert name not in _run_names(app_client)


def test_adapter_saved_is_said_only_when_the_file_is_there(tmp_path):
    st = {"status": "stopped", "step": 3, "total_steps": 10}
    assert "No adapter was saved" in progress_html(st, [], tmp_path)
    (tmp_path / "adapter_model.safetensors").write_bytes(b"x")
    shown = progress_html(st, [], tmp_path)
    assert "Adapter saved in" in shown and "No adapter" not in shown


def test_delete_refuses_names_outside_and_removes_a_symlink_not_its_target(app_client, app_dirs, tmp_path):
    from lora_demo.engine import AppSettings, LabEngine

    lab = LabEngine(AppSettings(model="qwen3-tiny", runs_dir=tmp_path / "runs", data_dir=tmp_path / "data"))
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "status.json").write_text("{}")
    for bad in ("../victim", "../../etc", "/etc", "..", ".", "", None, 5):
        with pytest.raises(InputError, match="not allowed|is empty"):
            lab.delete_run(bad)
        with pytest.raises(AppError):  # the page's list offers only its runs; the engine refuses the rest anyway
            app_client.predict(bad, True, api_name="/train_delete")
    assert (tmp_path / "victim" / "status.json").is_file()
    target = tmp_path / "elsewhere"  # a folder outside the runs folder that looks like a run
    target.mkdir()
    (target / "status.json").write_text('{"status": "completed"}')
    (target / "keep.txt").write_text("precious")
    link = app_dirs / "runs" / "linked-run"
    link.symlink_to(target, target_is_directory=True)
    assert "linked-run" in _run_names(app_client)  # (the runs list now offers it)
    said, *_ = app_client.predict("linked-run", True, api_name="/train_delete")
    assert "Deleted" in said and not link.exists() and not link.is_symlink()
    assert (target / "keep.txt").read_text() == "precious" and (target / "status.json").is_file()
    with pytest.raises(InputError, match="No run named"):
        lab.delete_run("no-such-run")


def test_a_killed_cli_takes_its_worker_with_it(tmp_path):
    cli = subprocess.Popen(
        [sys.executable, "-m", "lora_demo", "train", "--runs-dir", str(tmp_path), *CLI_RUN],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        _wait(lambda: len(list(tmp_path.glob("*/status.json"))) == 1, 60, "the run folder")
        (run,) = [p.parent for p in tmp_path.glob("*/status.json")]
        _wait(lambda: read_status(run).get("status") == "training", 120, "training")
        worker = read_status(run)["pid"]
        assert not _gone(worker)
        cli.send_signal(signal.SIGKILL)
        cli.wait(10)
        _wait(lambda: _gone(worker), 5, "the worker to end with its command")
        st = read_status(run)
        assert st["status"] == "failed" and "The command that started this run" in st["error"], st
        assert f"python -m lora_demo train --resume {run}" in st["error"]
    finally:
        cli.kill()
        for p in tmp_path.glob("*/status.json"):
            pid = read_status(p.parent).get("pid")
            if pid and not _gone(pid):
                os.kill(pid, signal.SIGKILL)


def test_detach_leaves_the_run_training_and_stop_stops_it(tmp_path):
    out = _cli("train", "--runs-dir", str(tmp_path), *CLI_RUN, "--detach", timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    (run,) = [p.parent for p in tmp_path.glob("*/status.json")]
    assert f"stop it:  python -m lora_demo stop {run}" in out.stdout and "tail -f" in out.stdout
    worker = read_status(run)["pid"]
    try:
        _wait(lambda: (read_status(run).get("step") or 0) >= 2, 120, "training after the command returned")
        assert not _gone(worker)
        again = _cli("train", "--resume", str(run), timeout=60)  # the message says how to stop it
        assert again.returncode == 2 and "in progress" in again.stderr, again.stderr
        assert f"python -m lora_demo stop {run}" in again.stderr and "Stop button" in again.stderr
        stop = _cli("stop", str(run), "--wait", "120")
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert "the adapter so far will be saved" in stop.stdout and "stopped: step" in stop.stdout, stop.stdout
        assert read_status(run)["status"] == "stopped" and (run / "adapter_model.safetensors").is_file()
        _wait(lambda: _gone(worker), 30, "the worker to exit")
        # delete-run asks first (refused without a terminal unless --yes), then deletes.
        refused = _cli("delete-run", str(run))
        assert refused.returncode == 2 and "--yes" in refused.stderr and run.is_dir()
        deleted = _cli("delete-run", str(run), "--yes")
        assert deleted.returncode == 0 and not run.exists(), deleted.stderr
    finally:
        if not _gone(worker):
            os.kill(worker, signal.SIGKILL)
