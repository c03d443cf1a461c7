"""How big a run is, before anything loads: the architecture on the meta device, parameter counts, optimizer
steps, a peak-memory estimate, and the step warnings every method shares.

Parameter counts come from the model's architecture built on the meta device (no weights, no download: for the
Qwen3 hub ids the config ships in lora_demo/models/configs), wrapped by PEFT with the run's LoRA configuration
(train/lora_config.py) and counted by PEFT itself. The plan (plan.py), the DPO and GRPO plans, the worker and the
adapter checks all read these; this module imports none of them, so it sits below them all.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

from lora_demo.errors import InputError, ModelError
from lora_demo.i18n import Msg, msg
from lora_demo.models.registry import get_spec, hub_cached, model_path, shipped_config
from lora_demo.train.lora_config import lora_kwargs, peft_lora_config
from lora_demo.train.settings import TrainSettings


def model_config(model_id: str) -> dict:
    """The architecture config of a model, offline where possible."""

    spec = get_spec(model_id)
    if spec.kind == "hub":
        cfg = shipped_config(model_id)
        if cfg is not None:
            return cfg
        if hub_cached(model_id):
            from huggingface_hub import try_to_load_from_cache

            return json.loads(Path(try_to_load_from_cache(model_id, "config.json")).read_text())
        raise ModelError(
            msg(
                "No architecture is known offline for '{model}': download it once or use a local folder.",
                model=model_id,
            )
        )
    return json.loads((Path(model_path(model_id)) / "config.json").read_text())


def meta_model(model_id: str):
    """(model, config, raw config dict): the architecture on the meta device, no weights allocated."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = {k: v for k, v in model_config(model_id).items() if k != "quantization_config"}
    config = AutoConfig.for_model(**cfg)
    with torch.device("meta"):  # (accelerate's init_empty_weights would untie tied embeddings)
        return AutoModelForCausalLM.from_config(config), config, cfg


def count_parameters(s: TrainSettings) -> dict:
    """Base, LoRA and total parameters of s.model with the LoRA of settings s (the same config the worker uses)."""
    return dict(_count(s.model, json.dumps(lora_kwargs(s), sort_keys=True)))


@functools.lru_cache(maxsize=16)  # the Plan button and every start ask again for the same model and LoRA
def _count(model_id: str, lora_json: str) -> dict:
    """PEFT wraps the meta-device model as the worker wraps the real one, and counts with its own
    get_nb_trainable_parameters (4-bit weights at their unpacked size, as print_trainable_parameters shows).
    lora_json: lora_kwargs as JSON, a key the cache can hold."""
    import torch
    from peft import get_peft_model
    from peft.tuners.lora import LoraLayer

    lora = json.loads(lora_json)
    model, config, cfg = meta_model(model_id)
    embed = model.get_input_embeddings().weight.numel()
    try:
        with torch.device("meta"):  # the LoRA factors on meta too: nothing is allocated
            peft_model = get_peft_model(model, peft_lora_config(lora))
    except ValueError as e:
        if "not found in the base model" not in str(e):
            raise
        names = sorted({n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise InputError(
            msg(
                "None of the target modules {targets} exist in {model}; its Linear layers are {names}.",
                targets=lora["target_modules"],
                model=model_id,
                names=names,
            )
        ) from None
    trainable, total = peft_model.get_nb_trainable_parameters()
    return {
        "base_params": total - trainable,
        "trainable_params": trainable,
        "total_params": total,
        "trainable_percent": 100.0 * trainable / total,
        "lora_modules": sum(isinstance(m, LoraLayer) for m in peft_model.modules()),
        "embedding_params": embed,
        "hidden_size": config.hidden_size,
        "num_layers": config.num_hidden_layers,
        "vocab_size": config.vocab_size,
        "intermediate_size": getattr(config, "intermediate_size", 4 * config.hidden_size),
        "model_dtype": str(cfg.get("torch_dtype") or cfg.get("dtype") or ""),
    }


def optimizer_steps(n_rows: int, s: TrainSettings) -> dict:
    """Optimizer steps as transformers' Trainer counts them."""
    # Under DDP each process takes its share of the rows (transformers shards the batches across processes).
    n_rows = math.ceil(n_rows / s.world_size) if n_rows else 0
    batches = math.ceil(n_rows / s.micro_batch_size) if n_rows else 0
    per_epoch = batches // s.gradient_accumulation_steps + int(batches % s.gradient_accumulation_steps > 0)
    total = s.max_steps if s.max_steps > 0 else math.ceil(s.num_epochs * per_epoch)
    warmup = int(s.warmup) if s.warmup >= 1 else math.ceil(s.warmup * total)
    return {
        "steps_per_epoch": per_epoch,
        "total_steps": total,
        "warmup_steps": warmup,
        "effective_batch": s.micro_batch_size * s.gradient_accumulation_steps * s.world_size,
    }


def estimate_memory_gb(p: dict, s: TrainSettings, precision: str, device: str, backend: str) -> float:
    """A rough peak-memory estimate per process (weights + LoRA optimizer state + activations + logits), in GiB.
    With FSDP each process holds 1/world of the weights and optimizer state (the layer being computed is gathered
    whole for a moment: one layer's worth is added back)."""
    wbytes = {"bf16": 2, "fp16": 2, "fp32": 4}[precision] if not (s.load_in_4bit and device == "cuda") else None
    if wbytes is None:  # 4-bit: packed nf4 for the linears, 16-bit embeddings and head
        weights = (p["base_params"] - p["embedding_params"]) * 0.53 + p["embedding_params"] * 2 * 2
    else:
        weights = p["base_params"] * (4 if device == "cpu" and precision != "bf16" else wbytes)
    opt = 2 if "8bit" in s.optimizer else 8
    lora = p["trainable_params"] * (4 + 4 + opt)
    tokens = s.micro_batch_size * s.max_seq_length
    checkpointing = backend == "unsloth"
    per_layer = p["hidden_size"] * (4 if checkpointing else 16) + (0 if checkpointing else 3 * p["intermediate_size"])
    act = tokens * per_layer * p["num_layers"] * 2
    logits = tokens * p["vocab_size"] * 4 * (1 if backend == "unsloth" else 3)
    if s.fsdp and s.world_size > 1:
        weights = weights / s.world_size + weights / max(1, p["num_layers"])
        lora /= s.world_size
    return round((weights + lora + act + logits) / 2**30 * 1.1, 2)


def step_warnings(total: int, warm: int) -> list[Msg]:
    """The warnings about the optimizer steps of any method: warmup that never ends, too few steps."""
    out = []
    if warm >= total:
        out.append(
            msg(
                "Warmup ({warm} steps) ≥ total steps ({total}): the learning rate never leaves ~0, so nothing is "
                "learned (for example: 2 rows, batch 1 × accumulation 8 = 1 step, warmup 5, lr 0.0). "
                "Lower warmup, add rows, or raise epochs.",
                warm=warm,
                total=total,
            )
        )
    if total < 10:
        out.append(
            msg(
                "Only {total} optimizer step(s) in total: too few to learn much. Add rows, raise epochs or "
                "lower micro batch × accumulation.",
                total=total,
            )
        )
    return out
