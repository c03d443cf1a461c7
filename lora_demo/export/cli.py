"""CLI: `export RUN_DIR --zip FILE | --merged OUT_DIR | --gguf FILE`."""

from __future__ import annotations

import argparse

from lora_demo.errors import InputError
from lora_demo.i18n import msg


def add_export_parser(sub) -> None:
    """Add `export` to the subparsers `sub` (lora_demo/cli.py calls this)."""
    p = sub.add_parser("export", help="export a run's adapter: a zip, a merged 16-bit model, or GGUF")
    p.add_argument("run_dir")
    p.add_argument("--zip", metavar="FILE", help="write the PEFT adapter + model card as a .zip")
    p.add_argument("--merged", metavar="OUT_DIR", help="merge into the base and save a 16-bit model")
    p.add_argument("--dtype", choices=["bf16", "fp16"], default="bf16")
    p.add_argument("--gguf", metavar="FILE", help="GGUF from the merged model (needs llama.cpp; implies --merged)")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lora_demo.export import export_gguf, export_merged, export_zip

    if not (args.zip or args.merged or args.gguf):
        raise InputError(msg("Say what to export: --zip FILE, --merged OUT_DIR or --gguf FILE."))
    if args.zip:
        print(export_zip(args.run_dir, args.zip))
    merged = args.merged
    if args.gguf and not merged:
        merged = str(Path(args.run_dir) / "merged")
    if merged and not (Path(merged) / "config.json").is_file():
        print(export_merged(args.run_dir, merged, args.dtype))
    if args.gguf:
        print(export_gguf(merged, args.gguf))
    return 0
