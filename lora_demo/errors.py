"""User-facing errors: one line that names the cause and the fix."""

from __future__ import annotations


class LoraLabError(Exception):
    """An error whose message is meant for the user as is (no stack trace)."""


class ModelError(LoraLabError):
    """A model id or folder that cannot be loaded."""


class InputError(LoraLabError):
    """Bad user input (a matrix, a setting, a file)."""
