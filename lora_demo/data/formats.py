"""Read instruction data from JSON / JSONL / CSV / Parquet in Alpaca, ShareGPT or OpenAI-messages form.

Every reader returns the same canonical rows: {"instruction", "input", "output"} (all strings). Files whose
columns are not a known format come back with `needs_mapping=True` and their column names, so the user can map
them. Every failure is an InputError with one line: truncated JSON, binary data, an empty file, a file over the
size limit, a structure that is not supported.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from lora_demo import env
from lora_demo.data.verbatim import verbatim
from lora_demo.errors import InputError
from lora_demo.i18n import Msg, msg
from lora_demo.io import parse_jsonl, read_bytes, to_jsonl, too_deep, write_atomic

FIELDS = ("instruction", "input", "output")
MAX_UPLOAD_MB = env.max_upload_mb()
SUFFIXES = (".json", ".jsonl", ".csv", ".parquet")
_ROLE_USER = {"human", "user"}
_ROLE_BOT = {"gpt", "assistant", "bot", "model"}
# The encodings a text file may be imported in (codec name -> what the page and the messages call it).
ENCODINGS = {"utf-8": "UTF-8", "cp1252": "Windows-1252", "latin-1": "Latin-1"}
_SURROGATE = re.compile("[\ud800-\udfff]")
_JSON_TOKENS = re.compile(r'"(?:[^"\\\n]|\\.)*"|[\[\]{}\n]')


@dataclass
class ImportResult:
    rows: list[dict]  # canonical rows (empty when needs_mapping)
    format: str  # alpaca | sharegpt | messages | mapped | unknown
    columns: list[str] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)  # the raw records, kept for mapping
    needs_mapping: bool = False
    notes: list[Msg] = field(default_factory=list)


def read_records(path: str | Path, max_mb: float | None = None, encoding: str = "utf-8") -> list[dict]:
    """The raw records (list of dicts) of a JSON / JSONL / CSV / Parquet file; a text file is read strictly in
    `encoding` (ENCODINGS: UTF-8 by default, a UTF-8 BOM allowed; or Windows-1252 / Latin-1)."""
    codec = check_encoding(encoding)
    path = Path(path)
    name = verbatim(path.name)
    max_mb = MAX_UPLOAD_MB if max_mb is None else max_mb
    if not path.is_file():
        raise InputError(msg("{name}: no such file.", name=name))
    size = path.stat().st_size
    if size > max_mb * 2**20:
        raise InputError(
            msg(
                "{name} is {size:.1f} MB; the limit is {limit:g} MB. Split the file or trim it.",
                name=name,
                size=size / 2**20,
                limit=max_mb,
            )
        )
    if size == 0:
        raise InputError(msg("{name} is empty: it holds no rows.", name=name))
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(
            msg(
                "{name}: unsupported file type '{suffix}'. Use {allowed}.",
                name=name,
                suffix=suffix,
                allowed=", ".join(SUFFIXES),
            )
        )
    data = read_bytes(path)  # never through a symlink
    if suffix == ".parquet":
        return _read_parquet(data, name)
    text = _decode(data, name, codec)
    if suffix == ".csv":
        return _read_csv(text, name)
    if suffix == ".jsonl":
        return _read_jsonl(text, name)
    return _read_json(text, name)


def check_encoding(encoding) -> str:
    """The codec name of a file encoding the importer offers (utf-8, cp1252, latin-1 and their usual spellings)."""
    import codecs

    try:
        codec = codecs.lookup(encoding).name if isinstance(encoding, str) else None
    except LookupError:
        codec = None
    codec = {"iso8859-1": "latin-1"}.get(codec, codec)
    if codec not in ENCODINGS:
        raise InputError(
            msg(
                "Unknown file encoding {encoding!r}: use utf-8, cp1252 (Windows-1252) or latin-1.",
                encoding=str(encoding)[:40],
            )
        )
    return codec


def _decode(data: bytes, name: str, codec: str = "utf-8") -> str:
    """The text of a file in `codec`, decoded strictly: a byte that is not text in it is an InputError naming the
    line, the column and the bytes (nothing undecodable ever reaches the rows, the editor or the autosave)."""
    if b"\x00" in data[:4096]:
        raise InputError(
            msg("{name} is not a text file (it holds binary data): export it as UTF-8 JSON, JSONL or CSV.", name=name)
        )
    if data.startswith(b"\xef\xbb\xbf"):
        codec = "utf-8"  # a UTF-8 byte order mark says what the file is, whatever was picked
    try:
        text = data.decode("utf-8-sig" if codec == "utf-8" else codec)
    except UnicodeDecodeError as e:
        start = data.rfind(b"\n", 0, e.start) + 1
        where = {
            "name": name,
            "line": data.count(b"\n", 0, e.start) + 1,
            "column": len(data[start : e.start].decode(codec, errors="replace")) + 1,
            "bytes": " ".join(f"0x{b:02X}" for b in data[e.start : max(e.end, e.start + 1)][:4]),
        }
        if codec == "utf-8":
            m = msg(
                "{name} line {line} has bytes that are not UTF-8 ({bytes} at column {column}): save it as UTF-8, "
                "or import it as Windows-1252 or Latin-1 (the file encoding next to the upload; --encoding in the "
                "CLI).",
                **where,
            )
        else:
            m = msg(
                "{name} line {line} has bytes that are not {encoding} ({bytes} at column {column}): import it as "
                "Latin-1, or save it as UTF-8.",
                encoding=ENCODINGS[codec],
                **where,
            )
        raise InputError(m) from None
    text = text.lstrip("\ufeff")
    if not text.strip():
        raise InputError(msg("{name} is empty: it holds no rows.", name=name))
    return text


def _read_json(text: str, name: str) -> list[dict]:
    try:
        data = json.loads(text)
    except RecursionError:
        raise InputError(too_deep(name, _deep_line(text))) from None
    except json.JSONDecodeError as e:
        where = {"name": name, "why": e.msg, "line": e.lineno, "column": e.colno}
        if text.lstrip().startswith("{") and "\n{" in text.strip():
            m = msg(
                "{name} is not valid JSON: {why} (line {line}, column {column}). It looks like JSON Lines: "
                "rename it to .jsonl.",
                **where,
            )
        elif e.pos >= len(text.rstrip()) - 1 or e.msg.startswith("Unterminated string"):
            m = msg(
                "{name} is not valid JSON: {why} (line {line}, column {column}). The file looks cut off "
                "(truncated): re-export or re-download it.",
                **where,
            )
        else:
            m = msg("{name} is not valid JSON: {why} (line {line}, column {column}).", **where)
        raise InputError(m) from None
    except ValueError as e:  # a number of thousands of digits (Python's int conversion limit)
        raise InputError(msg("{name} is not valid JSON: {why}.", name=name, why=str(e).split(": ")[0][:120])) from None
    if isinstance(data, dict):
        for key in ("data", "rows", "train", "examples"):
            if isinstance(data.get(key), list):
                data = data[key]
                break
        else:
            raise InputError(
                msg("{name} holds a JSON object; LoRA Lab needs a JSON list of rows (or {{'data': [...]}}).", name=name)
            )
    if not isinstance(data, list):
        raise InputError(
            msg(
                "{name} holds a JSON {kind}; LoRA Lab needs a list of rows.",
                name=name,
                kind=verbatim(type(data).__name__),
            )
        )
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
        raise InputError(
            msg("{name} is not a readable Parquet file ({kind}).", name=name, kind=verbatim(type(e).__name__))
        ) from None
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
            raise InputError(
                msg(
                    "{name}: row {row} is a {kind}, not an object with named fields.",
                    name=name,
                    row=i,
                    kind=verbatim(type(r).__name__),
                )
            )
        bad = _lone_surrogate(r)
        if bad is not None:
            raise InputError(
                msg(
                    "{name}: row {row} holds the escape \\u{code:04x}, half of a character pair with no "
                    "other half: fix that escape in the file (or save the file as UTF-8 text).",
                    name=name,
                    row=i,
                    code=ord(bad),
                )
            )
    return records


def _lone_surrogate(value) -> str | None:
    """The first lone surrogate (from a \\udXXX escape in JSON) in a record's strings, else None: such text cannot
    be written as UTF-8, so it is refused at import rather than failing the autosave."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            hit = _SURROGATE.search(v)
            if hit:
                return hit.group()
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return None


def _deep_line(text: str, limit: int = 200) -> int:
    """The line where JSON text first nests deeper than `limit` lists/objects (strings skipped), else its last."""
    depth, line = 0, 1
    for m in _JSON_TOKENS.finditer(text):
        tok = m.group()
        if tok == "\n":
            line += 1
        elif tok in "[{":
            depth += 1
            if depth > limit:
                return line
        elif tok in "]}":
            depth -= 1
        else:
            line += tok.count("\n")
    return line


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
            raise InputError(
                msg(
                    "Column {column!r} (for {field}) is not in the file; its columns are {columns}.",
                    column=verbatim(col),
                    field=verbatim(f),
                    columns=sorted(cols),
                )
            )
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


def import_file(path: str | Path, max_mb: float | None = None, encoding: str = "utf-8") -> ImportResult:
    """Read a file (a text file in `encoding`) and convert it to canonical rows (or ask for a column mapping)."""
    return to_rows(read_records(path, max_mb, encoding))


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
