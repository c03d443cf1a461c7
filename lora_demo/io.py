"""Files, written so nothing a user made is ever half-written: JSONL rows and atomic (synced, renamed) writes.

Every module that reads or writes JSONL or replaces a file in place uses these, so there is one behaviour:
a torn last line (a writer killed mid-append) is skipped when reading leniently, reported with its line number
when reading strictly, and a replaced file is either the old one or the complete new one, even after a crash.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path

from lora_demo.errors import InputError
from lora_demo.i18n import msg


def read_jsonl(path: str | Path, strict: bool = False) -> list:
    """The JSON values of a .jsonl file's non-blank lines.

    strict=False (logs, run data): a missing file is [] and an unreadable line (a torn last line) is skipped.
    strict=True (a user's dataset): a missing file or a bad line is an InputError naming the line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        if strict:
            raise InputError(msg("Cannot read {name}: {why}.", name=path.name, why=str(e.strerror or e))) from None
        return []
    return parse_jsonl(text, path.name, strict)


def parse_jsonl(text: str, name: str | None = None, strict: bool = True) -> list:
    name = msg("the file") if name is None else name
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            if strict:
                raise InputError(msg("{name} line {line} is not valid JSON: {why} at column {column}.", name=name, line=i,
                                     why=e.msg, column=e.colno)) from None  # fmt: skip
    return out


def to_jsonl(records: Iterable) -> str:
    """One compact JSON value per line (UTF-8 kept as is, so Chinese rows stay readable)."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def append_jsonl(path: str | Path, record) -> None:
    """Append one record as one short write, so a reader never sees a line cut in the middle (except at a crash,
    which read_jsonl skips)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")


@contextmanager
def _temp_beside(path: Path, mode: str):
    """A synced temporary file in path's folder (so the final rename is atomic on the same file system)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o644)  # mkstemp makes 0600; a replaced file keeps the usual rw-r--r--
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f, Path(tmp)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise InputError(msg("Could not write {name}: {why} (is the disk full or the folder read-only?)",
                                 name=path.name, why=str(e.strerror or e))) from None  # fmt: skip
        raise


def write_temp(path: str | Path, data: str | bytes) -> Path:
    """Write data to a synced temporary file beside path and return it (rename it over path when ready)."""
    path = Path(path)
    with _temp_beside(path, "wb" if isinstance(data, bytes) else "w") as (f, tmp):
        f.write(data)
    return tmp


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Replace path with data: readers see the old file or the complete new one, never a mix."""
    path = Path(path)
    os.replace(write_temp(path, data), path)
    return path


def write_json_atomic(path: str | Path, data) -> Path:
    return write_atomic(path, json.dumps(data, ensure_ascii=False, indent=1))
