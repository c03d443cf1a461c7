"""Adapter folders: what makes a folder a PEFT adapter, and which adapters the app's lists offer.

Chat, export, the Low-rank lab and the UI's lists all use these, so a folder is judged the same everywhere.
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from lora_demo.errors import InputError
from lora_demo.i18n import msg, render, translator
from lora_demo.io import read_text, regular_files
from lora_demo.models.registry import adapter_base_model
from lora_demo.rundir import ADAPTER_CONFIG, ADAPTER_WEIGHTS_BIN, CHECKPOINT_MARKER, CHECKPOINTS, AdapterDir, RunDir
from lora_demo.train.checkpoints import checkpoint_choices
from lora_demo.train.sizing import meta_model

# A run's status (status.json) as the adapter lists name it.
STATUS_WORDS = {
    "starting": msg("starting"),
    "loading": msg("loading"),
    "training": msg("training"),
    "saving": msg("saving"),
    "completed": msg("completed"),
    "stopped": msg("stopped"),
    "failed": msg("failed"),
}


def find_adapter_files(adapter_dir: str | Path) -> tuple[Path, Path]:
    """adapter_config.json and the weights file of a PEFT adapter folder, or one clear InputError."""
    path = Path(adapter_dir)
    if not path.is_dir():
        raise InputError(
            msg("Adapter folder {path} does not exist: pick a run, or check the path.", path=str(adapter_dir))
        )
    cfg, weights = AdapterDir(path).adapter_config_path, AdapterDir(path).weights_path
    if not cfg.is_file():
        nested = sorted(path.glob(f"*/{ADAPTER_CONFIG}"))
        if nested:
            raise InputError(
                msg(
                    "{path} holds no adapter: adapter_config.json is missing (did you mean {nested}?).",
                    path=str(adapter_dir),
                    nested=str(nested[0].parent),
                )
            )
        raise InputError(msg("{path} holds no adapter: adapter_config.json is missing.", path=str(adapter_dir)))
    if not weights.is_file():
        if (path / ADAPTER_WEIGHTS_BIN).is_file():
            raise InputError(
                msg(
                    "{path} has no adapter_model.safetensors. Only adapter_model.bin is there; LoRA Lab "
                    "reads safetensors only.",
                    path=str(adapter_dir),
                )
            )
        raise InputError(msg("{path} has no adapter_model.safetensors.", path=str(adapter_dir)))
    regular_files(path, (cfg.name, weights.name))  # the weights and config are never read through a link
    return cfg, weights


@dataclass
class AdapterInfo:
    """What check_adapter found in a PEFT LoRA adapter folder."""

    path: Path
    config: dict  # adapter_config.json
    r: int
    lora_alpha: float
    target_modules: list[str] | str
    base_model: str | None  # base_model_name_or_path
    modules: dict[str, tuple[int, int, int]]  # module name in the base model -> (rank, in_features, out_features)
    size: int  # bytes of adapter_model.safetensors


_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$")


def _read_config(cfg_path: Path, folder: str) -> dict:
    """adapter_config.json as a JSON object (read never through a symlink), or one clear InputError."""
    try:
        config = json.loads(read_text(cfg_path))  # never through a symlink
    except InputError:
        raise
    except OSError as e:
        raise InputError(
            msg("Cannot read {file} in {path}: {why}.", file=ADAPTER_CONFIG, path=folder, why=str(e.strerror or e))
        ) from None
    except (ValueError, RecursionError) as e:  # not JSON, not UTF-8, or nested too deeply
        why = (
            e.msg
            if isinstance(e, json.JSONDecodeError)
            else msg("nested too deeply")
            if isinstance(e, RecursionError)
            else msg("not UTF-8 text")
        )
        raise InputError(
            msg(
                "adapter_config.json in {path} is not valid JSON ({why}): the run was interrupted while "
                "saving, or the file was edited; pick another run or checkpoint.",
                path=folder,
                why=why,
            )
        ) from None
    if not isinstance(config, dict):
        raise InputError(
            msg("adapter_config.json in {path} is not a JSON object: pick another run or checkpoint.", path=folder)
        )
    return config


def check_adapter(adapter_dir: str | Path) -> AdapterInfo:
    """The adapter folder's config and weights, checked before anything loads them, or one clear InputError: a
    config that is no JSON object or has no positive whole r, a number lora_alpha and target modules; a weights
    file that is torn or empty (its safetensors header does not fit the file); LoRA factors whose ranks differ
    from the config's r (or rank_pattern). Chat, the Low-rank lab, the exports and Continue all call it first."""
    cfg_path, weights = find_adapter_files(adapter_dir)
    folder = str(adapter_dir)
    config = _read_config(cfg_path, folder)
    r, alpha, targets = config.get("r"), config.get("lora_alpha"), config.get("target_modules")
    rank_pattern = config.get("rank_pattern") or {}
    _check_shape_fields(r, rank_pattern, alpha, targets, folder)
    size = weights.stat().st_size
    modules = _checked_modules(_factor_shapes(weights, size, folder), r, rank_pattern, folder)
    base = config.get("base_model_name_or_path")
    return AdapterInfo(
        Path(adapter_dir), config, r, float(alpha), targets, base if isinstance(base, str) else None, modules, size
    )


