"""Checkpoints: runs/<run>/checkpoints/checkpoint-<step>/, what Resume continues from and Chat can load.

transformers' Trainer writes each one (the PEFT adapter, optimizer.pt, scheduler.pt, rng_state.pth and
trainer_state.json, which holds the step and so the data position) and prunes old ones (save_total_limit).
LoRA Lab adds, once the Trainer is done with a folder, a copy of the run's config.yaml (so a checkpoint is a
self-describing adapter: its base model and prompt format travel with it) and the marker file MARKER. A folder
without the marker was cut off mid-save; a folder whose files fail their checksums was damaged later. Either is
set aside (renamed corrupt-checkpoint-<step>, never deleted) and the previous one is used, with a message.
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import yaml

from lora_demo.i18n import Msg, msg
from lora_demo.io import read_json, write_atomic, write_json_atomic
from lora_demo.rundir import ADAPTER_CONFIG, ADAPTER_WEIGHTS, CHECKPOINT_MARKER, CHECKPOINT_PREFIX, AdapterDir, RunDir

PREFIX = CHECKPOINT_PREFIX
MARKER = CHECKPOINT_MARKER
STATE_FILES = ("optimizer.pt", "scheduler.pt")  # what Resume needs beyond the adapter, with the RNG state(s)
AUTO_CHECKPOINTS = 5  # save_steps 0: about this many checkpoints over a run


def checkpoint_dir(run_dir: str | Path) -> Path:
    return RunDir(run_dir).checkpoints_dir


def step_of(ckpt: Path) -> int:
    try:
        return int(ckpt.name.removeprefix(PREFIX))
    except ValueError:
        return -1


def checkpoints(run_dir: str | Path) -> list[Path]:
    """The run's checkpoint folders, oldest step first (set-aside corrupt ones are not listed)."""
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.glob(PREFIX + "*") if p.is_dir() and step_of(p) >= 0]
    return sorted(found, key=step_of)


def save_every(save_steps: int, total_steps: int) -> int | None:
    """Steps between checkpoints: save_steps when > 0, none when -1, else about AUTO_CHECKPOINTS per run."""
    if save_steps < 0:
        return None
    if save_steps > 0:
        return save_steps
    return max(1, math.ceil(max(total_steps, 1) / AUTO_CHECKPOINTS))


def _zip_ok(path: Path) -> str | None:
    """torch.save writes a zip archive with a CRC per member: a torn or damaged file fails testzip()."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as e:
        return msg("{file} is unreadable ({why})", file=path.name, why=type(e).__name__)
    return msg("{file} is damaged (member {member} fails its checksum)", file=path.name, member=bad) if bad else None


def _safetensors_ok(path: Path) -> str | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:  # checks the header against the file's length
            f.metadata()
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for a torn file
        return msg("{file} is unreadable ({why})", file=path.name, why=str(e).splitlines()[0][:120])
    return None


def rng_files(ckpt: Path, processes: int) -> list[str]:
    """The Trainer's RNG state files: rng_state.pth, or one rng_state_<rank>.pth per process under DDP."""
    return ["rng_state.pth"] if processes <= 1 else [f"rng_state_{i}.pth" for i in range(processes)]


def _processes(ckpt: Path) -> int:
    try:
        cfg = AdapterDir(ckpt).read_config() or {}
        return int(cfg.get("num_processes") or 1) * int(cfg.get("num_nodes") or 1)  # one RNG file per process
    except (OSError, ValueError, yaml.YAMLError):
        return 1


