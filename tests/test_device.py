"""Device policy decisions, with the hardware monkeypatched."""

from __future__ import annotations

import io
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


@pytest.mark.parametrize(
    "flags, work_params, expected",
    [
        ({"avx2", "avx512_bf16"}, 135_000_000, "bf16"),  # native bf16 and a model big enough to gain from it
        ({"amx_bf16"}, 106_000_000, "bf16"),
        ({"amx_bf16"}, device.SMALL_MODEL_PARAMS, "bf16"),  # the threshold itself already counts as big enough
        ({"amx_bf16"}, device.SMALL_MODEL_PARAMS - 1, "fp32"),  # just below: the casts cost more than they gain
        ({"avx512_bf16"}, 10_000_000, "fp32"),  # qwen3-tiny-sized
        ({"avx2", "avx512f"}, 135_000_000, "fp32"),  # no native bf16: it would be emulated, ~3x slower
        (set(), 135_000_000, "fp32"),  # no /proc/cpuinfo
    ],
)
def test_no_cuda_is_cpu_transformers_with_precision_from_flags_and_size(monkeypatch, flags, work_params, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device, "cpu_flags", lambda: set(flags))  # the CPU probe detect() reads through
    plan = device.detect(work_params=work_params)
    assert (plan.device, plan.backend, plan.precision) == ("cpu", "transformers", expected)


def test_cpu_flags_are_read_from_the_flags_line(monkeypatch):
    cpuinfo = "processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx2 amx_bf16\nbugs\t\t: spectre_v1\n"
    monkeypatch.setattr(device, "open", lambda *a, **k: io.StringIO(cpuinfo), raising=False)
    assert device.cpu_flags() == {"fpu", "avx2", "amx_bf16"}

    def missing(*a, **k):
        raise FileNotFoundError("/proc/cpuinfo")

    monkeypatch.setattr(device, "open", missing, raising=False)
    assert device.cpu_flags() == set()


def test_backend_override(monkeypatch):
    _fake_cuda(monkeypatch)
    monkeypatch.setattr(device.importlib.util, "find_spec", lambda n: object())
    monkeypatch.setenv("LORA_LAB_BACKEND", "transformers")
    plan = device.detect()
    assert plan.backend == "transformers" and "LORA_LAB_BACKEND" in plan.backend_reason


def test_system_panel_renders_in_chinese_and_the_cli_keeps_english(monkeypatch):
    """The reasons and the problem are Msgs: the System panel renders them in the session's language, while the
    CLI (`info`, `info --json`) and pickles (the training worker gets the plan) keep English with the template."""
    import json
    import pickle

    from lora_demo.i18n import Msg
    from lora_demo.system import format_system_info, system_info

    _fake_cuda(monkeypatch, name="NVIDIA GeForce RTX 5080", cap=(12, 0), arch=("sm_80", "sm_90"))
    monkeypatch.setattr(device.importlib.util, "find_spec", lambda n: object())
    info = system_info()
    zh = format_system_info(info, "zh")
    assert "**设备：** CUDA — NVIDIA GeForce RTX 5080，140.0 GiB" in zh
    assert "**⚠ 问题：** NVIDIA GeForce RTX 5080 的架构是 sm_120，但当前的 PyTorch" in zh and "cu128" in zh
    assert "**训练后端：** transformers（当前 torch 版本不支持这块 GPU（见“问题”））" in zh
    assert "**精度：** bf16（GPU 支持 bfloat16）" in zh
    assert "| 模型 | 类型 | 离线可用 | 说明 |" in zh and "| `qwen3-tiny` | 内置 |" in zh
    assert "Qwen3-8B，4 位量化：需要约 8 GB 显存" in zh
    en = format_system_info(info)
    assert "**Training backend:** transformers (the GPU is not supported by this torch build (see problem))" in en
    assert "| `qwen3-tiny` | embedded | ✅ yes |" in en and not any("\u4e00" <= ch <= "\u9fff" for ch in en)
    assert json.loads(json.dumps(info))["precision_reason"] == "the GPU supports bfloat16"  # info --json
    plan = pickle.loads(pickle.dumps(device.detect()))
    assert isinstance(plan.problem, Msg) and plan.problem.template.startswith("{name} is {arch}")
