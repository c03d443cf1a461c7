"""CLI: `chat` prints the base model's answer and each adapter's to one prompt (one batch of one loaded base)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lora_demo.chat.engine import ChatEngine, GenSettings


def add_chat_parser(sub) -> None:
    """Add `chat` to the subparsers `sub` (lora_demo/cli.py calls this)."""
    p = sub.add_parser("chat", help="base vs tuned answers to one prompt, from one loaded model")
    p.add_argument("--model", default="auto", help="base model ('auto': the one the adapter was trained on)")
    p.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="DIR",
        help="PEFT adapter folder (a run folder); repeat it to compare several adapters of one base",
    )
    p.add_argument("--prompt", required=True)
    p.add_argument("--system", default="")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--greedy", action="store_true")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=float, default=1.0, help="adapter scale, 0 to 2")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_chat)


def answer_names(adapters: list[str]) -> list[str]:
    """The JSON key of each adapter's answer: its folder name (the path where two folders share a name)."""
    names = [Path(a).name for a in adapters]
    return [a if names.count(n) > 1 or n in ("base", "tuned") else n for a, n in zip(adapters, names, strict=True)]


def cmd_chat(args: argparse.Namespace) -> int:
    from lora_demo.device import one_thread_outside_chat  # deferred: device imports torch

    one_thread_outside_chat()  # the generation thread alone computes on every core
    engine = ChatEngine()
    adapters = [str(Path(a).absolute()) for a in args.adapter]
    first = adapters[0] if adapters else None
    for line in engine.load(args.model, first):  # 'auto': the adapter's base, else the device default
        if not args.json:
            print(line)
    for extra in adapters[1:]:
        for line in engine.attach(extra):
            if not args.json:
                print(line)
    gen = GenSettings(
        max_new_tokens=args.max_new_tokens,
        greedy=args.greedy,
        temperature=args.temperature,
        seed=args.seed,
        adapter_scale=args.scale,
    )
    source = [{"role": "user", "content": args.prompt}]
    results = None
    for results in engine.generate([source] * (1 + len(adapters)), [None, *adapters], args.system, gen):  # noqa: B007
        pass
    answers = {"base": results[0].text}
    answers.update(zip(answer_names(adapters), (r.text for r in results[1:]), strict=True))
    if len(adapters) == 1:
        answers["tuned"] = results[1].text  # one adapter: the {"base", "tuned"} keys scripts already read
    if args.json:
        print(json.dumps(answers, ensure_ascii=False))
    else:
        width = max(len(k) for k in answers)
        print("\n" + "\n".join(f"{k.upper() + ':':<{width + 2}}{v}" for k, v in answers.items() if k != "tuned"))
    return 0
