"""The language switch: every label, help text, button and static text of the built app, in English or 简体中文.

The tabs are built in English (or the language --lang names). `Localizer.capture` then walks the app's
components once and keeps, for each translatable property, its English text. `updates(lang)` gives one
update per component for the switch's event, so the page changes language without a reload; each browser session
keeps its own language (ui.common.SESSION_LANG), which the handlers use for what they render afterwards.
"""

from __future__ import annotations

import re

import gradio as gr
from gradio.components.api_component import Api

from lora_demo.i18n import Msg, lookup, render

# The properties that hold text for people, by name; `value` only where it is static text (buttons, Markdown).
TEXT_PROPS = ("label", "info", "placeholder")
VALUE_TEXT = (gr.Button, gr.Markdown, gr.DownloadButton, gr.UploadButton)
CHOICES = (gr.Radio, gr.Dropdown, gr.CheckboxGroup)
_WORDS = re.compile(r"[A-Za-z]{2,}")


def needs_words(text) -> bool:
    """Whether a shown string has words to translate (not '↻', '💬', '' or a number)."""
    return isinstance(text, str) and bool(_WORDS.search(text))


def shown_texts(block) -> dict:
    """{property: English text} for what `block` shows: labels, help, placeholders, static values, choice labels."""
    out = {}
    if isinstance(block, (Api, gr.State, gr.Timer)):  # not shown (gr.api's parameter "components")
        return out
    for prop in TEXT_PROPS:
        value = getattr(block, prop, None)
        if needs_words(value):
            out[prop] = value
    dynamic = getattr(block, "_lab_dynamic", False)  # its value is rendered by a handler (ui.common.dynamic)
    if isinstance(block, VALUE_TEXT) and not dynamic and needs_words(getattr(block, "value", None)):
        out["value"] = block.value
    if isinstance(block, CHOICES) and block.choices and not dynamic:
        # Only a fixed set of choices whose every worded label is translatable: a list filled from the runs or
        # datasets folder would be reset to its build-time entries by the switch.
        labels = [c[0] if isinstance(c, (tuple, list)) else c for c in block.choices]
        worded = [lb for lb in labels if needs_words(lb)]
        if worded and all(isinstance(lb, Msg) or lookup(lb, "zh") is not None for lb in worded):
            out["choices"] = list(block.choices)
    return out


def _in(text, lang):
    return render(text, lang)


def translated(props: dict, lang: str) -> dict:
    out = {}
    for prop, text in props.items():
        if prop == "choices":
            out[prop] = [(_in(c[0], lang), c[1]) if isinstance(c, (tuple, list)) else (_in(c, lang), c) for c in text]
        else:
            out[prop] = _in(text, lang)
    return out


class Localizer:
    """The app's translatable components and their English texts."""

    def __init__(self):
        self.entries: list[tuple[gr.blocks.Block, dict]] = []

    def capture(self, demo: gr.Blocks, skip=()) -> None:
        skip_ids = {id(b) for b in skip}
        for block in demo.blocks.values():
            if id(block) in skip_ids:
                continue
            props = shown_texts(block)
            if props:
                self.entries.append((block, props))

    @property
    def components(self) -> list:
        return [b for b, _ in self.entries]

    def apply(self, lang: str) -> None:
        """Build time: set the texts in place, so the served config (and /config) is already in `lang`."""
        for block, props in self.entries:
            for prop, text in translated(props, lang).items():
                setattr(block, prop, text)

    def updates(self, lang: str) -> list:
        """One update per captured component, for the switch's outputs."""
        return [gr.update(**translated(props, lang)) for _, props in self.entries]
