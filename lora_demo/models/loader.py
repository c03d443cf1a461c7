"""Load a registry model (transformers path) and turn every load failure into a one-line ModelError."""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass

from lora_demo import env
from lora_demo.data.templates import uses_thinking
from lora_demo.errors import ModelError
from lora_demo.i18n import msg
from lora_demo.models.registry import (
    EMBEDDED_BUILD_VERSION,
    REGISTRY,
    cache_dir,
    get_spec,
    hub_cached,
    is_available_offline,
    model_path,
    offline_error,
    resolve_model,
)


@dataclass
class LoadedModel:
    model: object
    tokenizer: object
    model_id: str
    path: str
    load_seconds: float


def explain_load_error(exc: BaseException, model_id: str) -> ModelError:
    """Map huggingface_hub / transformers / OS errors to a message naming cause and fix."""
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, ModelError):
        return exc
    chain = [exc]
    while chain[-1].__cause__ is not None or chain[-1].__context__ is not None:
        chain.append(chain[-1].__cause__ or chain[-1].__context__)
        if len(chain) > 8:
            break
    for e in chain:
        if isinstance(e, GatedRepoError):
            return ModelError(
                msg(
                    "'{model_id}' is gated (401): accept its licence on huggingface.co and log in with "
                    "`hf auth login` (or set HF_TOKEN), or pick an ungated model.",
                    model_id=model_id,
                )
            )
        if isinstance(e, RepositoryNotFoundError):
            return ModelError(
                msg(
                    "'{model_id}' does not exist on the Hugging Face hub (or is private): check the spelling, "
                    "or give a local model folder.",
                    model_id=model_id,
                )
            )
        if isinstance(e, RevisionNotFoundError):
            return ModelError(
                msg("'{model_id}' has no such revision: drop the revision or check its name.", model_id=model_id)
            )
        if isinstance(e, (LocalEntryNotFoundError, OfflineModeIsEnabled)) or _looks_offline(e):
            return offline_error(model_id)
        if isinstance(e, MemoryError) or "out of memory" in str(e).lower():
            return ModelError(
                msg(
                    "Not enough memory to load '{model_id}': pick a smaller model or load it in 4 bit.",
                    model_id=model_id,
                )
            )
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ModelError(msg("Could not load '{model_id}': {first}", model_id=model_id, first=first[:300]))


def _looks_offline(e: BaseException) -> bool:
    text = f"{type(e).__name__} {e}".lower()
    return any(
        s in text
        for s in (
            "connecterror",
            "connectionerror",
            "couldn't connect",
            "name or service not known",
            "temporary failure in name resolution",
            "network is unreachable",
            "max retries exceeded",
            "offline mode",
            "hf_hub_offline",
        )
    )


@functools.lru_cache(maxsize=4)
def cached_tokenizer(model_id: str):
    """load_tokenizer, memoised: the Dataset tab counts tokens on every validation and preview."""
    return load_tokenizer(model_id)


def thinking_switch(model_id: str | None, adapter_dir: str | None = None) -> bool:
    """Whether the model that answers (model_id, 'auto' resolved with adapter_dir as every tab does) has a chat
    template that reads `enable_thinking`, i.e. whether the 'Qwen3 thinking' switch does anything for it. Read from
    its tokenizer's chat template when that is at hand without building or downloading anything; otherwise (an
    embedded model not built yet, a hub model not downloaded) the Qwen3 family says yes, any other model no."""

    try:
        model_id = resolve_model(model_id, adapter_dir)
        spec = get_spec(model_id)
        family = "qwen3" in model_id.lower()
        at_hand = (spec.kind == "local" and is_available_offline(model_id)) or (
            spec.kind == "hub" and hub_cached(model_id)
        )
        if spec.kind == "embedded" and model_id in REGISTRY:
            stamp = cache_dir() / "models" / model_id / ".lora_lab_build"
            at_hand = stamp.is_file() and stamp.read_text() == EMBEDDED_BUILD_VERSION[model_id]
        if not at_hand:
            return family
        return uses_thinking(cached_tokenizer(model_id))
    except Exception:  # noqa: BLE001 - a model that does not load: the switch is not offered
        return False


def load_tokenizer(model_id: str, trust_remote_code: bool = False):
    """The tokenizer of a registry model (with a pad token set)."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(model_path(model_id), trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - every failure becomes one clear line
        raise explain_load_error(exc, model_id) from exc
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    model_id: str,
    dtype: str = "fp32",
    device: str = "cpu",
    load_in_4bit: bool = False,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load model + tokenizer with transformers (the non-Unsloth path). dtype is bf16/fp16/fp32."""
    from transformers import AutoModelForCausalLM

    from lora_demo.device import torch_dtype  # deferred: device imports torch

    if trust_remote_code and get_spec(model_id).kind != "local":
        raise ModelError(msg("trust_remote_code is allowed only for local model folders you trust."))
    t0 = time.perf_counter()
    path = model_path(model_id)
    kwargs: dict = {"dtype": torch_dtype(dtype), "trust_remote_code": trust_remote_code, "use_safetensors": True}
    if load_in_4bit and not get_spec(model_id).prequantized_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch_dtype(dtype),
            bnb_4bit_use_double_quant=True,
        )
    if device == "cuda":
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}  # under DDP: this rank's GPU
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except Exception as exc:  # noqa: BLE001
        raise explain_load_error(exc, model_id) from exc
    tok = load_tokenizer(model_id, trust_remote_code)
    if device != "cuda" and "quantization_config" not in kwargs:
        model.to(device)
    model.eval()
    if env.debug():
        print(f"loaded {model_id} from {path} in {time.perf_counter() - t0:.1f}s")
    return LoadedModel(model, tok, model_id, path, time.perf_counter() - t0)
