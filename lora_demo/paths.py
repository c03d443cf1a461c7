"""Names users give (runs, datasets, exports) turned into safe folder names inside the app's folders."""

from __future__ import annotations

import os
import re
from pathlib import Path

from lora_demo.errors import InputError
from lora_demo.i18n import msg

_SAFE = re.compile(r"^[A-Za-z0-9\u4e00-\u9fff][A-Za-z0-9\u4e00-\u9fff._-]{0,79}$")


def safe_name(name, what: str | None = None) -> str:
    """The name itself when it is a plain file name (letters, digits, CJK, . _ -), else a clear InputError.

    `what` names the thing in the messages: a msg("run name") (a plain English string is rendered too when the
    tables have it)."""
    what = msg("name") if what is None else what
    if not isinstance(name, str) or not name.strip():
        raise InputError(msg("The {what} is empty: use letters, digits, '.', '_' or '-'.", what=what))
    name = name.strip()
    if not _SAFE.match(name) or ".." in name:
        raise InputError(
            msg(
                "The {what} {name!r} is not allowed: use up to 80 letters, digits, '.', '_' or '-' "
                "(no slashes, no leading dot, no '..').",
                what=what,
                name=name[:40],
            )
        )
    return name


def inside(root: Path, name: str, what: str | None = None) -> Path:
    """root/name for a safe name, guaranteed to stay inside root."""
    what = msg("name") if what is None else what
    path = (Path(root) / safe_name(name, what)).resolve()
    if Path(root).resolve() not in path.parents:
        raise InputError(msg("The {what} {name!r} points outside {root}.", what=what, name=name, root=str(root)))
    return path


def real_dir(folder: Path, sub: str) -> Path:
    """folder/sub as a real folder inside folder (made if missing): a symlinked subfolder (data/.history -> /tmp,
    runs/x/checkpoints -> ~) is refused, so nothing is moved or written outside through it."""
    path = Path(folder) / sub
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise InputError(
            msg(
                "{name} in {folder} is a symbolic link or not a folder: LoRA Lab writes only into real "
                "folders inside its own. Remove it (a real folder is made in its place).",
                name=sub,
                folder=str(folder),
            )
        )
    path.mkdir(parents=True, exist_ok=True)
    return path


def _too_long(path: str, what):
    """Why the OS cannot take `path` (a folder or file name over 255 bytes, a path over 4095, half of a UTF-16 pair),
    or None."""
    try:
        raw = os.fsencode(path)
    except UnicodeEncodeError:
        return msg(
            "The {what} holds a character that is not valid Unicode (half of a UTF-16 pair): type it again.", what=what
        )
    long = next((part for part in raw.split(b"/") if len(part) > 255), None)
    if long is not None:
        return msg(
            "The {what} has a folder or file name of {n} bytes ({start}…): names are limited to 255 bytes "
            "each. Shorten it.",
            what=what,
            n=len(long),
            start=long[:24].decode("utf-8", "ignore"),
        )
    if len(raw) > 4095:
        return msg("The {what} is {n} bytes long: paths are limited to 4095 bytes. Shorten it.", what=what, n=len(raw))
    return None


class PathPolicy:
    """The folders a shared app may read from: its own runs and data folders, plus folders the operator allows
    on the command line (--allow-dir). Every path that reaches the app from a browser or the API goes through
    check(), so no endpoint reads an arbitrary file (../../etc/passwd, /root/.ssh, ...)."""

    def __init__(self, roots):
        self.roots = [Path(r).expanduser().resolve() for r in roots]

    def check(self, path, what: str | None = None) -> Path:
        """The resolved path, if it lies inside one of the allowed folders; else a clear InputError.

        One rule for every path, whether it comes from a list the app offers, the API or typed text: an absolute
        path is taken as it is; a relative one is read from the working directory (the way the app's own lists
        spell it with a relative --runs-dir: "runs/<run>") and, failing that, from each allowed folder in turn
        ("<run>" inside runs/). The first reading that exists wins; when none exists, the first allowed reading
        is returned so the caller can say "does not exist". A reading outside the allowed folders never counts,
        so ../ traversal and symlinks out of them are refused exactly as before.
        """
        what = msg("path") if what is None else what
        if not isinstance(path, str):
            raise InputError(
                msg("The {what} must be text (a folder path), not {kind}.", what=what, kind=type(path).__name__)
            )
        if not path.strip():
            raise InputError(msg("The {what} is empty.", what=what))
        if "\x00" in path:
            raise InputError(msg("The {what} contains a NUL character.", what=what))
        too_long = _too_long(path.strip(), what)
        if too_long is not None:  # the OS would refuse it (OSError: File name too long) when it is resolved
            raise InputError(too_long)
        p = Path(path.strip()).expanduser()
        readings = [p] if p.is_absolute() else [Path.cwd() / p, *(r / p for r in self.roots)]
        allowed = [r for r in (c.resolve() for c in readings) if self.allows(r)]
        if not allowed:
            roots = ", ".join(str(r) for r in self.roots)
            raise InputError(
                msg(
                    "The {what} {path!r} is outside the folders this app may read ({roots}). "
                    "Start the app with --allow-dir FOLDER to add one.",
                    what=what,
                    path=path,
                    roots=roots,
                )
            )
        return next((r for r in allowed if r.exists()), allowed[0])

    def allows(self, resolved: Path) -> bool:
        """Whether an already resolved path is one of the allowed folders or lies inside one."""
        return any(resolved == r or r in resolved.parents for r in self.roots)
