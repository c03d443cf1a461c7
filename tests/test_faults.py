"""The app under faults: each ends in a clear message, the app still serving, and nothing lost or corrupted."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import threading
import time

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from lora_demo.train.runs import read_status
from lora_demo.train.settings import TrainSettings
from lora_demo.ui.train_tab import FORM
from tests.api_helpers import send_args, sent

GEN = [0.7, 0.9, 50, 1.0, 400, 0, 1.0, False]


def form(**over):
    values = {**TrainSettings(model="qwen3-tiny", max_seq_length=128, micro_batch_size=4, warmup=2).to_dict(), **over}
    return [values[k] for k in FORM]


def _wait(pred, timeout=120, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.25)
    raise TimeoutError(what)


def _serving(client) -> bool:
    return "Training backend" in client.predict(api_name="/system_info")


def _run_from(msg: str, app_dirs):
    return app_dirs / "runs" / msg.split("**")[1]


def test_worker_killed_mid_run(app_client, app_dirs):
    msg, *_ = app_client.predict(*form(max_steps=5000), api_name="/train_start")
    run = _run_from(msg, app_dirs)
    _wait(lambda: (read_status(run).get("step") or 0) >= 2, what="training steps")
    os.kill(read_status(run)["pid"], signal.SIGKILL)
    _wait(
        lambda: app_client.predict(api_name="/train_runs") and read_status(run).get("status") == "failed",
        what="failed status",
    )
    assert "killed (SIGKILL)" in read_status(run)["error"]
    table, _ = app_client.predict(api_name="/train_runs")
    assert [r[1] for r in table["data"] if r[0] == run.name] == ["failed"]
    assert _serving(app_client)
    assert (run / "config.yaml").is_file() and (run / "data" / "train.jsonl").is_file()  # nothing of the run lost


def test_two_sessions_press_train_at_once(app_client, app_dirs):
    clients = [app_client, Client(app_client.src, verbose=False)]
    results: list = [None, None]

    def press(i):
        try:
            results[i] = clients[i].predict(*form(max_steps=5000), api_name="/train_start")[0]
        except AppError as e:
            results[i] = e

    threads = [threading.Thread(target=press, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    started = [r for r in results if isinstance(r, str) and r.startswith("Started")]
    refused = [r for r in results if isinstance(r, AppError)]
    assert len(started) == 1 and len(refused) == 1, results
    assert "A training run is in progress" in str(refused[0]) and "started at" in str(refused[0])
    app_client.predict(api_name="/train_stop")
    run = _run_from(started[0], app_dirs)
    _wait(lambda: read_status(run).get("status") in ("stopped", "failed", "completed"), what="stop")


def test_save_fails_on_a_full_disk(app_client, app_dirs, monkeypatch):
    from lora_demo.data import store

    table = {"headers": ["instruction", "input", "output"], "data": [["q", "", "a"]]}
    app_client.predict(table, "keepme", 0.0, api_name="/dataset_save")
    before = (app_dirs / "data" / "keepme.jsonl").read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store.os, "fsync", full)
    bigger = {"headers": table["headers"], "data": [["q", "", "a"], ["q2", "", "a2"]]}
    with pytest.raises(AppError, match="No space left on device"):
        app_client.predict(bigger, "keepme", 0.0, api_name="/dataset_save")
    monkeypatch.undo()
    assert (app_dirs / "data" / "keepme.jsonl").read_bytes() == before
    assert _serving(app_client)


def test_generation_stopped_mid_stream(app_client, tiny_run):
    app_client.predict("auto", str(tiny_run), api_name="/chat_load")
    job = app_client.submit(*send_args("Tell me a long story.", tiny_run, gen=GEN), api_name="/chat_send")
    _wait(lambda: job.status().code.name in ("PROCESSING", "ITERATING") and len(job.outputs()) >= 2, 60, "streaming")
    assert app_client.predict(api_name="/chat_stop") == "Stopped."
    t0 = time.time()
    job.result(timeout=60)
    assert time.time() - t0 < 30
    base_stats = sent(job.outputs()[-1])["base_stats"]
    assert int(base_stats.split()[0]) < 400  # it stopped before max_new_tokens
    assert _serving(app_client)


def _listed_value(choice):
    """The value a dropdown sends for a choice: the choice itself, or the value half of a (label, value) pair."""
    return str(choice[1] if isinstance(choice, (tuple, list)) else choice)


def test_model_folder_vanishes_between_listing_and_loading(app_client, app_dirs, tiny_run):
    from lora_demo.adapters import adapter_choices  # what the Chat and Low-rank adapter lists offer

    gone = app_dirs / "runs" / "vanishing"
    shutil.copytree(tiny_run, gone)
    listed = [_listed_value(c) for c in adapter_choices(app_dirs / "runs")]
    picked = [v for v in listed if v.endswith("vanishing")]  # its final adapter (its checkpoints follow it)
    assert len(picked) == 1, listed  # the lists offer the copied run's adapter ...
    shutil.rmtree(gone)  # ... and it is deleted after listing, before Load is pressed
    with pytest.raises(AppError, match="does not exist"):
        app_client.predict("auto", picked[0], api_name="/chat_load")
    with pytest.raises(AppError, match="does not exist"):
        # Through the API the Low-rank dropdown only takes the choices it was built with, so the path goes in the
        # typed box, as a user pasting it would.
        app_client.predict(None, picked[0], "fro_norm", api_name="/lowrank_analyze")
    assert _serving(app_client)
