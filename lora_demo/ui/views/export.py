"""The parity report of a run's exports as HTML: per prompt, each path's exact prompt (differences from the app's
marked), its answer, its agreement with the app and where it first differs."""

from __future__ import annotations

import difflib
import html
from collections.abc import Callable

from lora_demo.ui.common import say

STYLE = (
    "<style>.parity td{vertical-align:top}.parity-prompt{white-space:pre-wrap;max-height:9em;overflow:auto;"
    "font-size:12px;margin:0}.parity-differs del{background:#fdd}.parity-differs ins{background:#dfd}</style>"
)


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _item(text: str) -> str:
    return f"<li>{text}</li>"


def _prompt_cell(app_prompt: str, prompt: str, equal: bool) -> str:
    if equal:
        return f"<pre class='parity-prompt'>{html.escape(prompt)}</pre>"
    # Where the template differs from the app's: removed text struck through, added text marked.
    parts = []
    for op, a0, a1, b0, b1 in difflib.SequenceMatcher(None, app_prompt, prompt, autojunk=False).get_opcodes():
        if op == "equal":
            parts.append(html.escape(prompt[b0:b1]))
        else:
            if a1 > a0:
                parts.append(f"<del>{html.escape(app_prompt[a0:a1])}</del>")
            if b1 > b0:
                parts.append(f"<ins>{html.escape(prompt[b0:b1])}</ins>")
    return f"<pre class='parity-prompt parity-differs'>{''.join(parts)}</pre>"


def _summary(report: dict, label: Callable[[str], str]) -> list[str]:
    """The report's list items: each path's agreement with the app, the fp32 check, whether the prompts match."""
    items = [_item(f"{say('merged model (transformers)')}: <b>{_pct(report['merged_agreement'])}</b>")]
    items += [_item(f"GGUF {t} (llama.cpp): <b>{_pct(v)}</b>") for t, v in report["gguf_agreements"].items()]
    if report.get("vs_app_fp32"):
        others = ", ".join(f"{label(k)} {_pct(v)}" for k, v in report["vs_app_fp32"].items())
        precision = report["app_precision"].split(" ")[0]
        items.append(
            _item(
                say(
                    "The app chats in {precision} on this machine; against its adapter path in fp32: {others}.",
                    precision=precision,
                    others=others,
                )
            )
        )
    same = report["template_equal"]
    items.append(
        _item(
            say("prompts: the same tokens on every path")
            if same
            else say("prompts: DIFFER from the app's (marked below)")
        )
    )
    if report.get("modelfile_equal") is not None:
        items.append(
            _item(
                say("Modelfile: gives Ollama the app's prompt")
                if report["modelfile_equal"]
                else say("Modelfile: its prompt differs from the app's")
            )
        )
    return items


def _prompt_table(i: int, p: dict) -> str:
    """One prompt's table: the app's row, then the merged model's and each GGUF's."""
    app = p["app"]
    rows = [("app", app, True)]
    if p.get("merged"):
        rows.append((say("merged"), p["merged"], p["merged"]["prompt_equal"]))
    rows += [(f"GGUF {t}", a, a["prompt_equal"]) for t, a in p["gguf"].items()]
    trs = []
    for label, a, equal in rows:
        agree = "" if a is app else _pct(a["agreement"])
        div = "" if a is app or a["first_divergence"] is None else say("from token {n}", n=a["first_divergence"])
        trs.append(
            f"<tr><td>{html.escape(label)}</td><td>{_prompt_cell(app['prompt'], a['prompt'], equal)}</td>"
            f"<td>{html.escape(a['answer'])}</td><td>{agree}</td><td>{div}</td></tr>"
        )
    question = html.escape(p["messages"][-1]["content"])
    return (
        f"<h4>{i}. {question}</h4><table class='parity'><tr><th>{say('path')}</th><th>"
        f"{say('exact prompt')}</th><th>{say('answer')}</th><th>{say('agrees')}</th><th>"
        f"{say('differs')}</th></tr>{''.join(trs)}</table>"
    )


def parity_html(report: dict, label: Callable[[str], str]) -> str:
    """The report (the engine's export_check) as a summary and a table per prompt, in this session's language.
    label: how the report names a path key ('gguf_q8_0' → 'GGUF q8_0'; the engine's parity_label)."""
    head = say(
        "**Parity of `{run}`**: the same {n} prompts answered greedily by the app, the merged model and the "
        "GGUF (at most {tokens} new tokens).",
        run=report["run"],
        n=len(report["prompts"]),
        tokens=report["max_new_tokens"],
    )
    summary = "".join(_summary(report, label))
    note = f"<p>{html.escape(str(report['note']))}</p>" if report.get("note") else ""
    blocks = "".join(_prompt_table(i, p) for i, p in enumerate(report["prompts"], 1))
    return f"{STYLE}<div id='parity-report'><p>{head}</p><ul>{summary}</ul>{note}{blocks}</div>"