def _whole(v) -> bool:
    """Whether v is a rank: a whole number of at least 1 (a bool is not)."""
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _check_shape_fields(r, rank_pattern, alpha, targets, folder: str) -> None:
    """An InputError unless the config's r, rank_pattern, lora_alpha and target_modules are usable."""
    bad = None
    if not _whole(r):
        bad = ("r", msg("the LoRA rank must be a whole number of at least 1"), r)
    elif not isinstance(rank_pattern, dict) or not all(_whole(v) for v in rank_pattern.values()):
        bad = ("rank_pattern", msg("each rank must be a whole number of at least 1"), rank_pattern)
    elif isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
        bad = ("lora_alpha", msg("it must be a number"), alpha)
    elif not (isinstance(targets, str) and targets.strip()) and not (
        isinstance(targets, list) and targets and all(isinstance(t, str) and t for t in targets)
    ):
        bad = ("target_modules", msg("it must name the modules the adapter trains"), targets)
    if bad:
        raise InputError(
            msg(
                "adapter_config.json in {path} has {key} = {value}: {why}. Pick another run or checkpoint.",
                path=folder,
                key=bad[0],
                value=_shown(bad[2]),
                why=bad[1],
            )
        )


def _factor_shapes(weights: Path, size: int, folder: str) -> dict[str, dict[str, list[int]]]:
    """{module: {"A": shape, "B": shape}} of the LoRA factors in the weights file (of `size` bytes), read from its
    header alone; an InputError for a torn or empty file, or one without LoRA factors."""
    from safetensors import safe_open  # (a compiled extension: loaded when an adapter is first checked)

    shapes: dict[str, dict[str, list[int]]] = {}
    try:
        with safe_open(str(weights), framework="pt") as f:  # reads the header and checks it against the file's length
            for key in f.keys():  # noqa: SIM118 - safe_open is not a dict
                m = _LORA_KEY.match(key)
                if m:
                    shapes.setdefault(m["module"], {})[m["ab"]] = list(f.get_slice(key).get_shape())
    except Exception:  # noqa: BLE001 - safetensors raises its own SafetensorError (and OSError) for a torn file
        raise InputError(
            msg(
                "adapter_model.safetensors in {path} is torn or empty ({size} bytes): the run was "
                "interrupted while saving; resume it or pick a checkpoint.",
                path=folder,
                size=size,
            )
        ) from None
    if not shapes:
        raise InputError(
            msg("{folder} holds no LoRA weights (no lora_A/lora_B pairs in adapter_model.safetensors).", folder=folder)
        )
    return shapes


