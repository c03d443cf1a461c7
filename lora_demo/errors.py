"""User-facing errors: one line that names the cause and the fix."""

from __future__ import annotations


class LoraLabError(Exception):
    """An error whose message is meant for the user as is (no stack trace)."""


class ModelError(LoraLabError):
    """A model id or folder that cannot be loaded."""


class InputError(LoraLabError):
    """Bad user input (a matrix, a setting, a file)."""


class LinkError(InputError, OSError):
    """A symbolic link where LoRA Lab reads or writes a file: never followed. An OSError too, so a lenient reader
    (a run's status, a list) treats it as an unreadable file, while a user action shows its message."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""
