"""CLI: `votes RUN_DIR [--export FILE] [--json]`: the blind votes' win rate (one line per pair when some votes were
against another adapter than the base model; --json: by_opponent), and their preference pairs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lora_demo.errors import InputError
from lora_demo.i18n import msg
from lora_demo.judge.ballots import VOTES_FILE, VoteStore
from lora_demo.judge.stats import export_dpo, pair_lines, side_name, vote_summary, win_rate_markdown


def add_votes_parser(sub) -> None:
    """Add `votes` to the subparsers `sub` (lora_demo/cli.py calls this)."""
    p = sub.add_parser("votes", help="the tuned model's win rate in blind votes, and DPO preference pairs")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run (adapter) folder with votes.jsonl")
    p.add_argument("--export", metavar="FILE", help="write the preference pairs (prompt/chosen/rejected) as JSONL")
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON line: the counts, rate and interval (and by_opponent: the same per opponent)",
    )
    p.set_defaults(func=cmd_votes)


def cmd_votes(args: argparse.Namespace) -> int:

    if not (Path(args.run_dir) / VOTES_FILE).is_file():
        raise InputError(
            msg(
                "{run_dir} has no {file}: vote on some blind pairs in the Chat tab first.",
                run_dir=str(args.run_dir),
                file=VOTES_FILE,
            )
        )
    votes = VoteStore(args.run_dir).votes()
    stats = vote_summary(votes)  # win_rate's keys, and by_opponent
    exported = export_dpo(votes, args.export) if args.export else None
    if args.json:
        print(json.dumps(stats | ({"pairs_exported": exported} if args.export else {}), ensure_ascii=False))
        return 0
    if any(p["opponent"] for p in stats["by_opponent"]):  # against other adapters too: one line per pair
        for line in pair_lines(side_name(Path(args.run_dir).resolve()), stats["by_opponent"]):
            print(line)
    else:  # against the base model only
        print(win_rate_markdown(stats))
    if args.export:
        print(f"{exported} preference pair{'s' if exported != 1 else ''} written to {args.export}")
    return 0
