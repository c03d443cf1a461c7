"""CLI: `validate FILE` checks a dataset file the way the Dataset tab and the trainer do."""

from __future__ import annotations

import argparse
import json

from lora_demo.data import import_file, summary_markdown, validate_rows
from lora_demo.errors import InputError, LoraLabError
from lora_demo.i18n import msg
from lora_demo.models import load_tokenizer, resolve_model


def add_validate_parser(sub) -> None:
    """Add `validate` to the subparsers `sub` (lora_demo/cli.py calls this)."""
    p = sub.add_parser(
        "validate", help="check a dataset file (JSON/JSONL/CSV/Parquet): exit 0 ok, 1 errors, 2 unreadable"
    )
    p.add_argument("file")
    p.add_argument("--model", default="auto", help="model whose tokenizer counts the tokens ('auto': device default)")
    p.add_argument("--max-seq-length", type=int, default=2048)
    p.add_argument("--template", choices=["alpaca", "chat"], default="alpaca")
    p.add_argument(
        "--encoding",
        default="utf-8",
        help="the text file's encoding: utf-8 (default), cp1252 (Windows-1252) or latin-1",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_validate)


def cmd_validate(args: argparse.Namespace) -> int:

    result = import_file(args.file, encoding=args.encoding)  # InputError -> exit 2 with one line
    if result.needs_mapping:
        raise InputError(
            msg(
                "{file}: columns {columns} are not Alpaca (instruction/input/output), ShareGPT "
                "(conversations) or OpenAI messages: rename them, or import the file in the Dataset tab "
                "to map them.",
                file=args.file,
                columns=result.columns,
            )
        )
    tok, note = None, None
    try:
        tok = load_tokenizer_for(args.model)
    except LoraLabError as e:
        note = msg("token lengths not checked: {why}", why=e.args[0] if len(e.args) == 1 else str(e))
    report = validate_rows(result.rows, tok, args.max_seq_length, args.template)
    if note:
        report["warnings"].insert(0, {"row": 0, "field": "", "message": note})
    out = {k: report[k] for k in ("rows", "errors", "warnings")}
    out["format"] = result.format
    if args.json:
        print(json.dumps(out, ensure_ascii=False))
    else:
        print(summary_markdown(report).replace("**", ""))
    return 1 if report["errors"] else 0


def load_tokenizer_for(model: str):

    return load_tokenizer(resolve_model(model))
