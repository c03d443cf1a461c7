"""English and 简体中文 (issue 14): every marked message and every shown text has both; the switch is live and per
browser session; `python app.py --lang zh` serves Chinese.

The marked messages are what Babel's extractor finds with the settings `pybabel extract` reads from pyproject.toml
([tool.babel.*]); the Chinese is the gettext catalog lora_demo/locale/zh/LC_MESSAGES/lora_demo.po (lora_demo/i18n.py).

Run as a script to list what lacks Chinese, by file or tab: `python tests/test_i18n.py [PATH_OR_TAB ...]`;
`python tests/test_i18n.py --pot [FILE]` writes the template that `pybabel update` merges into the catalog.
"""

from __future__ import annotations

import ast
import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import PoFileParser, write_po

from lora_demo.i18n import DOMAIN, Msg, catalog_path, fields, lookup, msg, render, table, translator

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest's own dependency
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "lora_demo"
BABEL = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["babel"]
MARKERS = set(BABEL["extract_messages"]["keywords"])  # msg, tr, say: their first argument is a template to translate
METHODS = [(m["pattern"], m["method"]) for m in BABEL["mappings"]]


def _name(func) -> str | None:
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


def _tree_marks() -> list[tuple[str, int, str | None]]:
    """The marker calls Babel's tokenizer cannot judge, found in the syntax tree: a template written as an f-string
    or joined with + (None: Babel skips it, and it cannot be translated as written), and a call inside an f-string's
    {…} (Babel sees those only from Python 3.12 on)."""
    out = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        in_fstring = {id(n) for js in ast.walk(tree) if isinstance(js, ast.JoinedStr) for n in ast.walk(js)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _name(node.func) in MARKERS and node.args:
                first = node.args[0]
                if isinstance(first, (ast.JoinedStr, ast.BinOp)):
                    out.append((rel, node.lineno, None))
                elif id(node) in in_fstring and isinstance(first, ast.Constant) and isinstance(first.value, str):
                    out.append((rel, node.lineno, first.value))
    return out


def marked_templates(paths=None) -> list[tuple[str, int, str | None]]:
    """(file, line, template) for every msg/tr/say call in lora_demo with a template to translate: Babel's extractor
    with pybabel extract's settings, plus _tree_marks (template None when it is not a string literal). A call that
    passes a variable on (a wrapper's msg(template)) is no text of its own and is left out."""
    with contextlib.redirect_stderr(io.StringIO()):  # Babel warns on each such variable and f-string; see above
        found = extract_from_dir(PKG, METHODS, keywords=dict.fromkeys(MARKERS), comment_tags=())
        out = [
            (f"lora_demo/{Path(name).as_posix()}", line, text if isinstance(text, str) else text[0])
            for name, line, text, _, _ in found
        ]
    seen = {(rel, text) for rel, _, text in out}
    out += [m for m in _tree_marks() if (m[0], m[2]) not in seen]
    return [m for m in out if not paths or any(m[0].startswith(p) for p in paths)]


def missing_messages(paths=None) -> list[str]:
    zh = table("zh")
    problems = []
    for rel, line, template in marked_templates(paths):
        if template is None:
            problems.append(
                f"{rel}:{line}: the template is not a string literal (use {{placeholders}}, not an f-string)"
            )
        elif template.strip() not in zh:
            problems.append(f"{rel}:{line}: no Chinese for {template!r}")
        elif fields(template) != fields(zh[template.strip()]):
            problems.append(
                f"{rel}:{line}: the Chinese for {template!r} has other placeholders: {zh[template.strip()]!r}"
            )
    return problems


def _tab_of(block) -> str:
    import gradio as gr

    parent = block
    while parent is not None:
        if isinstance(parent, gr.Tab):
            return str(parent.label)
        parent = getattr(parent, "parent", None)
    return "(page)"


def shown_app_texts(demo, tabs=None):
    """(where, text) for every label, help text, placeholder, button, static Markdown and fixed choice of the app:
    the texts the catalog needs besides the marked ones (labels are not marked)."""
    import gradio as gr

    from lora_demo.ui.localize import needs_words, shown_texts

    for block in demo.blocks.values():
        tab = _tab_of(block)
        if tabs and tab not in tabs:
            continue
        props = shown_texts(block)
        if isinstance(block, (gr.Radio, gr.CheckboxGroup)) and block.choices and not getattr(block, "_lab_dynamic", 0):
            props["choices"] = list(block.choices)  # a fixed set of options: each worded one needs Chinese
        for prop, text in props.items():
            texts = [c[0] if isinstance(c, (tuple, list)) else c for c in text] if prop == "choices" else [text]
            for t in texts:
                if needs_words(t) and t not in ("English", "简体中文"):
                    yield f"[{tab}] {type(block).__name__}.{prop}", t


def missing_shown_texts(demo, tabs=None) -> list[str]:
    """Every label, help text, placeholder, button, static Markdown and fixed choice of the app without Chinese."""
    problems = []
    for where, t in shown_app_texts(demo, tabs):
        ok = lookup(t.template, "zh") is not None if isinstance(t, Msg) else lookup(t, "zh") is not None
        if not ok:
            problems.append(f"{where}: no Chinese for {str(t)!r}")
    return problems


def code_literals() -> dict[str, str]:
    """{text: file} for every string literal in lora_demo's code (stripped): texts rendered unmarked at run time
    (TrainSettings' help, a wrapper's template) that the catalog keeps although neither scan above finds them."""
    out: dict[str, str] = {}
    for path in sorted(PKG.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.strip():
                out.setdefault(node.value.strip(), path.relative_to(ROOT).as_posix())
    return out


def write_template(out: Path, demo) -> int:
    """The template `pybabel update` merges into the catalog (lora_demo/i18n.py tells the steps): every marked text
    (what `pybabel extract` finds, plus _tree_marks), every text the built app shows, and every catalog text the
    code still holds as a literal. The number of entries written."""
    settings = BABEL["extract_messages"]
    template = Catalog(project=settings.get("project"), domain=DOMAIN)
    for rel, _, text in marked_templates():
        if text:
            template.add(text.strip(), locations=[(rel, None)])
    for where, shown in shown_app_texts(demo):
        text = str(getattr(shown, "template", shown)).strip()
        if template.get(text) is None:
            template.add(text, auto_comments=[f"shown in the app: {where}"])
    literals = code_literals()
    for text in table("zh"):
        if template.get(text) is None and text in literals:
            template.add(text, locations=[(literals[text], None)])
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as f:
        write_po(f, template, width=settings.get("width", 76), include_lineno=False)
    return len(template)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from lora_demo.ui import AppSettings, build_app

    root = tmp_path_factory.mktemp("i18n")
    return build_app(AppSettings(runs_dir=root / "runs", data_dir=root / "data"))


def test_msg_is_the_english_text_and_renders_in_chinese():
    m = msg("Loading `{name}` on its base model…", name="run-1")
    assert m == "Loading `run-1` on its base model…" and isinstance(m, str)  # the CLI and logs read English
    assert render(m, "zh") == "正在把 `run-1` 加载到它的基座模型上…"
    assert render(m, "en") == m
    assert (
        translator("zh")("Unexpected error ({kind}): {first}", kind="KeyError", first="x") == "意外错误（KeyError）：x"
    )
    assert render(Msg.from_json(m.to_json()), "zh") == "正在把 `run-1` 加载到它的基座模型上…"  # status.json round trip
    assert render("a name no table has", "zh") == "a name no table has"


def test_every_marked_message_has_chinese_with_the_same_placeholders():
    assert marked_templates(), "the scan found no msg()/tr()/say() call: the marker names changed?"
    problems = missing_messages()
    assert not problems, f"{len(problems)} messages lack Chinese:\n" + "\n".join(problems)


def test_every_shown_text_of_the_app_has_chinese(demo):
    problems = missing_shown_texts(demo)
    assert not problems, f"{len(problems)} texts lack Chinese:\n" + "\n".join(problems)


def test_the_shown_texts_use_no_insider_words_and_k_is_only_a_rank(demo):
    """Issue 28: visible texts said "seed write-up", "the write-up's '12' is a slip", "Seed example" (beside a
    "random seed"), and the Low-rank lab's k meant both the columns and the rank. Plain words now, in both
    languages."""
    from lora_demo.ui.localize import shown_texts

    texts = [str(t) for block in demo.blocks.values() for t in shown_texts(block).values() if isinstance(t, str)]
    texts += [
        str(c[0] if isinstance(c, (tuple, list)) else c)
        for block in demo.blocks.values()
        for t in shown_texts(block).values()
        if isinstance(t, list)
        for c in t
    ]
    for text in texts:
        for lang in ("en", "zh"):
            shown = render(text, lang)
            for word in ("write-up", "Seed example", "seed's", "is a slip", "原文", "算错"):
                assert word not in shown, (word, shown[:200])
            assert not re.search(r"\bk \(columns\)|d×k\b|r×k\b|min\(d, k\)|\(d\+k\)", shown), shown[:200]
    assert "n (columns)" in texts and "rank k" in texts


class _Definitions(Catalog):
    """A catalog that remembers every English text the .po defines more than once (read_po keeps the first one
    silently; msgfmt refuses the file)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.first: dict[str, str] = {}
        self.twice: list[str] = []

    def __setitem__(self, id, message):
        if id:
            key = str(id).strip()  # lookup() strips, so two texts differing only in spaces are one
            if key in self.first:
                self.twice.append(f"{key!r}: {self.first[key]!r} and {message.string!r}")
            self.first.setdefault(key, message.string)
        super().__setitem__(id, message)


def test_no_text_has_two_entries_in_the_catalog():
    catalog = _Definitions(locale="zh", domain=DOMAIN)
    with catalog_path("zh").open("rb") as f:
        PoFileParser(catalog, abort_invalid=True).parse(f)
    assert len(catalog.first) > 100
    assert not catalog.twice, "\n".join(catalog.twice)


def test_every_catalog_entry_keeps_the_placeholders_of_its_english():
    problems = []
    for en, other in table("zh").items():
        try:
            same = fields(en) == fields(other)
        except ValueError as e:  # a stray { or }
            same, other = False, f"{other!r} ({e})"
        if not same:
            problems.append(f"{en!r} → {other!r}")
    assert not problems, f"{len(problems)} entries change the placeholders:\n" + "\n".join(problems)


def test_the_catalog_loads_and_every_entry_is_chinese():
    zh = table("zh")
    assert len(zh) > 100
    untranslated = [
        en
        for en, other in zh.items()
        if en == other and any("a" <= ch.lower() <= "z" for ch in en) and len(en.split()) > 2
    ]
    assert not untranslated, f"entries left in English: {untranslated[:10]}"


def test_the_catalog_ships_with_the_package_and_babel_loads_only_for_chinese():
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    rel = catalog_path("zh").relative_to(PKG).as_posix()
    assert any(Path(rel).match(p) for p in patterns["package-data"]["lora_demo"]), rel
    code = "import sys, lora_demo.i18n as i; i.render(i.msg('x'), 'en'); assert 'babel' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


if __name__ == "__main__":  # python tests/test_i18n.py [lora_demo/train ...] [Train ...] | --pot [FILE]
    import tempfile

    from lora_demo.ui import AppSettings, build_app

    args = sys.argv[1:]
    root = Path(tempfile.mkdtemp())
    if args[:1] == ["--pot"]:
        out = Path(args[1] if len(args) > 1 else BABEL["update_catalog"]["input_file"])
        n = write_template(out, build_app(AppSettings(runs_dir=root / "runs", data_dir=root / "data")))
        print(f"{out}: {n} texts. Next: pybabel update (settings in pyproject.toml), then translate what it leaves")
        sys.exit(0)
    paths = [a for a in args if "/" in a or a.endswith(".py")]
    tabs = [a for a in args if a not in paths]
    for line in missing_messages(paths or None):
        print(line)
    if tabs or not paths:
        for line in missing_shown_texts(
            build_app(AppSettings(runs_dir=root / "runs", data_dir=root / "data")), tabs or None
        ):
            print(line)


def test_an_error_in_a_status_line_is_rewritten_on_the_switch_only_while_it_is_shown(monkeypatch):
    from lora_demo.ui import common

    monkeypatch.setattr(common, "session_key", lambda: "visitor-1")
    errors = common._ShownErrors()
    raw = msg("Unexpected error ({kind}): {first}", kind="KeyError", first="x")
    common.SESSION_LANG.set("en")
    shown = common.error_markdown(common.show(raw))
    errors.put(7, raw, shown)
    common.SESSION_LANG.set("zh")
    again = errors.again(7, shown)
    assert again == common.error_markdown("意外错误（KeyError）：x")
    assert errors.again(7, "Started **run-2**.") is None  # a newer message replaced it: left alone
    assert errors.again(8, again) is None  # another status line
    common.SESSION_LANG.set("en")
