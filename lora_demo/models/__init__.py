"""Model registry and loading (see registry.py for the entries)."""

from lora_demo.models.loader import (
    LoadedModel,
    cached_tokenizer,
    explain_load_error,
    load_model,
    load_tokenizer,
    thinking_switch,
)
from lora_demo.models.registry import (
    CPU_DEFAULT,
    CUDA_DEFAULT,
    REGISTRY,
    ModelSpec,
    adapter_base_model,
    cache_dir,
    default_model_id,
    get_spec,
    is_available_offline,
    list_models,
    model_path,
    resolve_model,
    shipped_config,
)

__all__ = [
    "CPU_DEFAULT",
    "CUDA_DEFAULT",
    "REGISTRY",
    "LoadedModel",
    "ModelSpec",
    "adapter_base_model",
    "cache_dir",
    "cached_tokenizer",
    "default_model_id",
    "explain_load_error",
    "get_spec",
    "is_available_offline",
    "list_models",
    "load_model",
    "load_tokenizer",
    "model_path",
    "resolve_model",
    "shipped_config",
    "thinking_switch",
]
