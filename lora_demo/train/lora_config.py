"""The LoRA adapter's shape, built in one place for both training backends and the plan.

PEFT's LoraConfig (the transformers backend, and the plan's parameter count) and Unsloth's
FastLanguageModel.get_peft_model take the same keyword arguments for the shape of the adapter, so they come from
lora_kwargs alone: a new LoRA option (DoRA's use_dora, for example) is added there once and reaches every path.
"""

from __future__ import annotations


def lora_kwargs(s) -> dict:
    """The keyword arguments of the LoRA shape of settings s (a TrainSettings), as both backends take them."""
    return {
        "r": s.r,
        "lora_alpha": s.lora_alpha,
        "lora_dropout": s.lora_dropout,
        "target_modules": list(s.target_modules),
        "use_rslora": s.use_rslora,
        "bias": "none",
    }


def peft_lora_config(kwargs: dict):
    """PEFT's LoraConfig for a causal LM from lora_kwargs' arguments."""
    from peft import LoraConfig  # (peft imports torch: deferred to the processes that build a model)

    return LoraConfig(**kwargs, task_type="CAUSAL_LM")


def lora_config(s):
    """The PEFT LoraConfig of settings s: the worker trains with it and the plan counts with it."""
    return peft_lora_config(lora_kwargs(s))
