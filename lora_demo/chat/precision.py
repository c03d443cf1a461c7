"""Which weights chat decodes with: a bitsandbytes checkpoint dequantized once to 16 bit when memory allows, bf16 on a
CPU with native bf16 for models of 50M parameters or more."""

from __future__ import annotations

import psutil

from lora_demo.i18n import msg


def _free_memory_bytes(device: str) -> int:
    """The memory a 16-bit copy of the weights would go to: the GPU's free memory, or the RAM available (psutil:
    MemAvailable on Linux)."""
    from lora_demo.device import free_gpu_bytes  # deferred: device imports torch, and the CLI imports this module

    if device == "cuda":
        return free_gpu_bytes() or 0
    return int(psutil.virtual_memory().available)


def _param_count(model, embeddings: bool = True) -> int:
    """Parameters as they would be in 16 bit (a bitsandbytes 4-bit layer counts in_features * out_features)."""
    import torch

    n = 0
    for m in model.modules():
        w = getattr(m, "weight", None)
        if not embeddings and isinstance(m, torch.nn.Embedding):
            continue
        if w is not None and type(w).__name__ in ("Params4bit", "Int8Params") and hasattr(m, "in_features"):
            n += m.in_features * m.out_features + (m.bias.numel() if getattr(m, "bias", None) is not None else 0)
        else:
            n += sum(p.numel() for p in m.parameters(recurse=False))
    return n


def chat_precision(model, plan, full_precision: bool = False) -> tuple[object, str]:
    """The weights chat decodes with, and a line saying which.

    - A bitsandbytes 4/8-bit checkpoint is dequantized once to a 16-bit copy when free memory holds it (with room
      to spare): decoding is memory-bound, and 16-bit matmuls beat bitsandbytes' dequantize-per-step kernels.
    - On a CPU with native bf16 (AVX512-BF16/AMX) a model of >= 50M non-embedding parameters decodes in bf16:
      half the bytes per token, so decoding steps come faster (measured on SmolLM2-135M). Smaller models
      stay fp32, where the difference is noise and tests compare with a plain fp32 load. full_precision: fp32 on
      a CPU always (the parity check's reference).
    """
    import torch

    from lora_demo.device import SMALL_MODEL_PARAMS, cpu_has_native_bf16, torch_dtype  # deferred: device imports torch

    if plan.device == "cuda":
        dtype = torch_dtype(plan.precision)
    elif cpu_has_native_bf16():
        dtype = torch.bfloat16
    else:
        dtype = torch.float32
    name = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}[dtype]
    if getattr(model, "hf_quantizer", None) is not None:
        bits = "8-bit" if getattr(model, "is_loaded_in_8bit", False) else "4-bit"
        need = _param_count(model) * 2
        free = _free_memory_bytes(plan.device)
        if free < need * 1.25 + 2**30:
            return model, msg(
                "{bits} bitsandbytes weights (a 16-bit copy needs {need:.1f} GiB; {free:.1f} GiB free)",
                bits=bits,
                need=need / 2**30,
                free=free / 2**30,
            )
        dtype = torch.float16 if dtype == torch.float32 and plan.device == "cuda" else dtype
        name = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}[dtype]
        model = model.dequantize(dtype=dtype).to(dtype)  # the layers never quantized (norms, embeddings) too
        if getattr(model, "hf_quantizer", None) is not None:
            model.hf_quantizer = None
        for attr in ("is_loaded_in_4bit", "is_loaded_in_8bit", "is_quantized"):
            if getattr(model, attr, False):
                setattr(model, attr, False)
        return model, msg("{name} (a 16-bit copy dequantized once from the {bits} checkpoint)", name=name, bits=bits)
    if plan.device == "cpu":
        if full_precision:
            return model.float(), "fp32"
        if dtype == torch.bfloat16 and _param_count(model, embeddings=False) >= SMALL_MODEL_PARAMS:
            bf16 = msg("bf16 (this CPU multiplies bf16 natively; decoding reads half the bytes)")
            return model.to(torch.bfloat16), bf16
        return model.float(), "fp32"
    return model, name
