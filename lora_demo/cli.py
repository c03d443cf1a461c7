"""Command line: `python -m lora_demo <command>`. Every command calls the same engine functions as the UI."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from lora_demo.errors import LoraLabError

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def _print_json(obj) -> None:
    print(json.dumps(obj, ensure_ascii=False, indent=None))


def cmd_info(args: argparse.Namespace) -> int:
    from lora_demo.system import format_system_info, system_info

    info = system_info()
    if args.json:
        _print_json(info)
    else:
        print(format_system_info(info).replace("**", ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lora_demo", description="LoRA Lab: learn and run LoRA fine-tunes.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("info", help="device, training backend, precision and the models available offline")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    COMMANDS["info"] = cmd_info
    for register in _EXTENSIONS:
        register(sub)
    return parser


# Other modules add their subcommands here: each entry is a function (subparsers) -> None that also fills COMMANDS.
_EXTENSIONS: list[Callable] = []


def main(argv: list[str] | None = None) -> int:
    _load_extensions()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    try:
        return COMMANDS[args.command](args)
    except LoraLabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _load_extensions() -> None:
    """Import the modules that define further subcommands (kept lazy so `info` stays fast)."""
    import importlib

    for name in EXTENSION_MODULES:
        mod = importlib.import_module(name)
        if mod.register_cli not in _EXTENSIONS:
            _EXTENSIONS.append(mod.register_cli)


EXTENSION_MODULES: list[str] = [
    "lora_demo.lowrank.cli",
    "lora_demo.data.cli",
    "lora_demo.train.cli",
    "lora_demo.chat.cli",
    "lora_demo.export_cli",
]
