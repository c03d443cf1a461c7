"""Editing rows as the Dataset tab's table does: add, duplicate, delete, clear; and guessing a column mapping."""

from __future__ import annotations

from typing import Literal

from lora_demo.data.formats import FIELDS
from lora_demo.errors import InputError
from lora_demo.i18n import msg


def table_rows(current) -> list[dict]:
    """Every row of an editor table as {instruction, input, output} strings, blank rows kept (adding a row must
    keep the blank rows added before it). Takes a DataFrame, a list of lists or a list of dicts."""
    if current is None:
        return []
    if hasattr(current, "to_dict"):
        current = current.fillna("").to_dict("records")
    out = []
    for r in current:
        if isinstance(r, (list, tuple)):
            r = dict(zip(FIELDS, r, strict=False))
        out.append({f: "" if r.get(f) is None else str(r.get(f)) for f in FIELDS})
    return out


def row_index(rows: list[dict], n) -> int:
    """The 0-based index of the 1-based row number n, or a message saying which numbers exist."""
    if not rows:
        raise InputError(msg("The table is empty: add or import rows first."))
    try:
        i = int(n)
    except (TypeError, ValueError):
        raise InputError(msg("Row number must be a whole number from 1 to {n}.", n=len(rows))) from None
    if not 1 <= i <= len(rows):
        raise InputError(msg("Row number must be from 1 to {n}; got {got}.", n=len(rows), got=n))
    return i - 1


def edit_rows(rows: list[dict], op: Literal["add", "dup", "del", "clear"], n=None) -> list[dict]:
    """A new list of rows with one edit applied (rows is not changed)."""
    rows = [dict(r) for r in rows]
    if op == "add":
        rows.append({f: "" for f in FIELDS})
    elif op == "dup":
        i = row_index(rows, n)
        rows.insert(i + 1, dict(rows[i]))
    elif op == "del":
        rows.pop(row_index(rows, n))
    elif op == "clear":
        rows = []
    else:
        raise InputError(msg("Unknown edit {op!r}.", op=op))
    return rows


def guess_mapping(columns: list[str]) -> dict[str, str | None]:
    """For each Alpaca field, the first column whose name contains it (e.g. 'Instruction text' -> instruction)."""
    return {f: next((c for c in columns if f in str(c).lower()), None) for f in FIELDS}
