"""Adapter folders: what makes a folder a PEFT adapter, and which adapters the app's lists offer.

Chat, export, the Low-rank lab and the UI's lists all use these, so a folder is judged the same everywhere.
"""

from __future__ import annotations

from pathlib import Path

from lora_demo.errors import InputError
from lora_demo.i18n import msg, render, translator

# A run's status (status.json) as the adapter lists name it.
STATUS_WORDS = {"starting": msg("starting"), "loading": msg("loading"), "training": msg("training"),
                "saving": msg("saving"), "completed": msg("completed"), "stopped": msg("stopped"),
                "failed": msg("failed")}  # fmt: skip


def find_adapter_files(adapter_dir: str | Path) -> tuple[Path, Path]:
    """adapter_config.json and the weights file of a PEFT adapter folder, or one clear InputError."""
    path = Path(adapter_dir)
    if not path.is_dir():
        raise InputError(
            msg("Adapter folder {path} does not exist: pick a run, or check the path.", path=str(adapter_dir))
        )
    cfg = path / "adapter_config.json"
    weights = path / "adapter_model.safetensors"
    if not cfg.is_file():
        nested = sorted(path.glob("*/adapter_config.json"))
        if nested:
            raise InputError(msg("{path} holds no adapter: adapter_config.json is missing (did you mean {nested}?).",
                                 path=str(adapter_dir), nested=str(nested[0].parent)))  # fmt: skip
        raise InputError(msg("{path} holds no adapter: adapter_config.json is missing.", path=str(adapter_dir)))
    if not weights.is_file():
        if (path / "adapter_model.bin").is_file():
            raise InputError(msg("{path} has no adapter_model.safetensors. Only adapter_model.bin is there; LoRA Lab "
                                 "reads safetensors only.", path=str(adapter_dir)))  # fmt: skip
        raise InputError(msg("{path} has no adapter_model.safetensors.", path=str(adapter_dir)))
    return cfg, weights


def run_folder(adapter_dir: str | Path) -> Path:
    """The run an adapter belongs to: the folder itself, or for a checkpoint (<run>/checkpoints/checkpoint-N) its
    run, which holds the rows (data/), the votes and the exports."""
    path = Path(adapter_dir)
    if (
        path.parent.name == "checkpoints"
        and path.name.startswith("checkpoint-")
        and (path.parent.parent / "data").is_dir()
    ):
        return path.parent.parent
    return path


def votes_file(adapter_dir: str | Path) -> Path:
    """Where an adapter's blind votes go: <run>/votes.jsonl, or <run>/votes-checkpoint-N.jsonl for a checkpoint
    (a checkpoint folder is pruned as training goes on; its votes must outlive it)."""
    path, run = Path(adapter_dir), run_folder(adapter_dir)
    return run / "votes.jsonl" if run == path else run / f"votes-{path.name}.jsonl"


def find_adapters(root: str | Path, max_depth: int = 2) -> list[Path]:
    """PEFT adapter folders (holding adapter_config.json) under root, newest adapter first.

    "Newest" is when the adapter was written (its adapter_config.json), not the folder's mtime, which moves
    whenever something is added to the run folder (an export, a merged copy)."""
    root = Path(root)
    if not root.is_dir():
        return []
    configs = [p for d in range(1, max_depth + 1) for p in root.glob("/".join(["*"] * d) + "/adapter_config.json")]
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
        groups[folder] = (_written(folder / "adapter_config.json"), [_final_choice(root, folder, lang)])
    runs = [c.parent for c in root.glob("*/checkpoints")] if root.is_dir() else []
    for run in runs:
        ckpts = _checkpoint_choices(root, run, lang)
        if ckpts:
            when, final = groups.get(run, (0.0, []))
            newest = _written(Path(ckpts[0][1]) / "adapter_config.json")
            groups[run] = (max(when, newest), final + ckpts)
    ordered = sorted(groups.values(), key=lambda g: g[0], reverse=True)
    return [choice for _, choices in ordered for choice in choices]


def _written(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # deleted while listing
        return 0.0


def _final_choice(root: Path, folder: Path, lang: str = "en") -> tuple[str, str]:
    from lora_demo.train.runs import read_status

    tr = translator(lang)
    st = read_status(folder)
    bits = [folder.relative_to(root).as_posix()]
    if st.get("status"):
        status = str(st["status"])
        bits.append(render(STATUS_WORDS.get(status, status), lang))
    if isinstance(st.get("final_loss"), (int, float)):
        bits.append(tr("loss {loss:.3f}", loss=st["final_loss"]))
    if (folder / "TRUNCATED.json").is_file():
        bits.append(tr("rank-k copy"))
    return " · ".join(bits), str(folder)


def _checkpoint_choices(root: Path, run: Path, lang: str = "en") -> list[tuple[str, str]]:
    """A run's loadable checkpoints, newest step first, labelled with step and the loss logged there."""
    import json

    from lora_demo.train.checkpoints import MARKER, checkpoint_choices

    tr = translator(lang)
    out = []
    for step, ckpt in checkpoint_choices(run):
        try:
            info = json.loads((ckpt / MARKER).read_text())
        except (OSError, ValueError):
            info = {}
        bits = [
            run.relative_to(root).as_posix(),
            tr("checkpoint step {step} of {total}", step=step, total=info["total"]) if info.get("total")
            else tr("checkpoint step {step}", step=step),
        ]  # fmt: skip
        if isinstance(info.get("loss"), (int, float)):
            bits.append(tr("loss {loss:.3f}", loss=info["loss"]))
        out.append((" · ".join(bits), str(ckpt)))
    return out
