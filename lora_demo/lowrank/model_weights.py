"""Real weight matrices from a model's safetensors, read lazily (no model is instantiated)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lora_demo.errors import InputError
from lora_demo.i18n import msg
from lora_demo.models.registry import get_spec, hub_cached, model_path


def _files(model_id: str) -> list[Path]:

    if get_spec(model_id).kind == "hub":
        if not hub_cached(model_id):
            raise InputError(
                msg("'{model}' is not downloaded: pick an embedded model or a local folder.", model=model_id)
            )
        from huggingface_hub import try_to_load_from_cache

        folder = Path(try_to_load_from_cache(model_id, "config.json")).parent
    else:
        folder = Path(model_path(model_id))
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise InputError(msg("'{model}' has no safetensors weights to read.", model=model_id))
    return files


def weight_names(model_id: str) -> list[str]:
    """Names of the 2-D projection weights (attention and MLP) of a model, in layer order."""
    from safetensors import safe_open

    names = []
    for file in _files(model_id):
        with safe_open(str(file), "pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open is not a dict
                if key.endswith("_proj.weight") and len(f.get_slice(key).get_shape()) == 2:
                    names.append(key)
    return sorted(names, key=lambda n: (int(n.split(".layers.")[1].split(".")[0]) if ".layers." in n else -1, n))


def model_weight(model_id: str, name: str) -> np.ndarray:
    """One weight matrix as float64 (d_out × d_in)."""
    from safetensors import safe_open

    for file in _files(model_id):
        with safe_open(str(file), "pt") as f:
            if name in f.keys():  # noqa: SIM118
                t = f.get_tensor(name)
                if t.ndim != 2:
                    raise InputError(msg("{name} is not a matrix (shape {shape}).", name=name, shape=tuple(t.shape)))
                return t.float().numpy().astype(np.float64)
    raise InputError(msg("'{model}' has no weight named {name!r}: pick one from the list.", model=model_id, name=name))
