"""UI helpers: every handler's errors reach the browser as one clear message, never a stack trace."""

from __future__ import annotations

import functools
import html
import inspect
import logging
import time

import gradio as gr
from gradio.context import LocalContext

from lora_demo.engine import LabEngine
from lora_demo.errors import LoraLabError
from lora_demo.i18n import DEFAULT, msg, pick_lang, render
from lora_demo.ui.sessions import SessionStore

log = logging.getLogger("lora_demo.ui")


def session_key() -> str | None:
    """The browser (or API client) session a handler runs for: Gradio's session hash (None outside a request)."""
    request = LocalContext.request.get(None)
    return getattr(request, "session_hash", None)


class _SessionLangs:
    """Each browser session's language (the switch at the top of the page; set at page load from --lang or the
    browser's language). Two visitors of one shared link each keep their own. Calls without a session (the
    API, tests) get the app's default language."""

    def __init__(self, size: int = 4096):
        self.by_session = SessionStore(size)
        self.default = DEFAULT

    def set(self, lang: str) -> str:
        lang, key = pick_lang(lang), session_key()
        if key is not None:
            self.by_session.put(key, lang)
        return lang

    def get(self) -> str:
        key = session_key()
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


# Lists of the user's work (runs, datasets) filled when a page loads: built pages hold no names (nothing to see
# before login, nothing frozen at start). (fn, inputs, outputs, kwargs) collected while build_app lays out the tabs.
ON_LOAD: list[dict] = []


def on_load(**event) -> None:
    """Run this event (fn, inputs, outputs, ...: Blocks.load's arguments) when a page loads, in its language."""
    ON_LOAD.append(event)


def dynamic(component):
    """Mark a component whose value a handler renders (its text is not a fixed label to translate)."""
    component._lab_dynamic = True
    return component


def pill_sink():
    """An unseen component for an event's `show_progress_on`: when an event for an expected user mistake (an empty
    prompt, a refused Start) raises, Gradio puts its red "Error" pill on the progress targets; here it lands nowhere,
    so no pill covers or blocks a control. The toast and the status line (show_errors) say what failed."""
    return gr.HTML(visible=False, elem_classes="lab-pill-sink")


def say(template: str, **params) -> str:
    """A UI message in this session's language: say("Started **{name}**.", name=run)."""
    return render(msg(template, **params), lang())


class _LastErrors:
    """The last error message of each browser session, so the tab's status line can keep showing it.

    A failing handler raises gr.Error (the API caller gets the message, the browser a toast that fades); its
    `.failure()` follow-up (see show_errors) then reads the message from here and writes it into the status line
    next to the control, where it stays until the next action writes there."""

    def __init__(self, size: int = 2048):
        self.by_session = SessionStore(size)

    _session = staticmethod(session_key)

    def remember(self, message) -> None:
        key = self._session()
        if key is None:
            return
        self.by_session.put(key, (time.monotonic(), message))

    def pop(self, max_age_s: float = 30.0):
        """This session's last message, if it is fresh (a failure's follow-up runs right after it; an old message
        from an event without a status line must not show up under another control later)."""
        key = self._session()
        when, message = self.by_session.pop(key, (0.0, None)) if key is not None else (0.0, None)
        return message if time.monotonic() - when <= max_age_s else None


LAST_ERRORS = _LastErrors()


def error_markdown(message: str) -> str:
    """A status line that says what failed (escaped: messages can quote user input)."""
    return f'<div class="lab-error" role="alert" style="color:#b91c1c;font-weight:600">⚠️ {html.escape(message)}</div>'


class _ShownErrors:
    """Which error each session's status lines show (its Msg and the Markdown written), so the language switch can
    write it again in the new language, and only while the line still shows it."""

    def __init__(self, size: int = 8192):
        self.shown = SessionStore(size)

    def put(self, status_id: int, raw, markdown: str) -> None:
        key = (session_key(), status_id)
        if key[0] is None:
            return
        self.shown.put(key, (raw, markdown))

    def again(self, status_id: int, current):
        """The shown error in this session's language, if `current` is still what was written; else None."""
        key = (session_key(), status_id)
        raw, markdown = self.shown.get(key, (None, None))
        if raw is None or current != markdown:
            return None
        fresh = error_markdown(show(raw))
        self.put(status_id, raw, fresh)
        return fresh


SHOWN_ERRORS = _ShownErrors()
# The status lines that show errors, collected while build_app lays out the tabs (ui.app re-renders them on the
# language switch through rerender_errors).
STATUS_LINES: list = []


def show_errors(event, status) -> None:
    """Keep a failed event's message visible in `status` (a Markdown next to the control) until the next action."""

    def show_last_error():
        raw = LAST_ERRORS.pop()
        if not raw:
            return gr.skip()
        markdown = error_markdown(show(raw))
        SHOWN_ERRORS.put(status._id, raw, markdown)
        return markdown

    if all(s is not status for s in STATUS_LINES):
        STATUS_LINES.append(status)
    event.failure(show_last_error, None, status, api_visibility="private", show_progress="hidden", queue=False)


def rerender_errors(statuses: list):
    """On the language switch: each status line that still shows an error shows it in the new language."""

    def again(*values):
        out = [SHOWN_ERRORS.again(s._id, v) for s, v in zip(statuses, values, strict=True)]
        return tuple(gr.skip() if md is None else md for md in out)

    return again


def friendly(fn):
    """Wrap a handler (plain or generator) so LoraLabError becomes gr.Error(message) and anything else a short
    message; the full trace goes to the server log only."""

    def convert(exc: BaseException) -> gr.Error:
        if isinstance(exc, gr.Error):
            error = exc
        elif isinstance(exc, LoraLabError):
            raw = exc.args[0] if len(exc.args) == 1 else str(exc)
        else:
            log.exception("handler %s failed", fn.__name__)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raw = msg("Unexpected error ({kind}): {first}", kind=type(exc).__name__, first=first)
        if not isinstance(exc, gr.Error):
            error = gr.Error(show(raw), print_exception=False)
        # The status line shows it too (show_errors), kept as the Msg so a language switch can write it again.
        LAST_ERRORS.remember(error.message if isinstance(exc, gr.Error) else raw)
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
    choices = LabEngine.adapters_in(runs_dir, lang())
    values = [v for _, v in choices]
    newest = values[0] if values else None
    keep = current and newest == seen_newest and (custom_ok or current in values)
    return gr.Dropdown(choices=choices, value=current if keep else newest), newest


def gen_settings(temperature, top_p, top_k, repetition_penalty, max_new_tokens, seed, scale, greedy):
    """GenSettings from the Chat tab's sliders (the same for the side-by-side chat and blind rounds)."""
    return LabEngine.gen_settings(
        max_new_tokens=max_new_tokens,
        greedy=bool(greedy),
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        repetition_penalty=repetition_penalty,
        seed=int(seed or 0),
        adapter_scale=scale,
    )
