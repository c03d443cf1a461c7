"""Continue training: a new run that starts from an existing adapter (its parent) instead of new LoRA factors.

The child keeps the parent's base model and LoRA shape (rank, alpha, target modules, rsLoRA): the parent's A and
B are loaded into the child's LoRA layers before the first step. The child records the parent in its
config.yaml (init_adapter), its status (parent) and its model card; the Low-rank lab compares their ΔW.
"""

from __future__ import annotations

from pathlib import Path

from lora_demo.adapters import check_adapter, check_adapter_base
from lora_demo.errors import InputError
from lora_demo.i18n import Msg, msg
from lora_demo.io import read_json
from lora_demo.models.registry import adapter_base_model
from lora_demo.rundir import AdapterDir
from lora_demo.train.settings import TrainSettings


def parent_config(adapter_dir: str | Path) -> dict:
    """The parent's PEFT adapter_config.json (InputError when the folder is no adapter, or a torn or bad one)."""

    return check_adapter(adapter_dir).config


def parent_problems(s) -> list[Msg]:
    """What makes settings s unable to continue from s.init_adapter (empty: fine, or no parent)."""
    if not s.init_adapter:
        return []
    try:
        cfg = parent_config(s.init_adapter)
    except InputError as e:
        return [msg("Continue from: {error}", error=e.args[0] if len(e.args) == 1 else str(e))]

    want = {"model": adapter_base_model(s.init_adapter), **_shape(cfg)}
    have = {
        "model": s.model,
        "r": s.r,
        "lora_alpha": s.lora_alpha,
        "target_modules": sorted(s.target_modules),
        "use_rslora": s.use_rslora,
    }
    name = Path(s.init_adapter).name
    problems = [
        msg(
            "{key} must equal the parent's when continuing from {name} ({want!r}, not {have!r})",
            key=key,
            name=name,
            want=want[key],
            have=have[key],
        )
        for key in want
        if want[key] is not None and want[key] != have[key]
    ]
    if not problems:  # the parent's modules must be the model's: else the worker would fail after loading it
        try:
            check_adapter_base(s.init_adapter, s.model)
        except InputError as e:
            problems.append(msg("Continue from: {error}", error=e.args[0] if len(e.args) == 1 else str(e)))
    return problems


def _shape(cfg: dict) -> dict:
    """The LoRA shape a child must keep, from the parent's adapter_config.json (a rank-k copy's says r = k)."""
    targets = cfg.get("target_modules") or []
    targets = [targets] if isinstance(targets, str) else list(targets)  # PEFT also allows one name or "all-linear"
    return {
        "r": cfg.get("r"),
        "lora_alpha": cfg.get("lora_alpha"),
        "target_modules": sorted(targets),
        "use_rslora": bool(cfg.get("use_rslora")),
    }


def continue_settings(parent_dir: str | Path, parent_path: str | None = None):
    """The parent's settings as a starting point for its child: the same everything, init_adapter set to the
    parent, a fresh name (the user may then change the dataset, epochs, learning rate...)."""

    parent_dir = Path(parent_dir)
    shape = _shape(parent_config(parent_dir))  # an adapter must be there; its shape wins over its run's config
    cfg = AdapterDir(parent_dir).config_path
    if cfg.is_file():
        data = TrainSettings.from_yaml(cfg).to_dict()
    else:  # an adapter from elsewhere: the rest are this device's defaults
        data = TrainSettings(model=adapter_base_model(parent_dir) or "auto").to_dict()
    data.update(shape, init_adapter=parent_path or str(parent_dir), run_name="")
    settings = TrainSettings.from_dict(data)

    check_adapter_base(parent_dir, settings.model)  # an adapter of another base: say so now, not at Start
    return settings


def parent_of(adapter_dir: str | Path) -> str:
    """The adapter a run (or one of its checkpoints) was continued from, as its config.yaml records it."""
    import yaml

    folder = AdapterDir(adapter_dir)
    try:  # a rank-k copy's parent is the adapter it was cut from
        return read_json(folder.truncated_path)["source"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        parent = (folder.read_config() or {}).get("init_adapter") or ""
    except (OSError, yaml.YAMLError):
        parent = ""
    if not parent:
        raise InputError(
            msg(
                "{name} was not continued from another adapter, so it has no parent to compare with. "
                "'Continue training' on the Train tab makes a child run.",
                name=Path(adapter_dir).name,
            )
        )
    return parent


def load_parent_weights(model, adapter_dir: str | Path) -> None:
    """The parent's LoRA A and B into a freshly made PEFT model of the same shape (either backend)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = load_file(str(AdapterDir(adapter_dir).weights_path))
    result = set_peft_model_state_dict(model, state)
    unexpected = list(result.unexpected_keys)
    missing = [k for k in result.missing_keys if "lora_" in k]
    if unexpected or missing:
        raise InputError(
            msg(
                "The parent adapter {adapter} does not fit this model: {missing} LoRA weight(s) missing, "
                "{unexpected} unexpected (e.g. {example}).",
                adapter=str(adapter_dir),
                missing=len(missing),
                unexpected=len(unexpected),
                example=(missing + unexpected)[0],
            )
        )
