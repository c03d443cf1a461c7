"""Validate instruction rows: errors block training, warnings do not. Rows are numbered from 1.

Every problem's message is a Msg (English text that the UI renders in the session's language); the field names
instruction / input / output are the Alpaca format's and stay as they are in every language.
"""

from __future__ import annotations

from lora_demo.data.formats import FIELDS
from lora_demo.data.templates import Template, example_length
from lora_demo.data.verbatim import verbatim
from lora_demo.i18n import msg, translator


def _not_utf8(text: str) -> int | None:
    """Position of the first character that came from undecodable bytes (or a U+FFFD replacement), else None."""
    for i, ch in enumerate(text):
        if "\ud800" <= ch <= "\udfff" or ch == "\ufffd":
            return i
    return None


def validate_rows(
    rows: list[dict],
    tokenizer=None,
    max_seq_length: int | None = None,
    template: Template = "alpaca",
    enable_thinking: bool = False,
) -> dict:
    """{"rows": n, "errors": [{"row", "field", "message"}], "warnings": [...], "lengths": [...]}."""
    errors: list[dict] = []
    warnings: list[dict] = []
    if not rows:
        errors.append({"row": 0, "field": "", "message": msg("The dataset has no rows: add or import some.")})
    seen: dict[tuple, int] = {}
    lengths: list[int] = []
    for i, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            errors.append({"row": i, "field": "", "message": msg("not an instruction/input/output row")})
            continue
        sound = True  # text that can be tokenized (right type, valid UTF-8)
        for f in FIELDS:
            v = row.get(f, "")
            if v is not None and not isinstance(v, str):
                errors.append(
                    {
                        "row": i,
                        "field": f,
                        "message": msg(
                            "{field} is a {kind}, not text", field=verbatim(f), kind=verbatim(type(v).__name__)
                        ),
                    }
                )
                sound = False
            elif v and (pos := _not_utf8(v)) is not None:
                errors.append(
                    {
                        "row": i,
                        "field": f,
                        "message": msg(
                            "{field} is not valid UTF-8 text (bad byte at character {pos}): re-save the file as UTF-8",
                            field=verbatim(f),
                            pos=pos + 1,
                        ),
                    }
                )
                sound = False
        for f in ("instruction", "output"):
            if not str(row.get(f) or "").strip():
                errors.append({"row": i, "field": f, "message": msg("empty {field}", field=verbatim(f))})
        key = tuple(str(row.get(f) or "").strip() for f in FIELDS)
        if key in seen and any(key):
            warnings.append({"row": i, "field": "", "message": msg("duplicate of row {row}", row=seen[key])})
        else:
            seen.setdefault(key, i)
        if tokenizer is not None and sound:
            n = example_length(row, tokenizer, template, enable_thinking)
            lengths.append(n)
            if max_seq_length and n > max_seq_length:
                warnings.append(
                    {
                        "row": i,
                        "field": "",
                        "message": msg(
                            "{n} tokens, longer than the max sequence length {limit}: it will be truncated (the end of the answer is lost)",
                            n=n,
                            limit=max_seq_length,
                        ),
                    }
                )
    return {"rows": len(rows), "errors": errors, "warnings": warnings, "lengths": lengths}


def summary_markdown(report: dict, limit: int = 50, lang: str = "en") -> str:
    """The validation report for the UI (in `lang`): a count line, then the numbered errors and warnings."""
    tr = translator(lang)
    e, w = report["errors"], report["warnings"]
    counts = {"rows": report["rows"], "errors": len(e), "warnings": len(w)}
    if e or w:
        lines = [
            tr(
                "**{rows} rows: {errors} error(s), {warnings} warning(s).** Errors block training; warnings do not.",
                **counts,
            )
        ]
    else:
        lines = [tr("**{rows} rows: {errors} error(s), {warnings} warning(s).** Ready to train.", **counts)]
    for title, items in ((tr("Errors:"), e), (tr("Warnings:"), w)):
        if items:
            lines.append(f"\n{title}")
            for x in items[:limit]:  # the message is a Msg (a plain string from older callers is shown as it is)
                if x["field"]:
                    lines.append(
                        tr(
                            "- row {row} · {field}: {message}",
                            row=x["row"],
                            field=verbatim(x["field"]),
                            message=x["message"],
                        )
                    )
                else:
                    lines.append(tr("- row {row}: {message}", row=x["row"], message=x["message"]))
            if len(items) > limit:
                lines.append(tr("- … and {n} more", n=len(items) - limit))
    return "\n".join(lines)
