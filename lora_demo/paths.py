"""Names users give (runs, datasets, exports) turned into safe folder names inside the app's folders."""

from __future__ import annotations

import re
from pathlib import Path

from lora_demo.errors import InputError

_SAFE = re.compile(r"^[A-Za-z0-9\u4e00-\u9fff][A-Za-z0-9\u4e00-\u9fff._-]{0,79}$")


def safe_name(name, what: str = "name") -> str:
    """The name itself when it is a plain file name (letters, digits, CJK, . _ -), else a clear InputError."""
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"The {what} is empty: use letters, digits, '.', '_' or '-'.")
    name = name.strip()
    if not _SAFE.match(name) or ".." in name:
        raise InputError(
            f"The {what} {name[:40]!r} is not allowed: use up to 80 letters, digits, '.', '_' or '-' "
            "(no slashes, no leading dot, no '..')."
        )
    return name


def inside(root: Path, name: str, what: str = "name") -> Path:
    """root/name for a safe name, guaranteed to stay inside root."""
    path = (Path(root) / safe_name(name, what)).resolve()
    if Path(root).resolve() not in path.parents:
        raise InputError(f"The {what} {name!r} points outside {root}.")
    return path
