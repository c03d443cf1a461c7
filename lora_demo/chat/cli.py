"""CLI: `chat` prints the base and the tuned answer to one prompt."""

from __future__ import annotations

import argparse
import json


def add_chat_parser(sub) -> None:
    """Add `chat` to the subparsers `sub` (lora_demo/cli.py calls this)."""
    p = sub.add_parser("chat", help="base vs tuned answers to one prompt, from one loaded model")
    p.add_argument("--model", default="auto", help="base model ('auto': the one the adapter was trained on)")
    p.add_argument("--adapter", help="PEFT adapter folder (a run folder)")
    p.add_argument("--prompt", required=True)
    p.add_argument("--system", default="")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--greedy", action="store_true")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=float, default=1.0, help="adapter scale, 0 to 2")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_chat)


def cmd_chat(args: argparse.Namespace) -> int:
    from lora_demo.chat.engine import ChatEngine, GenSettings

    engine = ChatEngine()
    for line in engine.load(args.model, args.adapter):  # 'auto': the adapter's base, else the device default
        if not args.json:
            print(line)
    gen = GenSettings(max_new_tokens=args.max_new_tokens, greedy=args.greedy, temperature=args.temperature,
                      seed=args.seed, adapter_scale=args.scale)  # fmt: skip
    res = engine.answer_pair(args.prompt, gen, args.system)
    if args.json:
        print(json.dumps({"base": res["base"], "tuned": res["tuned"]}, ensure_ascii=False))
    else:
        print(f"\nBASE:  {res['base']}\nTUNED: {res['tuned']}")
    return 0
