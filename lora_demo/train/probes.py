"""Probe prompts: the model's answers to a few fixed prompts at step 0, at every checkpoint and at the end, so the
Train tab can show the model changing its answer as it learns.

The worker answers them with the model it is training (greedy, a few tokens, one left-padded batch), prompted
exactly as the training rows are (templates.prompt_ids). Each point is one line of probes.jsonl in the run
folder: {"step", "kind": "start"|"checkpoint"|"final", "answers": [...], "seconds"}.
"""

from __future__ import annotations

import time
from pathlib import Path

from lora_demo.data.templates import prompt_ids
from lora_demo.i18n import Msg
from lora_demo.io import append_jsonl, read_jsonl
from lora_demo.rundir import PROBES, RunDir

MAX_PROBES = 3
FILE = PROBES


def probe_rows(prompts: list[str], train_rows: list[dict], val_rows: list[dict], n: int = MAX_PROBES) -> list[dict]:
    """The user's prompts (as instructions), else the first n validation rows, else the first n training rows."""
    given = [p.strip() for p in prompts if isinstance(p, str) and p.strip()]
    if given:
        return [{"instruction": p, "input": ""} for p in given[:MAX_PROBES]]
    rows = val_rows or train_rows
    return [{"instruction": r.get("instruction", ""), "input": r.get("input", "")} for r in rows[: min(n, MAX_PROBES)]]


def answer(model, tok, rows: list[dict], s, max_new_tokens: int, unsloth: bool = False) -> list[str]:
    """Greedy answers of the model being trained, in one left-padded batch; its training mode and its gradient
    checkpointing are as before afterwards.

    unsloth: Unsloth's generate switches to inference (gradient checkpointing off, KV cache on) and back to training
    (checkpointing re-armed, KV cache off), but only for a model that is in training mode on entry: a model.eval()
    first left checkpointing off for the rest of the run (its peak memory grew several-fold; README). So the
    model goes in training mode. Whatever the library does, each module's checkpointing flag is put back as it was."""
    import torch

    ids = [prompt_ids(r, tok, s.template, s.enable_thinking) for r in rows]
    width = max(len(i) for i in ids)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    device = next(p for p in model.parameters()).device
    input_ids = torch.tensor([[pad] * (width - len(i)) + i for i in ids], device=device)
    mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids], device=device)
    was_training = model.training
    checkpointing = checkpointing_flags(model)
    model.train(unsloth)
    try:
        with torch.no_grad():
            out = model.generate(
                input_ids=input_ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                use_cache=True,
                pad_token_id=pad,
            )
    finally:
        model.train(was_training)
        for module, value in checkpointing.items():
            if getattr(module, "gradient_checkpointing", value) != value:
                module.gradient_checkpointing = value
    return [tok.decode(row[width:], skip_special_tokens=True).strip() for row in out]


def checkpointing_flags(model) -> dict:
    """{module: its gradient_checkpointing flag} for every module that has one as an attribute of its own or of its
    class (PEFT wrappers, which only forward the attribute to the model inside, are left out)."""
    flags = {}
    for m in model.modules():
        if "gradient_checkpointing" in m.__dict__:
            flags[m] = m.__dict__["gradient_checkpointing"]
        elif isinstance(getattr(type(m), "gradient_checkpointing", None), (bool, str)):
            flags[m] = type(m).gradient_checkpointing
    return flags


def record(
    run_dir: Path,
    step: int,
    kind: str,
    prompts: list[dict],
    answers: list[str],
    seconds: float,
    error: str | None = None,
) -> None:
    # An error is kept as English text and, for the UI to translate, as a message (ui/views/train.timeline_html).
    err = {"error": str(error), **({"error_msg": error.to_json()} if isinstance(error, Msg) else {})} if error else {}
    rec = {
        "step": step,
        "kind": kind,
        "time": round(time.time(), 3),
        "seconds": round(seconds, 3),
        "prompts": prompts,
        "answers": answers,
        **err,
    }
    append_jsonl(RunDir(run_dir).probes_path, rec)


def read(run_dir: str | Path) -> list[dict]:
    """The probe points so far, by step; for a resumed run the later answer at a step replaces the earlier one."""
    by_step: dict[int, dict] = {}
    for p in read_jsonl(RunDir(run_dir).probes_path):
        if isinstance(p.get("step"), int) and isinstance(p.get("answers"), list):
            by_step[p["step"]] = p
    return [by_step[k] for k in sorted(by_step)]
