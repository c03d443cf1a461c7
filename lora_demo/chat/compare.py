"""Greedy base and tuned answers on a run's own training and validation rows, beside the expected output."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lora_demo.adapters import run_folder
from lora_demo.chat.request import GenSettings
from lora_demo.errors import InputError
from lora_demo.i18n import msg
from lora_demo.io import read_jsonl
from lora_demo.rundir import AdapterDir, RunDir


@dataclass
class CompareRow:
    split: str
    instruction: str
    expected: str
    base: str = ""
    tuned: str = ""
    extra: dict = field(default_factory=dict)


def compare_on_rows(engine, run_dir: str | Path, limit: int = 6, max_new_tokens: int = 64) -> list[CompareRow]:
    """Greedy base and tuned answers on the run's own training and validation rows, beside the expected output.

    Each row is prompted as training prompted it (an Alpaca row's input stays its input)."""

    out: list[CompareRow] = []
    gen = GenSettings(max_new_tokens=max_new_tokens, greedy=True, repetition_penalty=1.0)
    adapter = str(run_dir) if AdapterDir(run_dir).has_adapter_config() else None  # else: load()'s
    for split in ("train", "val"):
        rows = read_jsonl(RunDir(run_folder(run_dir)).rows_path(split))  # a checkpoint: its run's rows
        for row in rows[: limit if split == "train" else max(2, limit // 2)]:
            shown = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
            res = engine.answer_pair(row, gen, adapter_dir=adapter)
            out.append(CompareRow(split, shown, row["output"], res["base"], res["tuned"]))
    if not out:
        raise InputError(
            msg(
                "{run_dir} has no data/train.jsonl: pick an adapter trained in LoRA Lab to compare on its rows.",
                run_dir=str(run_dir),
            )
        )
    return out