def _checked_modules(shapes: dict, r: int, rank_pattern: dict, folder: str) -> dict[str, tuple[int, int, int]]:
    """{module: (rank, in, out)} from the factors' shapes, or an InputError for a module missing a factor or
    whose rank differs from the config's r (or rank_pattern)."""
    modules = {}
    for name, ab in shapes.items():
        a, b = ab.get("A"), ab.get("B")
        if a is None or b is None or len(a) != 2 or len(b) != 2:
            raise InputError(
                msg(
                    "adapter_model.safetensors in {path} is incomplete: {module} lacks its lora_A or "
                    "lora_B factor. Pick another run or checkpoint.",
                    path=folder,
                    module=name,
                )
            )
        want = _rank_for(name, r, rank_pattern)
        if a[0] != want or b[1] != want:
            raise InputError(
                msg(
                    "adapter_model.safetensors in {path} does not match its adapter_config.json: {module} "
                    "has rank {got}, the config says r = {r}. Pick another run or checkpoint.",
                    path=folder,
                    module=name,
                    got=a[0] if a[0] != want else b[1],
                    r=want,
                )
            )
        modules[name] = (want, a[1], b[0])
    return modules


def _shown(value) -> str:
    """A config value as the messages show it (a long one cut short)."""
    text = json.dumps(value, ensure_ascii=False)  # a value read from adapter_config.json
    return text if len(text) <= 60 else text[:57] + "..."


def _rank_for(name: str, r: int, rank_pattern: dict) -> int:
    """The rank PEFT gives module `name`: the first rank_pattern key that matches its end, else r."""
    for pattern, rank in rank_pattern.items():
        try:
            hit = re.match(rf"(.*\.)?({pattern})$", name) is not None  # as PEFT's get_pattern_key
        except re.error:
            hit = name.endswith(str(pattern))
        if hit:
            return rank
    return r


def module_shapes(model) -> dict[str, tuple[int, int] | None]:
    """{module name: (in_features, out_features), or None where a module has no such sizes} of a model (real or on
    the meta device): what check_adapter_fits compares an adapter with."""
    return {
        name: (int(m.in_features), int(m.out_features))
        if hasattr(m, "in_features") and hasattr(m, "out_features")
        else None
        for name, m in model.named_modules()
    }


def check_adapter_fits(info: AdapterInfo, shapes: dict[str, tuple[int, int] | None], model: str = "") -> None:
    """An InputError unless every module the adapter targets exists in the model (`shapes`, from module_shapes)
    with the adapter's in/out sizes (where the model's module has known sizes)."""
    missing = [name for name in info.modules if name not in shapes]
    if missing:
        shown = ", ".join(missing[:3]) + (f" (+{len(missing) - 3})" if len(missing) > 3 else "")
        raise InputError(
            msg(
                "The adapter targets modules the model {model} does not have ({modules}): it was "
                "trained on another base model; pick that base.",
                model=model,
                modules=shown,
            )
        )
    for name, (_, n_in, n_out) in info.modules.items():
        if shapes[name] is not None and shapes[name] != (n_in, n_out):
            raise InputError(
                msg(
                    "The adapter does not fit the model {model}: {module} is {have} there, the adapter "
                    "was trained on {want}. It was trained on another base model; pick that base.",
                    model=model,
                    module=name,
                    have="×".join(map(str, shapes[name])),
                    want=f"{n_in}×{n_out}",
                )
            )


@functools.lru_cache(maxsize=8)
def _base_shapes(model_id: str) -> dict[str, tuple[int, int] | None] | None:
    """module_shapes of a model's architecture on the meta device (no weights), or None when it is not known
    offline (a hub id never downloaded, a folder without config.json)."""

    try:
        model, _, _ = meta_model(model_id)
    except Exception:  # noqa: BLE001 - no architecture at hand: nothing to compare with (the load will say why)
        return None
    return module_shapes(model)


def check_adapter_base(adapter_dir: str | Path, model_id: str | None = None) -> AdapterInfo:
    """check_adapter, then check_adapter_fits against `model_id` (default: the base the adapter names) built on
    the meta device, when its architecture is known offline: for those that do not load a model (Continue, the
    zip export)."""

    info = check_adapter(adapter_dir)
    model_id = model_id or adapter_base_model(adapter_dir)
    shapes = _base_shapes(model_id) if isinstance(model_id, str) and model_id.strip() else None
    if shapes is not None:
        check_adapter_fits(info, shapes, model_id)
    return info


def run_folder(adapter_dir: str | Path) -> Path:
    """The run an adapter belongs to: the folder itself, or for a checkpoint (<run>/checkpoints/checkpoint-N) its
    run, which holds the rows (data/), the votes and the exports."""
    run = RunDir.of_checkpoint(adapter_dir)
    return run.path if run is not None and run.data_dir.is_dir() else Path(adapter_dir)


