"""Command line: `python -m lora_demo <command>`. Every command calls the same engine functions as the UI.

The whole parser is built here, in `build_parser`: each concept's `cli.py` offers `add_<command>_parser(sub)`,
which adds its subcommand and sets `func` to the function that runs it. Those modules import nothing heavy at the
top (their commands import the engine when they run), so `info` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from lora_demo.chat import cli as chat_cli
from lora_demo.data import cli as data_cli
from lora_demo.errors import LoraLabError
from lora_demo.export import cli as export_cli
from lora_demo.judge import cli as judge_cli
from lora_demo.lowrank import cli as lowrank_cli
from lora_demo.train import cli as train_cli


class CommandParser(argparse.ArgumentParser):
    """A subcommand's parser. `lazy_parents`: a function returning parsers whose flags this one takes (like
    argparse's `parents=`), called only when this command is parsed, e.g. `train`'s flags made by transformers."""

    def __init__(self, *args, lazy_parents: Callable[[], list[argparse.ArgumentParser]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._lazy_parents = lazy_parents

    def parse_known_args(self, args=None, namespace=None):
        if self._lazy_parents is not None:
            for parent in self._lazy_parents():
                self._add_container_actions(parent)  # what ArgumentParser(parents=[parent]) does
                self._defaults.update(parent._defaults)
            self._lazy_parents = None
        return super().parse_known_args(args, namespace)


def _print_json(obj) -> None:
    print(json.dumps(obj, ensure_ascii=False, indent=None))


def add_info_parser(sub) -> None:
    p = sub.add_parser("info", help="device, training backend, precision and the models available offline")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_info)


def cmd_info(args: argparse.Namespace) -> int:
    from lora_demo.system import format_system_info, system_info  # deferred: system imports torch

    info = system_info()
    if args.json:
        _print_json(info)
    else:
        print(format_system_info(info).replace("**", ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Every command of `python -m lora_demo`, in the order `--help` lists them."""
    parser = argparse.ArgumentParser(prog="python -m lora_demo", description="LoRA Lab: learn and run LoRA fine-tunes.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    add_info_parser(sub)
    lowrank_cli.add_lowrank_parser(sub)
    lowrank_cli.add_analyze_parser(sub)
    lowrank_cli.add_truncate_parser(sub)
    data_cli.add_validate_parser(sub)
    train_cli.add_plan_parser(sub)
    train_cli.add_train_parser(sub)
    train_cli.add_stop_parser(sub)
    train_cli.add_delete_run_parser(sub)
    train_cli.add_runs_parser(sub)
    chat_cli.add_chat_parser(sub)
    export_cli.add_export_parser(sub)
    judge_cli.add_votes_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except LoraLabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
