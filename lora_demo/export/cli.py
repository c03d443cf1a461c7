"""CLI: `export RUN_DIR` with --zip FILE, --merged OUT_DIR, --gguf [TYPE ...], --lora-gguf [TYPE], --check,
--push REPO_ID (any together; GGUFs, the Modelfile and parity.json go to RUN_DIR/exports/)."""

from __future__ import annotations

import argparse

from lora_demo.errors import InputError
from lora_demo.export import export_merged, export_zip
from lora_demo.export.hub import push
from lora_demo.export.layout import GGUF_TYPES, LORA_GGUF_TYPES
from lora_demo.export.parity import summary_lines
from lora_demo.export.run_exports import check_run, export_gguf_with_modelfile, export_lora_gguf_run
from lora_demo.i18n import msg
from lora_demo.rundir import RunDir


def add_export_parser(sub) -> None:
    """Add `export` to the subparsers `sub` (lora_demo/cli.py calls this)."""
    p = sub.add_parser(
        "export",
        help="export a run: a zip, a merged 16-bit model, GGUF + Ollama Modelfile, a "
        "parity report, or a push to the Hugging Face Hub",
    )
    p.add_argument("run_dir")
    p.add_argument("--zip", metavar="FILE", help="write the PEFT adapter + model card + rows as a .zip")
    p.add_argument("--merged", metavar="OUT_DIR", help="merge into the base and save a 16-bit model there")
    p.add_argument(
        "--dtype",
        choices=["auto", "bf16", "fp16"],
        default="auto",
        help="the merged model's type (auto: the base's own 16-bit type)",
    )
    p.add_argument(
        "--gguf",
        nargs="*",
        metavar="TYPE",
        choices=GGUF_TYPES,
        help=f"the merged model as GGUF ({', '.join(GGUF_TYPES)}; default q8_0) + an Ollama Modelfile, "
        "in RUN_DIR/exports/",
    )
    p.add_argument(
        "--lora-gguf",
        nargs="?",
        const="f16",
        metavar="TYPE",
        choices=LORA_GGUF_TYPES,
        help="the adapter alone as a LoRA GGUF for llama.cpp's --lora (default f16)",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="parity report: the app, the merged model and the GGUFs answer the run's prompts greedily",
    )
    p.add_argument("--json", action="store_true", help="with --check: print the report as one JSON line")
    p.add_argument("--push", metavar="REPO_ID", help="upload the adapter, its card and rows to the Hugging Face Hub")
    p.add_argument("--private", action="store_true", help="with --push: create the repo private")
    p.add_argument("--include-gguf", action="store_true", help="with --push: upload the GGUFs and Modelfile too")
    p.add_argument("--dry-run", action="store_true", help="with --push: list what would be uploaded, upload nothing")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    if not (args.zip or args.merged or args.gguf is not None or args.lora_gguf or args.check or args.push):
        raise InputError(
            msg(
                "Say what to export: --zip FILE, --merged OUT_DIR, --gguf [TYPE ...], --lora-gguf, "
                "--check or --push REPO_ID."
            )
        )
    run_dir = Path(args.run_dir)
    if not RunDir(run_dir).has_adapter_config() and not run_dir.is_dir():
        raise InputError(msg("Run folder {path} does not exist: give a run folder (runs/NAME).", path=str(run_dir)))
    if args.zip:
        print(export_zip(run_dir, args.zip))
    if args.merged:
        print(export_merged(run_dir, args.merged, args.dtype))
    for t in (args.gguf or ["q8_0"]) if args.gguf is not None else []:
        gguf, modelfile = export_gguf_with_modelfile(run_dir, t)
        print(gguf)
        print(modelfile)
    if args.lora_gguf:
        print(export_lora_gguf_run(run_dir, args.lora_gguf))
    if args.push:
        res = push(run_dir, args.push, args.private, args.include_gguf, args.dry_run)
        for name, size in res["files"]:
            print(f"{size:>12,}  {name}")
        print(f"dry run: nothing uploaded to {res['repo_id']}" if args.dry_run else f"uploaded to {res['url']}")
    if args.check:
        report = check_run(run_dir, tuple(args.gguf) if args.gguf else ("f16", "q8_0"))
        if args.json:
            print(json.dumps(report, ensure_ascii=False))
        else:
            print("\n".join(summary_lines(report)))
            if report.get("note"):
                print(report["note"])
    return 0
