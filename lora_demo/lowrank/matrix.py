"""Parse and check the matrices users type, paste or upload (JSON list of rows, or CSV / whitespace rows)."""

from __future__ import annotations

import json
import math
import re

import numpy as np

from lora_demo.errors import InputError
from lora_demo.i18n import msg

MAX_CELLS = 4_000_000  # 2048 x 2048; larger pasted matrices are refused rather than freezing the browser


def parse_matrix(value, name: str | None = None) -> np.ndarray:
    """A 2-D float64 array from JSON text, CSV text, a list of rows, a DataFrame or an array.

    Raises InputError with one line for: empty input, ragged rows, non-numbers, NaN or inf. `name` says which
    matrix in those messages (a msg(...), e.g. msg("B matrix"); default "matrix").
    """
    name = name or msg("matrix")
    rows = _rows_from(value, name)
    if not rows or all(len(r) == 0 for r in rows):
        raise InputError(
            msg("The {name} is empty: give at least one row of numbers, e.g. [[1, 2], [3, 4]].", name=name)
        )
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        counts = ", ".join(str(len(r)) for r in rows[:6]) + (", …" if len(rows) > 6 else "")
        raise InputError(
            msg(
                "The {name} has ragged rows (values per row: {counts}): every row needs the same number of values.",
                name=name,
                counts=counts,
            )
        )
    out = np.empty((len(rows), widths.pop()), dtype=np.float64)
    for i, row in enumerate(rows):
        for j, cell in enumerate(row):
            out[i, j] = _number(cell, name, i, j)
    if out.size > MAX_CELLS:
        raise InputError(
            msg(
                "The {name} has {size:,} values; the limit is {limit:,}. Use a smaller matrix.",
                name=name,
                size=out.size,
                limit=MAX_CELLS,
            )
        )
    return out


def _rows_from(value, name: str) -> list[list]:
    if value is None:
        return []
    if hasattr(value, "to_numpy") and hasattr(value, "columns"):  # a DataFrame from gr.Dataframe
        value = value.to_numpy().tolist()
    if isinstance(value, np.ndarray):
        if value.ndim != 2:
            raise InputError(msg("The {name} must be 2-D (rows of numbers); got {ndim}-D.", name=name, ndim=value.ndim))
        return value.tolist()
    if isinstance(value, (list, tuple)):
        if value and not isinstance(value[0], (list, tuple, np.ndarray)):
            raise InputError(
                msg("The {name} must be a list of rows, e.g. [[1, 2], [3, 4]], not a flat list.", name=name)
            )
        return [list(r) for r in value]
    if not isinstance(value, str):
        raise InputError(
            msg(
                "The {name} must be text (JSON or CSV) or rows of numbers, not {kind}.",
                name=name,
                kind=type(value).__name__,
            )
        )
    text = value.strip()
    if not text:
        return []
    if text[0] in "[{":
        # Bare nan/inf (as numpy prints them) become JSON's NaN/Infinity, so they get the "finite" message below.
        text = re.sub(r"(?i)(?<![A-Za-z\"])(-?)(?:inf(?:inity)?)(?![A-Za-z\"])", r"\1Infinity", text)
        text = re.sub(r"(?i)(?<![A-Za-z\"])nan(?![A-Za-z\"])", "NaN", text)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(
                msg(
                    "The {name} is not valid JSON ({error} at line {line}, column {col}).",
                    name=name,
                    error=e.msg,
                    line=e.lineno,
                    col=e.colno,
                )
            ) from None
        if isinstance(data, dict):
            raise InputError(
                msg("The {name} must be a JSON list of rows, e.g. [[1, 2], [3, 4]], not an object.", name=name)
            )
        return _rows_from(data, name)
    return [[c for c in re.split(r"[,;\t ]+", line.strip()) if c != ""] for line in text.splitlines() if line.strip()]


def _number(cell, name: str, i: int, j: int) -> float:
    if isinstance(cell, bool):
        raise InputError(
            msg(
                "The {name} has a non-number at row {row}, column {col}: {cell}.",
                name=name,
                row=i + 1,
                col=j + 1,
                cell=repr(cell),
            )
        )
    try:
        x = float(cell)
    except (TypeError, ValueError):
        shown = repr(cell) if len(repr(cell)) < 40 else repr(cell)[:37] + "..."
        raise InputError(
            msg(
                "The {name} has a non-number at row {row}, column {col}: {cell}.",
                name=name,
                row=i + 1,
                col=j + 1,
                cell=shown,
            )
        ) from None
    if not math.isfinite(x):
        raise InputError(
            msg(
                "The {name} has {x} at row {row}, column {col}: only finite numbers are allowed.",
                name=name,
                x=x,
                row=i + 1,
                col=j + 1,
            )
        )
    return x


def check_rank(k, limit: int) -> int:
    """k as an int in 1..limit, or an InputError saying the allowed range."""
    try:
        kf = float(k)
    except (TypeError, ValueError):
        raise InputError(
            msg("The rank must be a whole number from 1 to {limit}; got {k!r}.", limit=limit, k=k)
        ) from None
    if not math.isfinite(kf) or kf != int(kf) or not 1 <= kf <= limit:
        raise InputError(
            msg("The rank must be a whole number from 1 to {limit} (= min(rows, columns)); got {k}.", limit=limit, k=k)
        )
    return int(kf)
