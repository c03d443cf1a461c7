"""Validate instruction rows: errors block training, warnings do not. Rows are numbered from 1."""

from __future__ import annotations

from lora_demo.data.formats import FIELDS
from lora_demo.data.templates import Template, example_length


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
        errors.append({"row": 0, "field": "", "message": "The dataset has no rows: add or import some."})
    seen: dict[tuple, int] = {}
    lengths: list[int] = []
    for i, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            errors.append({"row": i, "field": "", "message": "not an instruction/input/output row"})
            continue
        sound = True  # text that can be tokenized (right type, valid UTF-8)
        for f in FIELDS:
            v = row.get(f, "")
            if v is not None and not isinstance(v, str):
                errors.append({"row": i, "field": f, "message": f"{f} is a {type(v).__name__}, not text"})
                sound = False
            elif v and (pos := _not_utf8(v)) is not None:
                errors.append({"row": i, "field": f, "message": f"{f} is not valid UTF-8 text (bad byte at character {pos + 1}): re-save the file as UTF-8"})  # fmt: skip
                sound = False
        for f in ("instruction", "output"):
            if not str(row.get(f) or "").strip():
                errors.append({"row": i, "field": f, "message": f"empty {f}"})
        key = tuple(str(row.get(f) or "").strip() for f in FIELDS)
        if key in seen and any(key):
            warnings.append({"row": i, "field": "", "message": f"duplicate of row {seen[key]}"})
        else:
            seen.setdefault(key, i)
        if tokenizer is not None and sound:
            n = example_length(row, tokenizer, template, enable_thinking)
            lengths.append(n)
            if max_seq_length and n > max_seq_length:
                warnings.append({"row": i, "field": "", "message": f"{n} tokens, longer than the max sequence length {max_seq_length}: it will be truncated (the end of the answer is lost)"})  # fmt: skip
    return {"rows": len(rows), "errors": errors, "warnings": warnings, "lengths": lengths}


def summary_markdown(report: dict, limit: int = 50) -> str:
    """The validation report for the UI: a count line, then the numbered errors and warnings."""
    e, w = report["errors"], report["warnings"]
    head = f"**{report['rows']} rows: {len(e)} error(s), {len(w)} warning(s).**"
    head += " Errors block training; warnings do not." if e or w else " Ready to train."
    lines = [head]
    for title, items in (("Errors", e), ("Warnings", w)):
        if items:
            lines.append(f"\n{title}:")
            lines += [f"- row {x['row']}{' · ' + x['field'] if x['field'] else ''}: {x['message']}" for x in items[:limit]]
            if len(items) > limit:
                lines.append(f"- … and {len(items) - limit} more")
    return "\n".join(lines)
