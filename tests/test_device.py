"""Device policy decisions, with the hardware monkeypatched."""

from __future__ import annotations

import types

import pytest
import torch

from lora_demo import device
from lora_demo.device import choose_precision, choose_threads, cpu_has_native_bf16


@pytest.mark.parametrize(
    "cuda, cuda_bf16, cpu_bf16, expected",
    [
        (True, True, False, "bf16"),
        (True, False, False, "fp16"),
        (False, False, True, "bf16"),
        (False, False, False, "fp32"),
    ],
)
def test_precision_follows_hardware(cuda, cuda_bf16, cpu_bf16, expected):
    assert choose_precision(cuda, cuda_bf16=cuda_bf16, cpu_bf16=cpu_bf16)[0] == expected


def test_native_bf16_flags():
    assert cpu_has_native_bf16({"avx2", "avx512_bf16"})
    assert cpu_has_native_bf16({"amx_bf16"})
    assert not cpu_has_native_bf16({"avx2", "avx512f"})


def test_threads_follow_the_work():
    tiny = 1_000_000  # qwen3-tiny's non-embedding work is far below this
    assert choose_threads(tiny, 64, cores=2) == 1
    assert choose_threads(135_000_000, 256, cores=2) == 2
    assert choose_threads(135_000_000, 256, cores=1) == 1


def _fake_cuda(monkeypatch, name="NVIDIA H200", cap=(9, 0), arch=("sm_80", "sm_90"), bf16=True):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: cap)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: list(arch))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: name)
    props = types.SimpleNamespace(name=name, total_memory=140 * 2**30)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda *a: props)


def test_cuda_with_unsloth_picks_unsloth(monkeypatch):
    _fake_cuda(monkeypatch)
    monkeypatch.setattr(device.importlib.util, "find_spec", lambda n: object() if n == "unsloth" else None)
    plan = device.detect()
    assert (plan.device, plan.backend, plan.precision, plan.problem) == ("cuda", "unsloth", "bf16", None)
    assert plan.memory_gb == 140.0 and plan.device_name == "NVIDIA H200"


def test_cuda_without_unsloth_falls_back(monkeypatch):
    _fake_cuda(monkeypatch, name="Tesla T4", cap=(7, 5), arch=("sm_75", "sm_80"), bf16=False)
    monkeypatch.setattr(device.importlib.util, "find_spec", lambda n: None)
    plan = device.detect()
    assert (plan.backend, plan.precision) == ("transformers", "fp16")
    assert "unsloth is not installed" in plan.backend_reason


def test_gpu_newer_than_torch_build_names_the_fix(monkeypatch):
    _fake_cuda(monkeypatch, name="NVIDIA GeForce RTX 5080", cap=(12, 0), arch=("sm_80", "sm_90"))
    monkeypatch.setattr(device.importlib.util, "find_spec", lambda n: object())
    plan = device.detect()
    assert plan.backend == "transformers"
    assert "sm_120" in plan.problem and "cu128" in plan.problem


def test_no_cuda_is_cpu_transformers(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    plan = device.detect()
    assert (plan.device, plan.backend) == ("cpu", "transformers")
    assert plan.precision in ("bf16", "fp32")


def test_cpu_precision_follows_the_work(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda flags=None: True)
    assert device.detect(work_params=10_000_000).precision == "fp32"  # tiny: autocast costs more than it gains
    assert device.detect(work_params=106_000_000).precision == "bf16"
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda flags=None: False)
    assert device.detect(work_params=106_000_000).precision == "fp32"


def test_backend_override(monkeypatch):
    _fake_cuda(monkeypatch)
    monkeypatch.setattr(device.importlib.util, "find_spec", lambda n: object())
    monkeypatch.setenv("LORA_LAB_BACKEND", "transformers")
    plan = device.detect()
    assert plan.backend == "transformers" and "LORA_LAB_BACKEND" in plan.backend_reason
