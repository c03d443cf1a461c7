"""The adapters attached to one loaded base model: each once, by its folder, up to a budget (least recently used
are detached), each with the prompt format its run was trained with.

PEFT keeps every attached adapter inside the one PeftModel (`load_adapter`, `delete_adapter`), under a name made
from the folder (PEFT's names become module keys, so no dots or slashes); requests name adapters by folder and
the registry maps them. Attaching or detaching changes the model, so callers hold the engine's lock.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path

from lora_demo import env
from lora_demo.errors import ModelError
from lora_demo.i18n import msg
from lora_demo.rundir import AdapterDir


def adapter_key(adapter_dir: str | Path) -> str:
    """The one spelling of an adapter folder (absolute, symlinks resolved by the caller's policy)."""
    return str(Path(adapter_dir).absolute())


def peft_name(adapter_dir: str | Path) -> str:
    """A PEFT adapter name for a folder: its name's letters and a short hash (module keys allow no dots)."""
    key = adapter_key(adapter_dir)
    stem = "".join(c if c.isalnum() else "_" for c in Path(key).name)[:24]
    return f"a_{stem}_{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def run_template(adapter_dir: str | Path | None) -> dict:
    """The prompt format an adapter was trained with, from its run's config.yaml (Alpaca unless it says chat)."""
    if not adapter_dir:
        return {}
    folder = AdapterDir(adapter_dir)
    if not folder.config_path.is_file():
        return {}
    import yaml

    try:
        data = folder.read_config() or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return {k: data[k] for k in ("template", "enable_thinking", "model") if k in data} if isinstance(data, dict) else {}


class AdapterRegistry:
    """Which adapters are attached to a model, in least-recently-used order."""

    def __init__(self, max_adapters: int | None = None):
        self.max_adapters = max(1, int(max_adapters or env.chat_adapters()))
        self.names: OrderedDict[str, str] = OrderedDict()  # folder key -> PEFT name, least recently used first
        self.templates: dict[str, dict] = {}

    def __contains__(self, adapter_dir) -> bool:
        return adapter_dir is not None and adapter_key(adapter_dir) in self.names

    def __len__(self) -> int:
        return len(self.names)

    def name(self, adapter_dir) -> str:
        """The attached adapter's PEFT name (and it becomes the most recently used)."""
        key = adapter_key(adapter_dir)
        if key not in self.names:
            raise KeyError(key)
        self.names.move_to_end(key)
        return self.names[key]

    def template(self, adapter_dir) -> dict:
        return self.templates.get(adapter_key(adapter_dir), {}) if adapter_dir else {}

    def attach(self, model, adapter_dir, on_cuda: bool):
        """Attach an adapter folder (already checked against the model) to `model` (a base model: it becomes a
        PeftModel; or a PeftModel: one more adapter). Returns the model and the folders detached to stay within the
        budget. CUDA: the adapter in the model's 16-bit dtype (one dtype through each compiled layer); CPU: PEFT's
        default fp32 adapter (tiny bf16 matmuls cost several times fp32 ones there)."""
        from peft import PeftModel

        key, name = adapter_key(adapter_dir), peft_name(adapter_dir)
        try:
            if isinstance(model, PeftModel):
                model.load_adapter(str(adapter_dir), adapter_name=name, autocast_adapter_dtype=not on_cuda)
            else:
                model = PeftModel.from_pretrained(
                    model, str(adapter_dir), adapter_name=name, autocast_adapter_dtype=not on_cuda
                )
        except (ValueError, RuntimeError, KeyError) as e:
            error = str(e).splitlines()[0][:200]
            raise ModelError(
                msg(
                    "The adapter does not fit the loaded base model ({error}). Pick the base model it was trained on.",
                    error=error,
                )
            ) from None
        model.eval()
        self.names[key] = name
        self.templates[key] = run_template(adapter_dir)
        detached = []
        while len(self.names) > self.max_adapters:
            old_key, old_name = self.names.popitem(last=False)
            self.templates.pop(old_key, None)
            model.delete_adapter(old_name)
            detached.append(old_key)
        model.set_adapter(name)
        return model, detached

    def detach_all(self) -> None:
        self.names.clear()
        self.templates.clear()
