"""Two languages, English and 简体中文, gettext-style: the English text is the message's code.

Engine code writes its user-facing text in English and marks it:

    raise InputError(msg("The {what} is empty: fill it in.", what=msg("dataset name")))

`msg(template, **params)` returns a `Msg`: a `str` whose value is the English sentence (so the CLI, logs and
tests read English, as before) and which keeps the template and parameters, so the UI can render it again in
the language of the browser session that asked (`render(m, "zh")`). Parameters that are themselves `Msg`s are
rendered in the same language; plain strings (names, paths), numbers and the rest are inserted as they are.

Code that builds a whole text for one language at once (a plan, a progress panel) takes a `lang` argument and
uses `tr = translator(lang)`; `tr(template, **params)` returns the finished string in that language.

Gradio labels, help texts, placeholders, buttons and fixed choices are not marked: lora_demo/ui/localize.py
renders every shown text of a component by looking it up whole.

The Chinese is one gettext catalog for the package, lora_demo/locale/zh/LC_MESSAGES/lora_demo.po (msgid = the
English text, msgstr = the Chinese, with the same {placeholders}; `#` comments group the entries by source area and
survive updates). It is read once, with Babel, on the first lookup in Chinese; an empty or fuzzy msgstr counts as
missing, as in gettext. The steps to add or change a text, from the repository root (Babel's settings are in
pyproject.toml, [tool.babel.*]):

1. Write the English in the code: marked with msg(), tr() or say() (the extraction keywords), or as a label.
2. `python tests/test_i18n.py --pot` writes build/lora_demo.pot: what `pybabel extract` finds (the marked texts),
   plus every text the built app shows and every catalog text the code still holds as a literal. (`pybabel
   extract` alone writes only the marked texts, to build/marked.pot: updating from that would make every label
   obsolete.)
3. `pybabel update` merges that template into the catalog: a new text gets an empty msgstr, a changed one a fuzzy
   guess, and a text gone from the code moves to the end as obsolete (#~).
4. Write the Chinese into each empty or fuzzy entry (and drop its `#, fuzzy` line).

tests/test_i18n.py fails on any marked text or any shown text of the built app without Chinese, and on any entry
whose {placeholders} differ from its English; `python tests/test_i18n.py [PATH_OR_TAB ...]` lists what lacks it.
"""

from __future__ import annotations

import functools
import re
import string
from pathlib import Path

LANGS = {"en": "English", "zh": "简体中文"}
DEFAULT = "en"
LOCALE_DIR = Path(__file__).parent / "locale"  # gettext layout: <lang>/LC_MESSAGES/<DOMAIN>.po
DOMAIN = "lora_demo"
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


def joined(items, sep: str = "; ") -> str:
    """Messages joined as 'a; b; c' (sep "; ") or as sentences 'A. B.' (sep " ") that stay translatable: a chain of
    msg('{first}; {rest}') or msg('{first} {rest}'), each part rendered in the reader's language ("" for none)."""
    items = list(items)
    if not items:
        return ""
    out = items[-1]
    for item in reversed(items[:-1]):
        out = (
            msg("{first}; {rest}", first=item, rest=out) if sep == "; " else msg("{first} {rest}", first=item, rest=out)
        )
    return out


def fields(template: str) -> set[str]:
    """The {placeholders} a template uses."""
    return {name.split(".")[0].split("[")[0] for _, name, _, _ in _FIELD.parse(template) if name}


def catalog_path(lang: str) -> Path:
    """The gettext catalog of `lang`: lora_demo/locale/<lang>/LC_MESSAGES/lora_demo.po."""
    return LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"


@functools.cache
def table(lang: str = "zh") -> dict[str, str]:
    """English → `lang`: the catalog's translated entries (msgid → msgstr, both stripped), read once. Entries with
    an empty msgstr or marked fuzzy (what `pybabel update` leaves for a translator) count as missing, as in gettext.
    """
    # Deferred: only a session that switches to another language pays for importing Babel.
    from babel.messages.pofile import read_po

    path = catalog_path(lang)
    if not path.is_file():
        return {}
    with path.open("rb") as f:
        catalog = read_po(f, locale=lang, domain=DOMAIN)
    return {
        m.id.strip(): m.string.strip() for m in catalog if m.id and isinstance(m.id, str) and m.string and not m.fuzzy
    }


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
