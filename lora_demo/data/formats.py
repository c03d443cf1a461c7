"""Read instruction data from JSON / JSONL / CSV / Parquet in Alpaca, ShareGPT or OpenAI-messages form.

Every reader returns the same canonical rows: {"instruction", "input", "output"} (all strings). Files whose
columns are not a known format come back with `needs_mapping=True` and their column names, so the user can map
them. Every failure is an InputError with one line: truncated JSON, binary data, an empty file, a file over the
size limit, a structure that is not supported.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from lora_demo.data.verbatim import verbatim
from lora_demo.errors import InputError
from lora_demo.i18n import Msg, msg
from lora_demo.io import parse_jsonl, to_jsonl, write_atomic

FIELDS = ("instruction", "input", "output")
MAX_UPLOAD_MB = float(os.environ.get("LORA_LAB_MAX_UPLOAD_MB", "20"))
SUFFIXES = (".json", ".jsonl", ".csv", ".parquet")
_ROLE_USER = {"human", "user"}
_ROLE_BOT = {"gpt", "assistant", "bot", "model"}


@dataclass
class ImportResult:
    rows: list[dict]  # canonical rows (empty when needs_mapping)
    format: str  # alpaca | sharegpt | messages | mapped | unknown
    columns: list[str] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)  # the raw records, kept for mapping
    needs_mapping: bool = False
    notes: list[Msg] = field(default_factory=list)


def read_records(path: str | Path, max_mb: float | None = None) -> list[dict]:
    """The raw records (list of dicts) of a JSON / JSONL / CSV / Parquet file."""
    path = Path(path)
    name = verbatim(path.name)
    max_mb = MAX_UPLOAD_MB if max_mb is None else max_mb
    if not path.is_file():
        raise InputError(msg("{name}: no such file.", name=name))
    size = path.stat().st_size
    if size > max_mb * 2**20:
        raise InputError(msg("{name} is {size:.1f} MB; the limit is {limit:g} MB. Split the file or trim it.",
                             name=name, size=size / 2**20, limit=max_mb))  # fmt: skip
    if size == 0:
        raise InputError(msg("{name} is empty: it holds no rows.", name=name))
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(msg("{name}: unsupported file type '{suffix}'. Use {allowed}.", name=name, suffix=suffix,
                             allowed=", ".join(SUFFIXES)))  # fmt: skip
    data = path.read_bytes()
    if suffix == ".parquet":
        return _read_parquet(data, name)
    text = _decode(data, name)
    if suffix == ".csv":
        return _read_csv(text, name)
    if suffix == ".jsonl":
        return _read_jsonl(text, name)
    return _read_json(text, name)


def _decode(data: bytes, name: str) -> str:
    """UTF-8 text; bytes that are not UTF-8 are kept as lone surrogates so validation can point at the row."""
    if b"\x00" in data[:4096]:
        raise InputError(msg("{name} is not a text file (it holds binary data): export it as UTF-8 JSON, JSONL or CSV.",
                             name=name))  # fmt: skip
    text = data.decode("utf-8", errors="surrogateescape").lstrip("\ufeff")
    bad = sum(1 for ch in text if "\udc80" <= ch <= "\udcff")
    if bad > max(16, len(text) // 20):
        raise InputError(msg("{name} is not UTF-8 text ({bad} undecodable bytes): re-save it as UTF-8.", name=name,
                             bad=bad))  # fmt: skip
    if not text.strip():
        raise InputError(msg("{name} is empty: it holds no rows.", name=name))
    return text


def _read_json(text: str, name: str) -> list[dict]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        where = {"name": name, "why": e.msg, "line": e.lineno, "column": e.colno}
        if text.lstrip().startswith("{") and "\n{" in text.strip():
            m = msg("{name} is not valid JSON: {why} (line {line}, column {column}). It looks like JSON Lines: "
                    "rename it to .jsonl.", **where)  # fmt: skip
        elif e.pos >= len(text.rstrip()) - 1 or e.msg.startswith("Unterminated string"):
            m = msg("{name} is not valid JSON: {why} (line {line}, column {column}). The file looks cut off "
                    "(truncated): re-export or re-download it.", **where)  # fmt: skip
        else:
            m = msg("{name} is not valid JSON: {why} (line {line}, column {column}).", **where)
        raise InputError(m) from None
    if isinstance(data, dict):
        for key in ("data", "rows", "train", "examples"):
            if isinstance(data.get(key), list):
                data = data[key]
                break
        else:
            raise InputError(msg("{name} holds a JSON object; LoRA Lab needs a JSON list of rows (or "
                                 "{{'data': [...]}}).", name=name))  # fmt: skip
    if not isinstance(data, list):
        raise InputError(msg("{name} holds a JSON {kind}; LoRA Lab needs a list of rows.", name=name,
                             kind=verbatim(type(data).__name__)))  # fmt: skip
    return _check_records(data, name)


def _read_jsonl(text: str, name: str) -> list[dict]:
    return _check_records(parse_jsonl(text, name, strict=True), name)


def _read_csv(text: str, name: str) -> list[dict]:
    import pandas as pd

    try:
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as e:
        raise InputError(msg("{name} is not valid CSV: {why}", name=name, why=str(e).splitlines()[0][:200])) from None
    return _check_records(df.to_dict("records"), name)


def _read_parquet(data: bytes, name: str) -> list[dict]:
    import pandas as pd

    try:
        df = pd.read_parquet(io.BytesIO(data))
    except Exception as e:  # noqa: BLE001 - pyarrow raises many types for a damaged file
        raise InputError(msg("{name} is not a readable Parquet file ({kind}).", name=name,
                             kind=verbatim(type(e).__name__))) from None  # fmt: skip
    return _check_records([{k: _plain(v) for k, v in r.items()} for r in df.to_dict("records")], name)


def _plain(v):
    """Parquet nested values (numpy arrays of dicts) to plain lists."""
    if hasattr(v, "tolist"):
        v = v.tolist()
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def _check_records(records: list, name: str) -> list[dict]:
    if not records:
        raise InputError(msg("{name} holds no rows.", name=name))
    for i, r in enumerate(records, 1):
        if not isinstance(r, dict):
            raise InputError(msg("{name}: row {row} is a {kind}, not an object with named fields.", name=name, row=i,
                                 kind=verbatim(type(r).__name__)))  # fmt: skip
    return records


def detect_format(records: list[dict]) -> str:
    """alpaca | sharegpt | messages | unknown, from the first record's keys."""
    keys = set(records[0])
    if "conversations" in keys:
        return "sharegpt"
    if "messages" in keys:
        return "messages"
    if {"instruction", "output"} <= keys:
        return "alpaca"
    return "unknown"