def votes_file(adapter_dir: str | Path) -> Path:
    """Where an adapter's blind votes go: <run>/votes.jsonl, or <run>/votes-checkpoint-N.jsonl for a checkpoint
    (a checkpoint folder is pruned as training goes on; its votes must outlive it)."""
    path, run = Path(adapter_dir), RunDir(run_folder(adapter_dir))
    return run.votes_path if run.path == path else run.checkpoint_votes_path(path.name)


def find_adapters(root: str | Path, max_depth: int = 2) -> list[Path]:
    """PEFT adapter folders (holding adapter_config.json) under root, newest adapter first.

    "Newest" is when the adapter was written (its adapter_config.json), not the folder's mtime, which moves
    whenever something is added to the run folder (an export, a merged copy)."""
    root = Path(root)
    if not root.is_dir():
        return []
    configs = [p for d in range(1, max_depth + 1) for p in root.glob("/".join(["*"] * d) + "/" + ADAPTER_CONFIG)]
    return [cfg.parent for cfg in sorted(set(configs), key=_written, reverse=True)]


def adapter_choices(root: str | Path, lang: str = "en") -> list[tuple[str, str]]:
    """(label, path) of each adapter under root, newest run first: what the Chat and Low-rank lists offer.

    Each run's final adapter is followed by its checkpoints, newest step first (any of them can be the tuned
    side); a run that has checkpoints but no final adapter yet (training, or killed) is listed by them. The path
    is root/<folder> spelled as root is (relative when the app's --runs-dir is), which PathPolicy.check reads back
    the same way; the label is the folder inside root with its run's status and last loss, in `lang` (the lists
    are filled per request: a tab passes its session's lang())."""
    root = Path(root)
    groups: dict[Path, tuple[float, list[tuple[str, str]]]] = {}
    for folder in find_adapters(root):
        groups[folder] = (_written(AdapterDir(folder).adapter_config_path), [_final_choice(root, folder, lang)])
    runs = [c.parent for c in root.glob(f"*/{CHECKPOINTS}")] if root.is_dir() else []
    for run in runs:
        ckpts = _checkpoint_choices(root, run, lang)
        if ckpts:
            when, final = groups.get(run, (0.0, []))
            newest = _written(AdapterDir(ckpts[0][1]).adapter_config_path)
            groups[run] = (max(when, newest), final + ckpts)
    ordered = sorted(groups.values(), key=lambda g: g[0], reverse=True)
    return [choice for _, choices in ordered for choice in choices]


def _written(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # deleted while listing
        return 0.0


def _final_choice(root: Path, folder: Path, lang: str = "en") -> tuple[str, str]:
    tr = translator(lang)
    st = RunDir(folder).read_status()
    bits = [folder.relative_to(root).as_posix()]
    if st.get("status"):
        status = str(st["status"])
        bits.append(render(STATUS_WORDS.get(status, status), lang))
    if isinstance(st.get("final_loss"), (int, float)):
        bits.append(tr("loss {loss:.3f}", loss=st["final_loss"]))
    if AdapterDir(folder).truncated_path.is_file():
        bits.append(tr("rank-k copy"))
    return " · ".join(bits), str(folder)


def _checkpoint_choices(root: Path, run: Path, lang: str = "en") -> list[tuple[str, str]]:
    """A run's loadable checkpoints, newest step first, labelled with step and the loss logged there."""

    tr = translator(lang)
    out = []
    for step, ckpt in checkpoint_choices(run):
        try:
            info = json.loads((ckpt / CHECKPOINT_MARKER).read_text())
        except (OSError, ValueError):
            info = {}
        bits = [
            run.relative_to(root).as_posix(),
            tr("checkpoint step {step} of {total}", step=step, total=info["total"])
            if info.get("total")
            else tr("checkpoint step {step}", step=step),
        ]
        if isinstance(info.get("loss"), (int, float)):
            bits.append(tr("loss {loss:.3f}", loss=info["loss"]))
        out.append((" · ".join(bits), str(ckpt)))
    return out
