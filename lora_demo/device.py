"""Device policy: which device, training backend, precision and CPU thread count to use.

Nothing here imports unsloth: importing it on CPU patches Trainer/SFTTrainer for the whole process, so the
decision is made from `find_spec` and the import itself happens only in the training worker on CUDA.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import asdict, dataclass
from typing import Literal

import pynvml
import torch

from lora_demo import env
from lora_demo.i18n import msg

Backend = Literal["unsloth", "transformers"]
Precision = Literal["bf16", "fp16", "fp32"]


@dataclass(frozen=True)
class DevicePlan:
    """What this machine will run on, and why."""

    device: Literal["cuda", "cpu"]
    device_name: str
    memory_gb: float | None
    backend: Backend
    backend_reason: str
    precision: Precision
    precision_reason: str
    cpu_threads: int
    cpu_cores: int
    torch_version: str
    problem: str | None = None  # e.g. a GPU the installed torch was not built for
    # backend_reason, precision_reason and problem are Msgs (English text that the UI renders in its language)

    def to_dict(self) -> dict:
        return asdict(self)


def cpu_flags() -> set[str]:
    """The CPU feature flags from /proc/cpuinfo (empty where it does not exist)."""
    # Read by hand: psutil reports CPU counts, frequencies and load, but neither the feature flags nor the model name.
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_native_bf16(flags: set[str] | None = None) -> bool:
    """True when the CPU multiplies bf16 natively (AVX512-BF16 or AMX); otherwise bf16 is emulated and slow."""
    flags = cpu_flags() if flags is None else flags
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def cuda_arch_problem() -> str | None:
    """A message naming the fix when the GPU is newer than the installed torch build supports."""
    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(0)
    arch = f"sm_{major}{minor}"
    built = torch.cuda.get_arch_list()
    if not built or arch in built:
        return None
    # PTX for an older-or-equal arch can be JIT-compiled for a newer GPU of the same major version.
    ptx = [a for a in built if a.startswith("compute_")]
    if any(int(a.split("_")[1]) // 10 == major and int(a.split("_")[1]) <= major * 10 + minor for a in ptx):
        return None
    name = torch.cuda.get_device_name(0)
    return msg(
        "{name} is {arch}, but this PyTorch {version} was built for {built}. "
        "Install a PyTorch build for a newer CUDA (for sm_120 / RTX 50xx: CUDA 12.8 or later, "
        "e.g. pip install --force-reinstall torch --index-url https://download.pytorch.org/whl/cu128).",
        name=name,
        arch=arch,
        version=torch.__version__,
        built=", ".join(built),
    )


def choose_precision(cuda: bool, cuda_bf16: bool = False, cpu_bf16: bool = False) -> tuple[Precision, str]:
    """Pick the compute precision from the hardware, so no user has to."""
    if cuda:
        if cuda_bf16:
            return "bf16", msg("the GPU supports bfloat16")
        return "fp16", msg("the GPU has no bfloat16 (pre-Ampere): float16 with loss scaling")
    if cpu_bf16:
        return "bf16", msg("the CPU has native bfloat16 (AVX512-BF16/AMX)")
    return "fp32", msg("the CPU has no native bfloat16, which would be emulated and ~3x slower")


def choose_threads(work_params: int, tokens_per_step: int, cores: int | None = None) -> int:
    """CPU threads for a model of `work_params` parameters processing `tokens_per_step` tokens.

    Measured on 2 cores: a tiny model's small matmuls run several times faster on one thread (two threads spend
    their time synchronising), while a 135M model at 256 tokens is faster on two. The switch point is the
    multiply-accumulate count of one step.
    """
    cores = cores or os.cpu_count() or 1
    if cores <= 1:
        return 1
    flops = work_params * max(tokens_per_step, 1)
    if flops < 2e9:  # below ~2 GMAC a step, synchronisation costs more than the second core gives
        return 1
    return cores


def one_thread_outside_chat() -> None:
    """A process that serves chat calls this first: every thread runs torch on one core unless it asks for more,
    and the chat's generation thread asks for all of them (`chat.decode.GenerationWorker`).

    libgomp gives every thread that runs a parallel op its own team of OpenMP threads. Once the teams hold more
    threads than the machine has cores, it stops spin-waiting between parallel regions, and every small op of a
    decoding step then waits for a sleeping thread to wake: two threads became slower than one (README, "Chat on
    the CPU"). Threads started after this call (Gradio's handlers) inherit one thread."""
    torch.set_num_threads(1)


SMALL_MODEL_PARAMS = 50_000_000  # below this (non-embedding) size, CPU autocast to bf16 does not pay


def detect(work_params: int = 135_000_000, tokens_per_step: int = 512) -> DevicePlan:
    """Decide device, backend, precision and threads for this machine."""
    cores = os.cpu_count() or 1
    threads = choose_threads(work_params, tokens_per_step, cores)
    unsloth_installed = importlib.util.find_spec("unsloth") is not None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        precision, p_reason = choose_precision(True, cuda_bf16=torch.cuda.is_bf16_supported())
        problem = cuda_arch_problem()
        forced = env.backend()
        if forced in ("unsloth", "transformers") and problem is None and (forced != "unsloth" or unsloth_installed):
            backend, reason = forced, msg("chosen with LORA_LAB_BACKEND={forced}", forced=forced)
        elif unsloth_installed and problem is None:
            backend = "unsloth"
            reason = msg("CUDA GPU found and unsloth is installed: 4-bit QLoRA with Unsloth's kernels")
        elif problem is not None:
            backend, reason = "transformers", msg("the GPU is not supported by this torch build (see problem)")
        else:
            backend = "transformers"
            reason = msg("unsloth is not installed: transformers + PEFT + TRL (run ./install.sh)")
        return DevicePlan(
            "cuda",
            props.name,
            round(props.total_memory / 2**30, 1),
            backend,
            reason,
            precision,
            p_reason,
            threads,
            cores,
            torch.__version__,
            problem,
        )
    precision, p_reason = choose_precision(False, cpu_bf16=cpu_has_native_bf16())
    if precision == "bf16" and work_params < SMALL_MODEL_PARAMS:
        # Measured (bench/bench_train.py; README's Performance section): qwen3-tiny trains faster in fp32 than in
        # bf16 autocast, where the casts cost more than tiny matmuls gain; SmolLM2-135M is faster in bf16.
        precision, p_reason = "fp32", msg("a model this small trains faster in fp32 than with bf16 autocast on CPU")
    return DevicePlan(
        "cpu",
        _cpu_name(),
        _ram_gb(),
        "transformers",
        msg("no CUDA GPU: transformers + PEFT + TRL on the CPU"),
        precision,
        p_reason,
        threads,
        cores,
        torch.__version__,
    )


def free_gpu_bytes(index: int | None = None) -> int | None:
    """Free memory of a GPU in bytes, without creating a CUDA context in this process when it has none (a context
    takes GPU memory of its own, and the app's process should not hold the GPU that training needs).

    With a context: torch's count for CUDA device `index` (None: the current device, e.g. a rank's own GPU).
    Without one: NVML's (the driver's; `index` None is GPU 0). None where neither answers (no NVIDIA driver: a CPU
    machine)."""
    if torch.cuda.is_initialized():
        return int(torch.cuda.mem_get_info(index)[0])
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        return int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(index or 0)).free)
    except pynvml.NVMLError:
        return None
    finally:
        pynvml.nvmlShutdown()


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "CPU"


def _ram_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def torch_dtype(precision: Precision) -> torch.dtype:
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
