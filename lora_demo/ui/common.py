"""UI helpers: every handler's errors reach the browser as one clear message, never a stack trace."""

from __future__ import annotations

import functools
import html
import inspect
import logging
import threading
import time
from collections import OrderedDict

import gradio as gr

from lora_demo.errors import LoraLabError
from lora_demo.i18n import DEFAULT, msg, pick_lang, render

log = logging.getLogger("lora_demo.ui")


def _session_key() -> str | None:
    from gradio.context import LocalContext

    request = LocalContext.request.get(None)
    return getattr(request, "session_hash", None)


class _SessionLangs:
    """Each browser session's language (the switch at the top of the page; set at page load from --lang or the
    browser's language). Two visitors of one shared link each keep their own. Calls without a session (the
    API, tests) get the app's default language."""

    def __init__(self, size: int = 4096):
        self.size, self.lock, self.by_session = size, threading.Lock(), OrderedDict()
        self.default = DEFAULT

    def set(self, lang: str) -> str:
        lang, key = pick_lang(lang), _session_key()
        if key is not None:
            with self.lock:
                self.by_session[key] = lang
                self.by_session.move_to_end(key)
                while len(self.by_session) > self.size:
                    self.by_session.popitem(last=False)
        return lang

    def get(self) -> str:
        key = _session_key()
        with self.lock:
            return self.by_session.get(key, self.default) if key is not None else self.default


SESSION_LANG = _SessionLangs()


def lang() -> str:
    """The language of the browser session this handler runs for."""
    return SESSION_LANG.get()


def show(text):
    """Any text (a Msg from the engine, a plain string) in this session's language."""
    return render(text, lang())


# Handlers that re-render a dynamic panel when the language is switched: (fn, inputs, outputs), collected while
# build_app lays out the tabs (ui.app wires them after the switch).
ON_LANGUAGE: list[tuple] = []


def on_language(fn, inputs, outputs) -> None:
    """Re-run fn(inputs) → outputs after the page's language changes (fn renders with lang()/show()/say())."""
    ON_LANGUAGE.append((fn, inputs, outputs))


def dynamic(component):
    """Mark a component whose value a handler renders (its text is not a fixed label to translate)."""
    component._lab_dynamic = True
    return component


def say(template: str, **params) -> str:
    """A UI message in this session's language: say("Started **{name}**.", name=run)."""
    return render(msg(template, **params), lang())


class _LastErrors:
    """The last error message of each browser session, so the tab's status line can keep showing it.

    A failing handler raises gr.Error (the API caller gets the message, the browser a toast that fades); its
    `.failure()` follow-up (see show_errors) then reads the message from here and writes it into the status line
    next to the control, where it stays until the next action writes there."""

    def __init__(self, size: int = 2048):
        self.size, self.lock, self.by_session = size, threading.Lock(), OrderedDict()

    _session = staticmethod(_session_key)

    def remember(self, message: str) -> None:
        key = self._session()
        if key is None:
            return
        with self.lock:
            self.by_session[key] = (time.monotonic(), message)
            self.by_session.move_to_end(key)
            while len(self.by_session) > self.size:
                self.by_session.popitem(last=False)

    def pop(self, max_age_s: float = 30.0) -> str | None:
        """This session's last message, if it is fresh (a failure's follow-up runs right after it; an old message
        from an event without a status line must not show up under another control later)."""
        key = self._session()
        with self.lock:
            when, message = self.by_session.pop(key, (0.0, None)) if key is not None else (0.0, None)
        return message if time.monotonic() - when <= max_age_s else None


LAST_ERRORS = _LastErrors()


def error_markdown(message: str) -> str:
    """A status line that says what failed (escaped: messages can quote user input)."""
    return f'<div class="lab-error" role="alert" style="color:#b91c1c;font-weight:600">⚠️ {html.escape(message)}</div>'


def _show_last_error():
    message = LAST_ERRORS.pop()
    return error_markdown(message) if message else gr.skip()


def show_errors(event, status) -> None:
    """Keep a failed event's message visible in `status` (a Markdown next to the control) until the next action."""
    event.failure(_show_last_error, None, status, api_visibility="private", show_progress="hidden", queue=False)


def friendly(fn):
    """Wrap a handler (plain or generator) so LoraLabError becomes gr.Error(message) and anything else a short
    message; the full trace goes to the server log only."""

    def convert(exc: BaseException) -> gr.Error:
        if isinstance(exc, gr.Error):
            error = exc
        elif isinstance(exc, LoraLabError):
            error = gr.Error(show(exc.args[0] if len(exc.args) == 1 else str(exc)), print_exception=False)
        else:
            log.exception("handler %s failed", fn.__name__)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            error = gr.Error(say("Unexpected error ({kind}): {first}", kind=type(exc).__name__, first=first),
                             print_exception=False)  # fmt: skip
        LAST_ERRORS.remember(error.message)
        return error

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


def adapter_list(runs_dir, current, seen_newest, custom_ok: bool = True):
    """An adapter dropdown refreshed from the runs folder, newest first. The newest is preselected when it is new
    since this page's last refresh (a run just finished) or when nothing usable is picked; otherwise the user's
    pick stays. Returns (dropdown update, newest) — keep the second in a gr.State for the next refresh."""
    from lora_demo.adapters import adapter_choices

    choices = adapter_choices(runs_dir, lang())
    values = [v for _, v in choices]
    newest = values[0] if values else None
    keep = current and newest == seen_newest and (custom_ok or current in values)
    return gr.Dropdown(choices=choices, value=current if keep else newest), newest


def gen_settings(t, p, k, r, n, sd, sc, greedy):
    """GenSettings from the Chat tab's sliders (the same for the side-by-side chat and blind rounds)."""
    from lora_demo.chat.engine import GenSettings

    return GenSettings(max_new_tokens=n, greedy=bool(greedy), temperature=t, top_p=p, top_k=k, repetition_penalty=r,
                       seed=int(sd or 0), adapter_scale=sc)  # fmt: skip