def problem(ckpt: Path, for_resume: bool = True, deep: bool = True) -> Msg | None:
    """Why this checkpoint cannot be used (None: it is whole). for_resume also needs the optimizer and RNG states;
    deep reads the files (CRC of every .pt, the safetensors header), otherwise only their presence is checked."""
    if not (ckpt / MARKER).is_file():
        return msg("its save was cut off (it was never finished)")
    need = [ADAPTER_CONFIG, ADAPTER_WEIGHTS, "trainer_state.json"]
    resume_files = [*STATE_FILES, *rng_files(ckpt, _processes(ckpt))] if for_resume else []
    missing = [n for n in need + resume_files if not (ckpt / n).is_file()]
    if missing:
        return msg("{files} missing", files=", ".join(missing))
    if not deep:
        return None
    try:
        state = read_json(ckpt / "trainer_state.json")
    except (OSError, ValueError):
        return msg("trainer_state.json is unreadable")
    if state.get("global_step") != step_of(ckpt):
        return msg("trainer_state.json says step {said}, not {step}", said=state.get("global_step"), step=step_of(ckpt))
    checks = [_safetensors_ok(AdapterDir(ckpt).weights_path)]
    checks += [_zip_ok(ckpt / n) for n in resume_files]
    return next((c for c in checks if c), None)


def set_aside(ckpt: Path, why: str) -> Path:
    """Rename a bad checkpoint out of the Trainer's sight (it globs checkpoint-*), keeping it and the reason."""
    for i in range(1000):
        dest = ckpt.with_name(f"corrupt-{ckpt.name}" + (f"-{i + 1}" if i else ""))
        if not dest.exists():
            break
    ckpt.rename(dest)
    (dest / "WHY.txt").write_text(why + "\n", encoding="utf-8")
    return dest


def resumable(run_dir: str | Path) -> tuple[Path | None, list[Msg]]:
    """The newest whole checkpoint to resume from, and a message per newer one that is not whole (read only)."""
    skipped = []
    for ckpt in reversed(checkpoints(run_dir)):
        why = problem(ckpt)
        if why is None:
            return ckpt, skipped
        skipped.append(msg("Skipped {checkpoint}: {why}.", checkpoint=ckpt.name, why=why))
    return None, skipped


def pick_for_resume(run_dir: str | Path) -> tuple[Path | None, list[Msg]]:
    """resumable(), setting aside the bad checkpoints it skipped (so a resumed run can save those steps again)."""
    ckpt, skipped = resumable(run_dir)
    for bad in checkpoints(run_dir):
        if ckpt is None or step_of(bad) > step_of(ckpt):
            set_aside(bad, problem(bad) or "newer than the checkpoint resumed from")
    return ckpt, skipped


def finish(ckpt: Path, config_yaml: str, base_model: str, record: dict) -> None:
    """Make a checkpoint the Trainer has written whole and self-describing: the run's config beside the adapter,
    the registry id as its base, then the marker (written last: its presence means the folder is complete)."""

    write_atomic(AdapterDir(ckpt).config_path, config_yaml)
    cfg_file = AdapterDir(ckpt).adapter_config_path
    cfg = read_json(cfg_file)
    cfg["base_model_name_or_path"] = base_model
    write_atomic(cfg_file, json.dumps(cfg, indent=2))
    write_json_atomic(ckpt / MARKER, record)


def slim(run_dir: str | Path) -> int:
    """After a run completes nothing resumes it, so its checkpoints keep only their adapters (Chat and the
    Low-rank lab load those): the optimizer and RNG states, 2-3× the adapter's size, are removed. Bytes freed."""
    freed = 0
    for ckpt in checkpoints(run_dir):
        for path in [ckpt / n for n in (*STATE_FILES, "scaler.pt")] + list(ckpt.glob("rng_state*.pth")):
            if path.is_file():
                freed += path.stat().st_size
                path.unlink()
    return freed


def checkpoint_choices(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, folder) of each finished checkpoint with its adapter files, newest first. Listing only looks at which
    files are there (the lists refresh often); loading reads them, and says so if one is damaged."""
    return [(step_of(c), c) for c in reversed(checkpoints(run_dir)) if problem(c, for_resume=False, deep=False) is None]


def can_resume(run_dir: str | Path) -> bool:
    """Whether some finished checkpoint has every file Resume needs (presence only: for showing the button)."""
    return any(problem(c, deep=False) is None for c in checkpoints(run_dir))
