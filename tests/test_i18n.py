"""English and 简体中文 (issue 14): every marked message and every shown text has both; the switch is live and per
browser session; `python app.py --lang zh` serves Chinese.

Run as a script to list what lacks Chinese, by file or tab: `python tests/test_i18n.py [PATH_OR_TAB ...]`.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

from lora_demo.i18n import Msg, fields, lookup, msg, render, table, translator

PKG = Path(__file__).resolve().parents[1] / "lora_demo"
MARKERS = {"msg", "tr", "say"}  # the functions whose first argument is a template to translate


def _name(func) -> str | None:
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


def marked_templates(paths=None) -> list[tuple[str, int, str | None]]:
    """(file, line, template) for every msg/tr/say call in lora_demo; template None when it is not a literal."""
    out = []
    for path in sorted(PKG.rglob("*.py")):
        rel = str(path.relative_to(PKG.parent))
        if paths and not any(rel.startswith(p) for p in paths):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and _name(node.func) in MARKERS and node.args:
                first = node.args[0]
                literal = isinstance(first, ast.Constant) and isinstance(first.value, str)
                if not literal and not isinstance(first, (ast.JoinedStr, ast.BinOp)):
                    continue  # msg(template) of a variable: a wrapper passing its own template on
                out.append((rel, node.lineno, first.value if literal else None))
    return out


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


def missing_shown_texts(demo, tabs=None) -> list[str]:
    """Every label, help text, placeholder, button, static Markdown and fixed choice of the app without Chinese."""
    import gradio as gr

    from lora_demo.ui.localize import needs_words, shown_texts

    problems = []
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
                if not needs_words(t) or t in ("English", "简体中文"):
                    continue
                ok = lookup(t.template, "zh") is not None if isinstance(t, Msg) else lookup(t, "zh") is not None
                if not ok:
                    problems.append(f"[{tab}] {type(block).__name__}.{prop}: no Chinese for {str(t)!r}")
    return problems


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


def test_no_two_tables_give_one_text_different_chinese():
    from lora_demo.i18n import tables

    seen: dict[str, tuple[str, str]] = {}
    clashes = []
    for path, entries in tables("zh").items():
        for en, zh_text in entries.items():
            if en in seen and seen[en][1] != zh_text:
                clashes.append(f"{en!r}: {seen[en][0]} says {seen[en][1]!r}, {path.name} says {zh_text!r}")
            seen.setdefault(en, (path.name, zh_text))
    assert not clashes, "\n".join(clashes)


def test_the_tables_load_and_every_entry_is_chinese():
    zh = table("zh")
    assert len(zh) > 100
    untranslated = [
        en
        for en, other in zh.items()
        if en == other and any("a" <= ch.lower() <= "z" for ch in en) and len(en.split()) > 2
    ]
    assert not untranslated, f"entries left in English: {untranslated[:10]}"


if __name__ == "__main__":  # python tests/test_i18n.py [lora_demo/train ...] [Train ...]
    from lora_demo.ui import AppSettings, build_app

    args = sys.argv[1:]
    paths = [a for a in args if "/" in a or a.endswith(".py")]
    tabs = [a for a in args if a not in paths]
    for line in missing_messages(paths or None):
        print(line)
    if tabs or not paths:
        import tempfile

        root = Path(tempfile.mkdtemp())
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
