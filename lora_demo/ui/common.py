"""UI helpers: every handler's errors reach the browser as one clear message, never a stack trace."""

from __future__ import annotations

import functools
import inspect
import logging

import gradio as gr

from lora_demo.errors import LoraLabError

log = logging.getLogger("lora_demo.ui")


def friendly(fn):
    """Wrap a handler (plain or generator) so LoraLabError becomes gr.Error(message) and anything else a short
    message; the full trace goes to the server log only."""

    def convert(exc: BaseException) -> gr.Error:
        if isinstance(exc, gr.Error):
            return exc
        if isinstance(exc, LoraLabError):
            return gr.Error(str(exc), print_exception=False)
        log.exception("handler %s failed", fn.__name__)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        return gr.Error(f"Unexpected error ({type(exc).__name__}): {first}", print_exception=False)

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001
                raise convert(exc) from None

        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            raise convert(exc) from None

    return wrapper
