"""Files, written so nothing a user made is ever half-written, and never through a symbolic link.

Every module that reads, writes, copies or zips a file in the app's folders (runs/, data/, --allow-dir) uses these,
so there is one behaviour:
- a torn last line (a writer killed mid-append) is skipped when reading leniently, reported with its line number
  when reading strictly, and a replaced file is either the old one or the complete new one, even after a crash;
- a file is opened with O_NOFOLLOW: a symlink planted in a run or data folder (notes.txt -> /etc/passwd,
  votes.jsonl -> ~/.bashrc) is refused with a message, so nothing outside the folders is read, appended to,
  copied or zipped through it. Folders are checked where the app enters them (paths.PathPolicy, paths.real_dir).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path

from lora_demo.errors import InputError, LinkError
from lora_demo.i18n import msg


def link_error(path: Path) -> LinkError:
    return LinkError(
        msg(
            "{name} in {folder} is a symbolic link: LoRA Lab reads and writes only regular files in its "
            "folders, so links (which may point outside them) are never followed. Replace the link "
            "with a copy of the file.",
            name=path.name,
            folder=str(path.parent),
        )
    )


def open_fd(path: str | Path, flags: int = os.O_RDONLY, mode: int = 0o644) -> int:
    """os.open with O_NOFOLLOW: a symlink at path is an InputError (link_error), never followed. Other OSErrors
    (missing file, permissions) pass through for the caller to word."""
    path = Path(path)
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), mode)
    except OSError as e:
        if e.errno == errno.ELOOP or (e.errno == errno.ENOTDIR and path.is_symlink()):
            raise link_error(path) from None
        raise
    return fd


def read_bytes(path: str | Path) -> bytes:
    """A regular file's bytes (a symlink is refused, see open_fd)."""
    with os.fdopen(open_fd(path), "rb") as f:
        return f.read()


def read_text(path: str | Path, errors: str = "strict") -> str:
    """A regular file's UTF-8 text (a symlink is refused, see open_fd)."""
    return read_bytes(path).decode("utf-8", errors)


def read_json(path: str | Path):
    return json.loads(read_text(path))


def is_regular(path: str | Path) -> bool:
    """A regular file, not a symlink (Path.is_file follows links; the app's lists and copies must not)."""
    return Path(path).is_file() and not Path(path).is_symlink()


def copy_file(src: str | Path, dest: str | Path) -> Path:
    """Copy a regular file's bytes to a new regular file (a symlink at either end is refused, never followed)."""
    dest = Path(dest)
    with os.fdopen(open_fd(src), "rb") as fin:
        with os.fdopen(open_fd(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
    return dest


def regular_files(folder: str | Path, names: Iterable[str] | None = None, skip: Iterable[str] = ()) -> list[Path]:
    """The files of a folder (or those of `names` that exist) to copy or zip, subfolders left out. A symlink among
    them is a LinkError before anything is written, so a copy or a zip never carries a file from outside."""
    folder, skip = Path(folder), set(skip)
    found = [folder / n for n in names] if names is not None else sorted(folder.iterdir())
    found = [p for p in found if p.name not in skip and (p.is_symlink() or p.is_file())]
    for p in found:
        if p.is_symlink():
            raise link_error(p)
    return found


def read_jsonl(path: str | Path, strict: bool = False) -> list:
    """The JSON values of a .jsonl file's non-blank lines.

    strict=False (logs, run data): a missing file is [] and an unreadable line (a torn last line) is skipped.
    strict=True (a user's dataset): a missing file or a bad line is an InputError naming the line.
    A symlink is refused either way (see open_fd)."""
    path = Path(path)
    try:
        text = read_text(path)
    except (OSError, UnicodeDecodeError) as e:
        if strict:
            why = str(getattr(e, "strerror", None) or e)
            raise InputError(msg("Cannot read {name}: {why}.", name=path.name, why=why)) from None
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
                raise InputError(
                    msg(
                        "{name} line {line} is not valid JSON: {why} at column {column}.",
                        name=name,
                        line=i,
                        why=e.msg,
                        column=e.colno,
                    )
                ) from None
        except (RecursionError, ValueError) as e:  # nested deeper than the parser goes; a 5000-digit number
            if strict:
                raise InputError(
                    too_deep(name, i)
                    if isinstance(e, RecursionError)
                    else msg(
                        "{name} line {line} is not valid JSON: {why}.",
                        name=name,
                        line=i,
                        why=str(e).split(": ")[0][:120],
                    )
                ) from None
    return out


def too_deep(name, line: int):
    """The message for JSON nested deeper than Python's parser goes (a RecursionError in json.loads)."""
    return msg(
        "{name} is nested too deeply (line {line}): rows are objects of text fields, not lists or objects "
        "hundreds of levels deep. Check how the file was made.",
        name=name,
        line=line,
    )


def to_jsonl(records: Iterable) -> str:
    """One compact JSON value per line (UTF-8 kept as is, so Chinese rows stay readable)."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def append_jsonl(path: str | Path, record) -> None:
    """Append one record as one short write, so a reader never sees a line cut in the middle (except at a crash,
    which read_jsonl skips)."""
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    fd = open_fd(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)  # never appends through a planted symlink
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@contextmanager
def _temp_beside(path: Path, mode: str):
    """A synced temporary file in path's folder (so the final rename is atomic on the same file system)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.parent.is_symlink():
        raise link_error(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:50]}.", suffix=".tmp", dir=path.parent)  # [:50]: within 255 bytes
    os.fchmod(fd, 0o644)  # mkstemp makes 0600; a replaced file keeps the usual rw-r--r--
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f, Path(tmp)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise InputError(
                msg(
                    "Could not write {name}: {why} (is the disk full or the folder read-only?)",
                    name=path.name,
                    why=str(e.strerror or e),
                )
            ) from None
        raise


def write_temp(path: str | Path, data: str | bytes) -> Path:
    """Write data to a synced temporary file beside path and return it (rename it over path when ready)."""
    path = Path(path)
    with _temp_beside(path, "wb" if isinstance(data, bytes) else "w") as (f, tmp):
        f.write(data)
    return tmp


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Replace path with data: readers see the old file or the complete new one, never a mix. A symlink at path
    is replaced by the file (the rename swaps the link itself); its target is never written."""
    path = Path(path)
    os.replace(write_temp(path, data), path)
    return path


def write_json_atomic(path: str | Path, data) -> Path:
    return write_atomic(path, json.dumps(data, ensure_ascii=False, indent=1))
