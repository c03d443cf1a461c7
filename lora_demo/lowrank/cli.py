"""CLI: `lowrank` (a matrix's rank-k approximation, or a LoRA product), `analyze` and `truncate` (adapters)."""

from __future__ import annotations

import argparse
import json

from lora_demo.errors import InputError
from lora_demo.lowrank import lora_product, low_rank_approx, parse_matrix


def add_lowrank_parser(sub) -> None:
    """Add `lowrank` to the subparsers `sub` (lora_demo/cli.py calls this)."""
    p = sub.add_parser("lowrank", help="rank-k SVD approximation of --matrix, or the LoRA product --B · --A")
    p.add_argument("--matrix", help="JSON rows, e.g. '[[1,2],[3,4]]', or CSV text")
    p.add_argument("--rank", help="k for the rank-k approximation")
    p.add_argument("--B", dest="b", help="B (d×r) as JSON rows")
    p.add_argument("--A", dest="a", help="A (r×n) as JSON rows")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_lowrank)


def add_analyze_parser(sub) -> None:
    p = sub.add_parser("analyze", help="singular-value spectra of every module of a trained LoRA adapter")
    p.add_argument("adapter_dir")
    p.add_argument("--base-model", help="base model id or folder, for ‖ΔW‖/‖W0‖ (default: from adapter_config)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_analyze)


def add_truncate_parser(sub) -> None:
    p = sub.add_parser("truncate", help="write a rank-k truncated copy of an adapter")
    p.add_argument("adapter_dir")
    p.add_argument("--rank", type=int, required=True)
    p.add_argument("--out", required=True, help="new adapter folder (must not exist)")
    p.set_defaults(func=cmd_truncate)


def cmd_lowrank(args: argparse.Namespace) -> int:
    if args.matrix is not None:
        if args.rank is None:
            raise InputError("--matrix needs --rank K.")
        m = parse_matrix(args.matrix)
        res = low_rank_approx(m, args.rank)
        keys = [
            "singular_values",
            "energy",
            "approx",
            "error_fro",
            "relative_error",
            "tail_energy",
            "rank_90",
            "rank_99",
            "B",
            "A",
            "params_full",
            "params_lowrank",
            "compression",
            "break_even_rank",
        ]
    elif args.b is not None and args.a is not None:
        res = lora_product(args.b, args.a)
        keys = ["delta_w", "delta_w_rounded", "row_expressions", "params_full", "params_lowrank", "break_even_rank"]
    else:
        raise InputError("Give --matrix JSON --rank K, or --B JSON --A JSON.")
    out = {k: res[k] for k in keys}
    if args.json:
        print(json.dumps(out))
    else:
        for k in keys:
            print(f"{k}: {out[k]}")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from lora_demo.lowrank import analyze_adapter  # deferred: the adapter analysis imports torch

    res = analyze_adapter(args.adapter_dir, args.base_model)
    if args.json:
        print(json.dumps(res))
        return 0
    print(f"{res['adapter_dir']}: base {res['base_model']}, r={res['r']}, alpha={res['lora_alpha']}")
    print(f"{'module':60s} {'‖ΔW‖_F':>10s} {'eff.rank':>9s} {'stable':>8s} {'r90':>4s} {'r99':>4s}")
    for m in res["modules"]:
        print(
            f"{m['name']:60s} {m['fro_norm']:10.4g} {m['effective_rank']:9.2f} {m['stable_rank']:8.2f} "
            f"{m['rank_90']:4d} {m['rank_99']:4d}"
        )
    return 0


def cmd_truncate(args: argparse.Namespace) -> int:
    from lora_demo.lowrank import truncate_adapter  # deferred: imports torch

    print(truncate_adapter(args.adapter_dir, args.rank, args.out))
    return 0
