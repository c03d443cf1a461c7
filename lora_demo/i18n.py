"""Two languages, English and 简体中文, gettext-style: the English text is the message's code.

Engine code writes its user-facing text in English and marks it:

    raise InputError(msg("The {what} is empty: fill it in.", what=msg("dataset name")))

`msg(template, **params)` returns a `Msg`: a `str` whose value is the English sentence (so the CLI, logs and
tests read English, as before) and which keeps the template and parameters, so the UI can render it again in
the language of the browser session that asked (`render(m, "zh")`). Parameters that are themselves `Msg`s are
rendered in the same language; plain strings (names, paths), numbers and the rest are inserted as they are.

Code that builds a whole text for one language at once (a plan, a progress panel) takes a `lang` argument and
uses `tr = translator(lang)`; `tr(template, **params)` returns the finished string in that language.

The Chinese texts live next to the code that uses them, one table per package or tab, in files named
`*.zh.yaml` under lora_demo/ (a YAML mapping, English text → Chinese text, with the same {placeholders}).
tests/test_i18n.py fails on any marked text or any label of the built app that lacks a Chinese entry.
"""

from __future__ import annotations

import functools
import re
import string
from pathlib import Path

LANGS = {"en": "English", "zh": "简体中文"}
DEFAULT = "en"
_FIELD = string.Formatter()


class Msg(str):
    """English text that remembers how it was made (template + params), to be rendered in another language."""

    template: str
    params: dict

    def __new__(cls, template: str, **params):
        obj = super().__new__(cls, template.format(**params) if params else template)
        obj.template, obj.params = template, params
        return obj

    def __reduce__(self):  # pickles (multiprocessing, gr.State deep copies) keep the template
        return (_rebuild, (self.template, self.params))

    def to_json(self) -> dict:
        """A form that survives JSON (status.json written by the training worker): see from_json."""
        return {
            "msg": self.template,
            "params": {k: v.to_json() if isinstance(v, Msg) else v for k, v in self.params.items()},
        }

    @staticmethod
    def from_json(data) -> str:
        """A Msg back from to_json's form; a plain string (older files) stays as it is."""
        if isinstance(data, dict) and "msg" in data:
            params = {k: Msg.from_json(v) for k, v in (data.get("params") or {}).items()}
            return msg(data["msg"], **params)
        return data


def _rebuild(template, params):
    return Msg(template, **params)


def msg(template: str, **params) -> Msg:
    """Mark user-facing English text (a template with {placeholders}) for translation."""
    return Msg(template, **params)


def fields(template: str) -> set[str]:
    """The {placeholders} a template uses."""
    return {name.split(".")[0].split("[")[0] for _, name, _, _ in _FIELD.parse(template) if name}


@functools.cache
def tables(lang: str = "zh") -> dict[Path, dict[str, str]]:
    """Each `*.{lang}.yaml` table under the package: {file: {English: text in lang}} (keys and values stripped)."""
    import yaml

    out: dict[Path, dict[str, str]] = {}
    for path in sorted(Path(__file__).parent.rglob(f"*.{lang}.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of English text to {LANGS.get(lang, lang)} text")
        out[path] = {str(en).strip(): str(other).strip() for en, other in data.items()}
    return out


@functools.cache
def table(lang: str = "zh") -> dict[str, str]:
    """English → `lang`, all tables merged (tests/test_i18n.py checks that no two tables disagree)."""
    out: dict[str, str] = {}
    for entries in tables(lang).values():
        out.update(entries)
    return out


_EDGES = re.compile(r"^(\s*)(.*?)(\s*)$", re.S)


def lookup(text: str, lang: str) -> str | None:
    """The text in `lang` (surrounding whitespace kept), or None if the table lacks it."""
    if lang == DEFAULT:
        return text
    lead, core, trail = _EDGES.match(text).groups()
    found = table(lang).get(core)
    return None if found is None else f"{lead}{found}{trail}"


def render(text, lang: str | None):
    """`text` in `lang`: a Msg by its template (params rendered too), a plain string if the table has it whole;
    anything else (None, numbers, untranslated text such as names and paths) as it is."""
    if not lang or lang == DEFAULT or not isinstance(text, str):
        return text
    if isinstance(text, Msg):
        template = lookup(text.template, lang) or text.template
        if not text.params:
            return template
        # Only Msg params are translated: a plain string is a name, path or value (a dataset called "seed" stays
        # "seed" even though the Train tab's table translates that word).
        params = {k: render(v, lang) if isinstance(v, Msg) else v for k, v in text.params.items()}
        try:
            return template.format(**params)
        except (KeyError, IndexError, ValueError):  # a bad table entry must not hide the message
            return str(text)
    return lookup(text, lang) or text


def translator(lang: str | None):
    """tr(template, **params) → the finished text in `lang` (for code that renders a whole panel at once)."""

    def tr(template: str, **params) -> str:
        return render(msg(template, **params), lang or DEFAULT)

    return tr


def pick_lang(value: str | None) -> str:
    """'zh', 'zh-CN', 'zh_Hans', '简体中文' → 'zh'; anything else → 'en'."""
    v = (value or "").strip().lower()
    return "zh" if v.startswith("zh") or v == LANGS["zh"] else DEFAULT