def to_rows(records: list[dict], fmt: str | None = None) -> ImportResult:
    """Canonical rows from raw records, or needs_mapping with the column names."""
    fmt = fmt or detect_format(records)
    notes: list[Msg] = []
    if fmt == "alpaca":
        rows = [{f: _text(r.get(f)) for f in FIELDS} for r in records]
    elif fmt in ("sharegpt", "messages"):
        rows = [
            _chat_to_row(r.get("conversations" if fmt == "sharegpt" else "messages"), i, notes)
            for i, r in enumerate(records, 1)
        ]
    else:
        columns = list(dict.fromkeys(k for r in records[:50] for k in r))
        return ImportResult([], "unknown", columns, records, needs_mapping=True)
    if len(notes) > 5:
        notes = notes[:5] + [msg("... and {n} more", n=len(notes) - 5)]
    return ImportResult(rows, fmt, list(records[0]), records, notes=notes)


def apply_mapping(records: list[dict], mapping: dict[str, str | None]) -> list[dict]:
    """Rows built from user-chosen columns: mapping = {"instruction": col, "input": col or None, "output": col}."""
    for f in ("instruction", "output"):
        if not mapping.get(f):
            raise InputError(msg("Pick the column that holds the {field}.", field=verbatim(f)))
    cols = set().union(*(r.keys() for r in records[:50]))
    for f, col in mapping.items():
        if col and col not in cols:
            raise InputError(msg("Column {column!r} (for {field}) is not in the file; its columns are {columns}.",
                                 column=verbatim(col), field=verbatim(f), columns=sorted(cols)))  # fmt: skip
    return [{f: _text(r.get(mapping.get(f))) if mapping.get(f) else "" for f in FIELDS} for r in records]


def _text(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and v != v:  # NaN from pandas
        return ""
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else str(v)


def _chat_to_row(turns, index: int, notes: list[Msg]) -> dict:
    """The first user→assistant exchange of a conversation (system prompt kept as the input's context)."""
    if not isinstance(turns, list):
        raise InputError(msg("Row {row}: the conversation is not a list of turns.", row=index))
    system, user, bot = "", None, None
    for t in turns:
        if not isinstance(t, dict):
            raise InputError(msg("Row {row}: a turn is not an object with role/content (or from/value).", row=index))
        role = str(t.get("role", t.get("from", ""))).lower()
        content = _text(t.get("content", t.get("value")))
        if role == "system" and user is None:
            system = content
        elif role in _ROLE_USER and user is None:
            user = content
        elif role in _ROLE_BOT and user is not None and bot is None:
            bot = content
    if user is None or bot is None:
        raise InputError(msg("Row {row}: the conversation has no user turn followed by an assistant turn.", row=index))
    if sum(1 for t in turns if str(t.get("role", t.get("from", ""))).lower() in _ROLE_BOT) > 1:
        notes.append(msg("row {row}: only the first exchange of a multi-turn conversation was imported", row=index))
    return {"instruction": user, "input": system, "output": bot}


def import_file(path: str | Path, max_mb: float | None = None) -> ImportResult:
    """Read a file and convert it to canonical rows (or ask for a column mapping)."""
    return to_rows(read_records(path, max_mb))


def write_rows(rows: list[dict], path: str | Path) -> Path:
    """Write rows as JSONL/JSON/CSV/Parquet by suffix (used for exports and round-trip tests)."""
    import pandas as pd

    path = Path(path)
    clean = [{f: r.get(f, "") for f in FIELDS} for r in rows]
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        write_atomic(path, to_jsonl(clean))
    elif suffix == ".json":
        write_atomic(path, json.dumps(clean, ensure_ascii=False, indent=1))
    elif suffix == ".csv":
        pd.DataFrame(clean, columns=list(FIELDS)).to_csv(path, index=False)
    elif suffix == ".parquet":
        pd.DataFrame(clean, columns=list(FIELDS)).to_parquet(path, index=False)
    else:
        raise InputError(msg("Cannot write '{suffix}': use {allowed}.", suffix=suffix, allowed=", ".join(SUFFIXES)))
    return path
