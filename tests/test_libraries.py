"""Library code where a library does the job (issue 29): psutil for process checks and RAM, NVML (pynvml) for a GPU's
free memory, cachetools for the UI's per-session stores. Each test names what the hand-made code did that the
library code must keep doing."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pynvml
import pytest
import torch

from lora_demo import device
from lora_demo.chat.precision import _free_memory_bytes
from lora_demo.train.runs import pid_alive, process_start
from lora_demo.train.worker import owner_alive
from lora_demo.ui.sessions import SessionStore


def _proc_start(pid: int) -> str:
    """What status files hold in `pid_start`, read as the code before psutil read it (/proc, field 22)."""
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return f"{boot}:{Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[19]}"


@pytest.fixture
def zombie():
    """A child that has exited and is not reaped yet."""
    child = subprocess.Popen(["true"])
    deadline = time.time() + 10
    while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE:
        assert time.time() < deadline
        time.sleep(0.01)
    yield child.pid
    child.wait()


@pytest.mark.skipif(not Path("/proc/sys/kernel/random/boot_id").exists(), reason="Linux only")
def test_process_start_reads_what_status_files_written_before_psutil_hold():
    """A run started by the older code (pid_start from /proc) is still recognised as alive after an upgrade."""
    for pid in (os.getpid(), 1):
        assert process_start(pid) == _proc_start(pid)
    assert pid_alive(os.getpid(), _proc_start(os.getpid()))


def test_a_pid_with_another_start_or_no_process_is_not_our_run():
    assert not pid_alive(os.getpid(), "another-boot:12345")
    assert not pid_alive(None) and not pid_alive(0)
    child = subprocess.Popen(["true"])
    child.wait()  # reaped: the pid names no process now
    assert process_start(child.pid) is None and not pid_alive(child.pid)


def test_a_zombie_worker_counts_as_alive_but_a_zombie_owner_does_not(zombie):
    """The Runner reaps its zombie worker and records why it ended; a worker's owner that exited has ended."""
    start = process_start(zombie)
    assert pid_alive(zombie, start)
    assert not owner_alive(zombie, start)
    assert owner_alive(os.getpid(), process_start(os.getpid()))


def test_free_gpu_bytes_is_none_quietly_where_nvml_does_not_start(monkeypatch):
    """A CPU machine (no NVIDIA driver): no number, no error, and no CUDA context is created to find out."""

    def no_driver():
        raise pynvml.NVMLError_LibraryNotFound()

    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(pynvml, "nvmlInit", no_driver)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: pytest.fail("would create a CUDA context"))
    assert device.free_gpu_bytes() is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without a GPU")
def test_free_gpu_bytes_on_this_cpu_machine_is_none():
    assert device.free_gpu_bytes() is None
    assert device.free_gpu_bytes(0) is None


def test_free_gpu_bytes_asks_nvml_without_a_context_and_torch_with_one(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(pynvml, "nvmlInit", lambda: calls.append("init"))
    monkeypatch.setattr(pynvml, "nvmlShutdown", lambda: calls.append("shutdown"))
    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", lambda i: f"gpu{i}")
    monkeypatch.setattr(pynvml, "nvmlDeviceGetMemoryInfo", lambda h: type("M", (), {"free": 7 * 2**30})())
    assert device.free_gpu_bytes() == 7 * 2**30 and calls == ["init", "shutdown"]

    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index=None: (3 * 2**30, 8 * 2**30))
    assert device.free_gpu_bytes() == 3 * 2**30 and calls == ["init", "shutdown"]  # NVML not asked


def test_chat_precision_sees_the_ram_available():
    assert 0 < _free_memory_bytes("cpu") <= psutil.virtual_memory().total


def test_a_session_store_drops_the_session_written_longest_ago():
    """As the OrderedDict stores did: writing refreshes a session, reading does not, the oldest write goes first."""
    store = SessionStore(3)
    for key in "abc":
        store.put(key, key.upper())
    store.put("a", "A2")  # written again: now the newest
    assert store.get("b") == "B"  # read: stays the oldest
    store.put("d", "D")
    assert store.get("b") is None and [store.get(k) for k in "acd"] == ["A2", "C", "D"]
    assert len(store) == 3 and store.maxsize == 3
    assert store.pop("c") == "C" and store.pop("c", "gone") == "gone"
    assert store.get("zz", "default") == "default"


def test_a_session_store_loses_no_concurrent_update():
    store = SessionStore(4)

    def add(slot):
        for i in range(200):
            store.update("visitor", lambda slots, i=i: {**slots, f"{slot}{i}": i}, {})

    threads = [threading.Thread(target=add, args=(s,)) for s in "xyz"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.get("visitor")) == 600
