"""What a GRPO round with a format reward does to answers on prompts it never trained on.

    python bench/bench_grpo.py [--model smollm2-135m-instruct] [--steps 40] [--json]

The prompts: 64 short questions written here (facts, definitions, small sums), shuffled with a fixed seed; the first
`--train` are the training prompts, the rest are held out. The reward is one format reward,

    format:^[A-Z][^\\n.!?]*\\.$    (the whole answer is one plain sentence: a capital letter first, no line break,
                                    and its first full stop, question or exclamation mark is its last character)

which the base model meets now and then by itself when it samples (GRPO learns only from groups in which some answers
score better than others). GRPO starts from the base model (new LoRA factors), through the same Runner as the app
(probes and checkpoints off, so the wall time is the round's own).

Reported, before (the base model) and after (the GRPO adapter): the share of well-formed answers on the held-out
prompts, sampled as training samples (`--samples` answers per prompt at the run's temperature, up to its max tokens,
with a fixed seed) and greedy; the mean answer length in tokens; the GRPO run's steps, wall time (start to end of its
worker), s/step, and its first and last logged mean reward.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FORMAT = r"^[A-Z][^\n.!?]*\.$"
QUESTIONS = [
    "What is the capital of France?",
    "Name a fruit that is yellow.",
    "How many legs does a spider have?",
    "What colour is the sky on a clear day?",
    "Who wrote Romeo and Juliet?",
    "What is 7 times 8?",
    "What is the boiling point of water in Celsius?",
    "Name a planet in our solar system.",
    "What language is spoken in Brazil?",
    "What do bees make?",
    "What is the largest ocean?",
    "How many days are in a week?",
    "What animal says moo?",
    "What is the opposite of hot?",
    "What gas do plants take in?",
    "Which season comes after winter?",
    "What is the capital of Japan?",
    "How many minutes are in an hour?",
    "What do you call a baby cat?",
    "What is the freezing point of water?",
    "Name a primary colour.",
    "What is 12 plus 15?",
    "Which animal is known as the king of the jungle?",
    "What is the tallest animal?",
    "What do cows drink?",
    "What is the main ingredient of bread?",
    "What is the capital of Italy?",
    "How many continents are there?",
    "What instrument has 88 keys?",
    "What is the chemical symbol for water?",
    "Which planet is known as the red planet?",
    "What is the largest mammal?",
    "What do caterpillars turn into?",
    "How many sides does a triangle have?",
    "What is the currency of the United Kingdom?",
    "What do we call frozen water?",
    "Who painted the Mona Lisa?",
    "What is the capital of Germany?",
    "How many hours are in a day?",
    "What is the fastest land animal?",
    "What colour is a ripe banana?",
    "What is 100 divided by 4?",
    "Which organ pumps blood?",
    "What is the capital of Spain?",
    "What do you use to write on a blackboard?",
    "What is the largest desert?",
    "How many months are in a year?",
    "What shape has four equal sides?",
    "What is the capital of Canada?",
    "What do plants need to grow?",
    "What is the closest star to Earth?",
    "What is a group of wolves called?",
    "What is 9 minus 4?",
    "Which bird is a symbol of peace?",
    "What is the longest river in Africa?",
    "What metal is liquid at room temperature?",
    "What is the capital of Egypt?",
    "How many wheels does a bicycle have?",
    "What is the hardest natural substance?",
    "What do you call a young dog?",
    "Which ocean lies between Africa and Australia?",
    "What is the main language of Mexico?",
    "How many players are on a football team?",
    "What is the capital of Australia?",
]


def split_prompts(n_train: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    rows = [{"instruction": q, "input": "", "output": ""} for q in QUESTIONS]
    random.Random(seed).shuffle(rows)
    return rows[:n_train], rows[n_train:]


def sample(model, tok, rows: list[dict], s, n: int, temperature: float | None, seed: int = 0) -> list[str]:
    """n answers per row (temperature None: one greedy answer), prompted as training prompts them."""
    import torch

    from lora_demo.data.templates import prompt_ids

    ids = [prompt_ids(r, tok, s.template, s.enable_thinking) for r in rows]
    width, pad = max(map(len, ids)), tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    inputs = torch.tensor([[pad] * (width - len(i)) + i for i in ids])
    mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids])
    k = n if temperature else 1
    torch.manual_seed(seed)
    sampling = (
        {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
        if temperature
        else {"do_sample": False}
    )
    with torch.no_grad():
        out = model.generate(
            input_ids=inputs.repeat_interleave(k, 0),
            attention_mask=mask.repeat_interleave(k, 0),
            max_new_tokens=s.grpo_max_tokens,
            pad_token_id=pad,
            **sampling,
        )
    return [tok.decode(o[width:], skip_special_tokens=True).strip() for o in out]


def measure(model, tok, rows: list[dict], s, n: int) -> dict:
    sampled = sample(model, tok, rows, s, n, s.grpo_temperature)
    greedy = sample(model, tok, rows, s, 1, None)
    ok = [bool(re.search(FORMAT, a)) for a in sampled]
    lengths = [len(tok(a, add_special_tokens=False)["input_ids"]) for a in sampled]
    return {
        "share_sampled": round(sum(ok) / len(ok), 3),
        "share_greedy": round(sum(bool(re.search(FORMAT, a)) for a in greedy) / len(greedy), 3),
        "mean_tokens": round(sum(lengths) / len(lengths), 1),
        "examples": greedy[:3],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--train", type=int, default=48, help="training prompts (the rest of the 64 held out)")
    ap.add_argument("--steps", type=int, default=40, help="GRPO optimizer steps")
    ap.add_argument("--prompts-per-step", type=int, default=4, help="micro batch: prompts per step")
    ap.add_argument("--generations", type=int, default=4, help="answers sampled per prompt")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--samples", type=int, default=4, help="answers sampled per held-out prompt when measuring")
    ap.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = ap.parse_args(argv)

    import torch
    from peft import PeftModel

    from lora_demo.models import load_model
    from lora_demo.train.runner import Runner
    from lora_demo.train.runs import read_progress
    from lora_demo.train.settings import TrainSettings

    train, held = split_prompts(args.train)
    s = TrainSettings(
        model=args.model,
        dataset="bench-grpo",
        method="grpo",
        rewards=[f"format:{FORMAT}"],
        template="chat",
        max_seq_length=256,
        micro_batch_size=args.prompts_per_step,
        warmup=2,
        learning_rate=args.lr,
        max_steps=args.steps,
        grpo_generations=args.generations,
        grpo_max_tokens=args.max_tokens,
        grpo_temperature=args.temperature,
        probe_tokens=0,
        save_steps=-1,
        val_fraction=0.0,
        run_name="grpo",
    )
    out: dict = {
        "model": args.model,
        "format": FORMAT,
        "train_prompts": len(train),
        "held_out_prompts": len(held),
        "generations": args.generations,
        "prompts_per_step": args.prompts_per_step,
        "temperature": args.temperature,
        "max_tokens": args.max_tokens,
        "lr": args.lr,
    }
    torch.set_num_threads(2)
    lm = load_model(args.model, dtype="fp32", device="cpu")
    out["base"] = measure(lm.model, lm.tokenizer, held, s, args.samples)
    print(f"base: {out['base']}", flush=True)
    del lm
    with tempfile.TemporaryDirectory(prefix="bench-grpo-") as tmp:
        work = Path(tmp)
        runner = Runner(work / "runs", work / "data")
        run_dir = runner.start(s, rows=train)
        st = runner.wait(7200)
        assert st["status"] == "completed", st
        logs = [p for p in read_progress(run_dir) if p.get("type") == "log" and "reward" in p]
        out["grpo"] = {
            "steps": st["step"],
            "wall_s": round(st["ended"] - st["started"], 1),
            "s_per_step": round((st["ended"] - st["started"]) / max(st["step"], 1), 2),
            "first_reward": round(logs[0]["reward"], 3),
            "last_reward": round(logs[-1]["reward"], 3),
            "last5_reward": round(sum(p["reward"] for p in logs[-5:]) / len(logs[-5:]), 3),
        }
        print(f"GRPO: {out['grpo']}", flush=True)
        lm = load_model(args.model, dtype="fp32", device="cpu")
        tuned = PeftModel.from_pretrained(lm.model, str(run_dir)).eval()
        out["tuned"] = measure(tuned, lm.tokenizer, held, s, args.samples)
        print(f"tuned: {out['tuned']}", flush=True)
    b, t = out["base"], out["tuned"]
    print(
        f"well-formed share on {len(held)} held-out prompts (sampled ×{args.samples} at T={args.temperature} / "
        f"greedy): base {b['share_sampled']:.2f} / {b['share_greedy']:.2f} -> GRPO {t['share_sampled']:.2f} / "
        f"{t['share_greedy']:.2f}; {out['grpo']['steps']} steps in {out['grpo']['wall_s']} s"
    )
    if args.json:
        print(json.dumps(out, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
