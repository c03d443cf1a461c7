"""Run folders: runs/<unique name>/ holds everything about one training run.

config.yaml            TrainSettings (repeat with: python -m lora_demo train --config runs/<name>/config.yaml)
status.json            status (starting/loading/compiling/training/saving/completed/stopped/failed), times, pid
progress.jsonl         one JSON record per logging step (written by the worker's TrainerCallback)
train.log              the worker's stdout/stderr
data/train.jsonl, data/val.jsonl    the exact rows trained and validated on
adapter_config.json, adapter_model.safetensors, tokenizer files   the PEFT adapter
README.md              model card (Hugging Face layout)
STOP                   present when a stop was requested
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

from lora_demo.errors import InputError

ACTIVE = ("starting", "loading", "compiling", "training", "saving")
FINAL = ("completed", "stopped", "failed")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text.split("/")[-1]).strip("-.")[:40] or "run"


def new_run_dir(runs_dir: str | Path, model: str, dataset: str, name: str = "") -> Path:
    """A fresh, unique run folder (created atomically, so no run ever overwrites another)."""
    from lora_demo.paths import safe_name

    root = Path(runs_dir)
    root.mkdir(parents=True, exist_ok=True)
    base = safe_name(name, "run name") if name.strip() else (
        f"{time.strftime('%Y%m%d-%H%M%S')}-{_slug(model)}-{_slug(dataset.removeprefix('example:'))}"
    )  # fmt: skip
    for i in range(1000):
        path = root / (base if i == 0 else f"{base}-{i + 1}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise InputError(f"Could not find a free run name for {base!r}.")


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1))
    os.replace(tmp, path)


def read_status(run_dir: str | Path) -> dict:
    try:
        return json.loads((Path(run_dir) / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def update_status(run_dir: str | Path, **fields) -> dict:
    status = {**read_status(run_dir), **fields}
    write_json_atomic(Path(run_dir) / "status.json", status)
    return status


def read_progress(run_dir: str | Path) -> list[dict]:
    """The progress records so far (a half-written last line is skipped)."""
    out = []
    try:
        with open(Path(run_dir) / "progress.jsonl", encoding="utf-8") as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
    except OSError:
        pass
    return out


def log_tail(run_dir: str | Path, lines: int = 30) -> str:
    try:
        with open(Path(run_dir) / "train.log", "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 20000))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    # tqdm redraws with \r: keep the last state of each line
    return "\n".join(line.split("\r")[-1] for line in text.splitlines()[-lines:])


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) counts as alive here: its parent, the app's Runner, reaps it and records
    # the precise reason (e.g. "killed (SIGKILL)"), which this generic check could not know.
    return True


def reconcile(run_dir: Path, status: dict) -> dict:
    """A run whose status says active but whose worker is gone (killed, app restarted) is marked failed."""
    if status.get("status") in ACTIVE and not pid_alive(status.get("pid")):
        status = update_status(
            run_dir, status="failed", ended=time.time(),
            error=status.get("error") or "The training process ended unexpectedly (killed, or the app was restarted).",
        )  # fmt: skip
    return status


def run_summary(run_dir: Path) -> dict:
    st = reconcile(run_dir, read_status(run_dir))
    started, ended = st.get("started"), st.get("ended")
    duration = (ended or time.time()) - started if started else None
    return {
        "name": run_dir.name,
        "status": st.get("status", "unknown"),
        "model": st.get("model", ""),
        "dataset": st.get("dataset", ""),
        "final_loss": st.get("final_loss"),
        "eval_loss": st.get("eval_loss"),
        "step": st.get("step"),
        "total_steps": st.get("total_steps"),
        "duration_s": round(duration, 1) if duration is not None else None,
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "",
        "error": st.get("error"),
        "has_adapter": (run_dir / "adapter_model.safetensors").is_file(),
        "path": str(run_dir),
    }


def list_runs(runs_dir: str | Path) -> list[dict]:
    """Every run folder (those with a status.json), newest first."""
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    dirs = [p.parent for p in root.glob("*/status.json")]
    return [run_summary(d) for d in sorted(dirs, key=lambda p: p.stat().st_mtime, reverse=True)]


def request_stop(run_dir: str | Path) -> None:
    (Path(run_dir) / "STOP").write_text(str(time.time()))


def stop_requested(run_dir: str | Path) -> bool:
    return (Path(run_dir) / "STOP").exists()


def model_card(run_dir: Path, settings: dict, status: dict) -> str:
    """README.md in the Hugging Face model-card layout: base model, data, settings, final metrics."""
    import peft
    import torch
    import transformers
    import trl

    front = {
        "base_model": settings["model"],
        "library_name": "peft",
        "pipeline_tag": "text-generation",
        "tags": ["lora", "sft", "trl", "lora-lab", f"base_model:adapter:{settings['model']}"],
    }
    import yaml

    hp = "\n".join(f"- {k}: {v}" for k, v in settings.items() if k not in ("model", "dataset"))
    metrics = [
        f"- status: {status.get('status')}",
        f"- optimizer steps: {status.get('step')} of {status.get('total_steps')}",
    ]
    if status.get("final_loss") is not None:
        metrics.append(f"- final training loss: {status['final_loss']:.4f}")
    if status.get("first_loss") is not None:
        metrics.append(f"- first logged training loss: {status['first_loss']:.4f}")
    if status.get("eval_loss") is not None:
        metrics.append(f"- validation loss: {status['eval_loss']:.4f}")
    if status.get("started") and status.get("ended"):
        metrics.append(f"- duration: {status['ended'] - status['started']:.1f} s on {status.get('device', '?')}")
    return f"""---
{yaml.safe_dump(front, sort_keys=False).strip()}
---

# {run_dir.name}

A LoRA adapter for `{settings["model"]}`, trained with LoRA Lab ({status.get("backend", "transformers")} backend).

## Training data

`{settings["dataset"]}`: {status.get("train_rows", "?")} training rows, {status.get("val_rows", 0)} validation rows
(the exact rows are in `data/` next to this card), {settings["template"]} template.

## Training procedure

{hp}

## Results

{chr(10).join(metrics)}

## How to use

```python
from peft import PeftModel
from transformers import AutoModelForCausalLM
model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("{settings["model"]}"), "{run_dir.name}")
```
Repeat this run: `python -m lora_demo train --config {run_dir.name}/config.yaml`

## Framework versions

- PEFT {peft.__version__}, Transformers {transformers.__version__}, TRL {trl.__version__}, PyTorch {torch.__version__}
"""
