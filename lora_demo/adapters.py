"""Adapter folders: what makes a folder a PEFT adapter, and which adapters the app's lists offer.

Chat, export, the Low-rank lab and the UI's lists all use these, so a folder is judged the same everywhere.
"""

from __future__ import annotations

from pathlib import Path

from lora_demo.errors import InputError


def find_adapter_files(adapter_dir: str | Path) -> tuple[Path, Path]:
    """adapter_config.json and the weights file of a PEFT adapter folder, or one clear InputError."""
    path = Path(adapter_dir)
    if not path.is_dir():
        raise InputError(f"Adapter folder {adapter_dir} does not exist: pick a run, or check the path.")
    cfg = path / "adapter_config.json"
    weights = path / "adapter_model.safetensors"
    if not cfg.is_file():
        nested = sorted(path.glob("*/adapter_config.json"))
        hint = f" (did you mean {nested[0].parent}?)" if nested else ""
        raise InputError(f"{adapter_dir} holds no adapter: adapter_config.json is missing{hint}.")
    if not weights.is_file():
        bin_file = path / "adapter_model.bin"
        why = " Only adapter_model.bin is there; LoRA Lab reads safetensors only." if bin_file.is_file() else ""
        raise InputError(f"{adapter_dir} has no adapter_model.safetensors.{why}")
    return cfg, weights


def find_adapters(root: str | Path, max_depth: int = 2) -> list[Path]:
    """PEFT adapter folders (holding adapter_config.json) under root, newest adapter first.

    "Newest" is when the adapter was written (its adapter_config.json), not the folder's mtime, which moves
    whenever something is added to the run folder (an export, a merged copy)."""
    root = Path(root)
    if not root.is_dir():
        return []
    configs = [p for d in range(1, max_depth + 1) for p in root.glob("/".join(["*"] * d) + "/adapter_config.json")]

    def written(cfg: Path) -> float:
        try:
            return cfg.stat().st_mtime
        except OSError:  # deleted while listing
            return 0.0

    return [cfg.parent for cfg in sorted(set(configs), key=written, reverse=True)]


def adapter_choices(root: str | Path) -> list[tuple[str, str]]:
    """(label, path) of each adapter under root, newest first: what the Chat and Low-rank lists offer.

    The path is root/<folder> spelled as root is (relative when the app's --runs-dir is), which PathPolicy.check
    reads back the same way; the label is the folder inside root with its run's status and last loss."""
    from lora_demo.train.runs import read_status

    out = []
    for folder in find_adapters(root):
        st = read_status(folder)
        bits = [folder.relative_to(root).as_posix()]
        if st.get("status"):
            bits.append(str(st["status"]))
        if isinstance(st.get("final_loss"), (int, float)):
            bits.append(f"loss {st['final_loss']:.3f}")
        if (folder / "TRUNCATED.json").is_file():
            bits.append("rank-k copy")
        out.append((" · ".join(bits), str(folder)))
    return out
