"""Named datasets as JSONL in the data folder: save (keeping the previous version), load, autosave, split.

Layout of the data folder:
    <name>.jsonl                       the current version of each saved dataset
    .history/<name>.<UTC time>.jsonl   every version a save replaced (nothing is ever overwritten)
    .autosave.jsonl                    the editor's table, written on every edit
Writes go to a temporary file first and are renamed into place, so a crash never leaves half a file.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from pathlib import Path

from lora_demo.data.formats import FIELDS, import_file
from lora_demo.data.verbatim import verbatim
from lora_demo.errors import InputError
from lora_demo.i18n import msg
from lora_demo.io import is_regular, read_json, to_jsonl, write_atomic, write_temp
from lora_demo.paths import inside, real_dir, safe_name

AUTOSAVE = ".autosave.jsonl"
DATASET_NAME = msg("dataset name")  # what lora_demo.paths calls a bad name in its messages


def clean_rows(rows) -> list[dict]:
    """Rows as plain {instruction, input, output} string dicts; blank rows (all fields empty) dropped."""
    if rows is None:
        return []
    if hasattr(rows, "to_dict"):  # a DataFrame from the editor
        rows = rows.fillna("").to_dict("records")
    out = []
    for r in rows:
        if isinstance(r, (list, tuple)):
            r = dict(zip(FIELDS, r, strict=False))
        row = {f: "" if r.get(f) is None else str(r.get(f)) for f in FIELDS}
        if any(v.strip() for v in row.values()):
            out.append(row)
    return out


def rows_to_jsonl(rows: list[dict]) -> str:
    """Canonical rows as JSONL (the fields in FIELDS order, a missing one as ""). Half a UTF-16 pair (a lone
    surrogate, which an API client can send) becomes U+FFFD: the file is always UTF-8."""
    return to_jsonl({f: _utf8(r.get(f, "")) for f in FIELDS} for r in rows)


def _utf8(text):
    return re.sub("[\ud800-\udfff]", "\ufffd", text) if isinstance(text, str) else text


class DatasetStore:
    """Saved datasets in one folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.stem for p in self.root.glob("*.jsonl") if not p.name.startswith(".") and is_regular(p))

    def path(self, name: str) -> Path:
        return inside(self.root, f"{safe_name(name, DATASET_NAME)}.jsonl", DATASET_NAME)

    def save(self, name: str, rows, val_fraction: float | None = None) -> Path:
        """Save rows under name; an existing version moves to .history first. Returns the file.

        val_fraction (the train/validation split chosen in the Dataset tab) is kept beside it in <name>.meta.json.
        """
        rows = clean_rows(rows)
        if not rows:
            raise InputError(msg("Nothing to save: the table has no rows."))
        path = self.path(name)
        tmp = write_temp(path, rows_to_jsonl(rows))  # the new version is safely on disk before anything moves
        if path.exists():
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"{time.time() % 1:.3f}"[1:]
            hist = real_dir(self.root, ".history") / f"{path.stem}.{stamp}.jsonl"
            os.replace(path, hist)
        os.replace(tmp, path)
        if val_fraction is not None:
            split_rows(rows, val_fraction)  # validates the fraction
            write_atomic(path.with_suffix(".meta.json"), json.dumps({"val_fraction": val_fraction}))
        return path

    def meta(self, name: str) -> dict:
        """Settings saved with a dataset (val_fraction), or {}."""
        p = self.path(name).with_suffix(".meta.json")
        try:
            data = read_json(p) if p.is_file() else {}
        except (OSError, ValueError, RecursionError):  # unreadable, not JSON, nested too deeply: no settings
            return {}
        return data if isinstance(data, dict) else {}

    def load(self, name: str) -> list[dict]:
        path = self.path(name)
        if not path.is_file():
            raise InputError(msg("No saved dataset named {name!r}: pick one from the list.", name=verbatim(name)))
        return import_file(path, max_mb=1e9).rows

    def history(self, name: str) -> list[Path]:
        stem = safe_name(name, DATASET_NAME)
        return sorted((self.root / ".history").glob(f"{stem}.*.jsonl"))

    def autosave(self, rows) -> int:
        """Write the editor's table (called on every edit). Returns the number of rows kept."""
        rows = clean_rows(rows)
        write_atomic(self.root / AUTOSAVE, rows_to_jsonl(rows))
        return len(rows)

    def restore_autosave(self) -> list[dict]:
        path = self.root / AUTOSAVE
        if not is_regular(path) or path.stat().st_size == 0:
            return []  # a symlinked autosave is never followed (its target would show in the page's editor)
        try:
            return import_file(path, max_mb=1e9).rows
        except InputError:
            return []

    def add_exchange(self, name: str, instruction: str, output: str, input: str = "") -> int:
        """Append one exchange (from the Chat tab) to a saved dataset, creating it if needed. Returns its row count."""
        if not str(instruction).strip() or not str(output).strip():
            raise InputError(msg("Both the prompt and the answer must be non-empty to add them as a row."))
        rows = self.load(name) if self.path(name).exists() else []
        rows.append({"instruction": instruction, "input": input, "output": output})
        self.save(name, rows)
        return len(rows)


def split_rows(rows: list[dict], val_fraction: float, seed: int = 3407) -> tuple[list[dict], list[dict]]:
    """A seeded shuffle split into (train, validation); at least one training row always remains."""
    if not 0 <= val_fraction < 1:
        raise InputError(msg("The validation fraction must be from 0 to below 1; got {value}.", value=val_fraction))
    idx = list(range(len(rows)))
    random.Random(seed).shuffle(idx)
    n_val = min(int(round(len(rows) * val_fraction)), max(len(rows) - 1, 0))
    val = sorted(idx[:n_val])
    train = sorted(idx[n_val:])
    return [rows[i] for i in train], [rows[i] for i in val]
