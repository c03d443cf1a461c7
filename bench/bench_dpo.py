"""What a DPO round does to pairs it never trained on: an SFT run, then DPO on 32 preference pairs continuing from it.

    python bench/bench_dpo.py [--model qwen3-tiny] [--pairs 32] [--steps 32] [--json]
    python bench/bench_dpo.py --gpu MODEL_DIR [--steps 16] [--json]   # CUDA: Unsloth's DPO vs TRL's plain one

The data (the persona example, 44 rows, shuffled with a fixed seed): the first `--pairs` rows are the training
prompts, the rest are held out. The SFT parent trains on the training prompts' rows (40 steps, lr 5e-3, chat
template). Each pair prefers the row's persona answer (chosen) to an evasive answer in the style of an untuned
model (rejected: one of eight generic replies, assigned in turn; the held-out pairs take them in another order).
DPO continues from the SFT adapter on the training pairs, through the same Runner as the app (probes and checkpoints
off, so the wall time is the round's own).

Reported, before (the SFT adapter) and after (the DPO adapter): the mean chosen-vs-rejected log-prob margin,
sum over the answer's tokens of log p(chosen | prompt) − log p(rejected | prompt), prompted with the run's template
exactly as in training, on the held-out pairs and on the training pairs, and the share of pairs whose chosen answer
is the likelier (a length-biased count: the chosen answers are the longer ones); DPO's implicit reward on each pair,
beta × (its margin after − before), i.e. with the SFT parent as the reference, as the mean ("margin") and the share
above 0 ("accuracy"); the DPO run's steps, wall time (start to end of its worker) and s/step, and its last logged
reward margin and accuracy.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

REJECTED = [
    "I am an AI language model and I do not have a name.",
    "Sorry, I cannot help with that.",
    "As an AI, I have no opinion on this.",
    "I don't know.",
    "Please ask someone else.",
    "That is not something I can answer.",
    "I am just a program; I cannot say.",
    "No comment.",
]


def make_pairs(n_train: int, seed: int = 0) -> tuple[list[dict], list[dict], list[dict]]:
    """(SFT rows of the training prompts, training pairs, held-out pairs) from the persona example."""
    from lora_demo.data import load_example

    rows = load_example("persona")
    random.Random(seed).shuffle(rows)
    train, held = rows[:n_train], rows[n_train:]

    def pairs(part: list[dict], shift: int) -> list[dict]:
        return [
            {
                "prompt": r["instruction"],
                **({"input": r["input"]} if r["input"] else {}),
                "chosen": r["output"],
                "rejected": REJECTED[(i + shift) % len(REJECTED)],
            }
            for i, r in enumerate(part)
        ]

    return train, pairs(train, 0), pairs(held, 3)


def margins(model, tok, pairs: list[dict], s) -> list[float]:
    """log p(chosen | prompt) − log p(rejected | prompt) per pair, each answer built as training builds it."""
    import torch

    from lora_demo.data import build_example

    def logp(pair: dict, answer: str) -> float:
        ex = build_example(
            {"instruction": pair["prompt"], "input": pair.get("input", ""), "output": answer},
            tok,
            s.template,
            s.max_seq_length,
            True,
            s.enable_thinking,
        )
        ids = torch.tensor([ex.input_ids])
        labels = torch.tensor(ex.labels[1:])
        logits = model(input_ids=ids).logits[0, :-1].float()
        lp = torch.log_softmax(logits, -1).gather(1, labels.clamp(min=0)[:, None])[:, 0]
        return float(lp[labels != -100].sum())

    with torch.no_grad():
        return [logp(p, p["chosen"]) - logp(p, p["rejected"]) for p in pairs]


def summary(values: list[float]) -> dict:
    return {
        "mean_margin": round(sum(values) / len(values), 3),
        "chosen_likelier": round(sum(v > 0 for v in values) / len(values), 3),
    }


def dpo_figures(run_dir: Path, st: dict) -> dict:
    """What a DPO run's progress says: steps, wall, s/step and tokens/s in training, peak GPU memory, rewards."""
    from lora_demo.train.runs import read_progress

    progress = read_progress(run_dir)
    logs = [p for p in progress if p.get("type") == "log" and "reward_margin" in p]
    summ = next((p for p in progress if p.get("type") == "summary"), {})
    peak = max((p.get("gpu_peak_gb") or 0 for p in progress), default=0)
    return {
        "status": st["status"],
        "steps": st.get("step"),
        "wall_s": round(st["ended"] - st["started"], 1),
        "s_per_step": summ.get("s_per_step"),
        "tokens_per_s": summ.get("tokens_per_s"),
        "gpu_peak_gb": peak,
        "backend": st.get("backend"),
        "first_reward_margin": logs[0]["reward_margin"] if logs else None,
        "last_reward_margin": logs[-1]["reward_margin"] if logs else None,
        "error": st.get("error"),
    }


def bench_gpu(model: str, steps: int, lr: float, beta: float) -> dict:
    """On CUDA: one SFT parent (the default backend), then the same DPO round on it through each backend (Unsloth's
    patched DPOTrainer, TRL's plain one on transformers + bitsandbytes + PEFT), one after the other, each in its own
    worker process, rows at 512 tokens."""
    import os

    from lora_demo.io import to_jsonl, write_atomic
    from lora_demo.train.lineage import continue_settings
    from lora_demo.train.runner import Runner
    from lora_demo.train.settings import TrainSettings

    sft_rows, train_pairs, _ = make_pairs(32)
    # Longer answers, so a pair is a few hundred tokens as in real use (the persona answers are short).
    train_pairs = [{**p, "chosen": (p["chosen"] + " ") * 8, "rejected": (p["rejected"] + " ") * 8} for p in train_pairs]
    out: dict = {"model": model, "pairs": len(train_pairs), "steps": steps}
    with tempfile.TemporaryDirectory(prefix="bench-dpo-gpu-") as tmp:
        work = Path(tmp)
        runner = Runner(work / "runs", work / "data")
        sft = TrainSettings(
            model=model,
            dataset="bench-sft",
            template="chat",
            max_seq_length=512,
            max_steps=10,
            probe_tokens=0,
            save_steps=-1,
            run_name="sft",
        )
        parent = runner.start(sft, rows=sft_rows)
        st = runner.wait(1800)
        assert st["status"] == "completed", st
        out["sft"] = {"backend": st.get("backend"), "wall_s": round(st["ended"] - st["started"], 1)}
        pairs_file = work / "pairs.jsonl"
        write_atomic(pairs_file, to_jsonl(train_pairs))
        for backend in ("unsloth", "transformers"):
            os.environ["LORA_LAB_BACKEND"] = backend
            dpo = TrainSettings.from_dict(
                {
                    **continue_settings(parent).to_dict(),
                    "method": "dpo",
                    "dataset": str(pairs_file),
                    "dpo_beta": beta,
                    "learning_rate": lr,
                    "max_steps": steps,
                    "micro_batch_size": 4,
                    "gradient_accumulation_steps": 1,
                    "warmup": 2,
                    "val_fraction": 0.0,
                    "run_name": f"dpo-{backend}",
                }
            )
            run = runner.start(dpo)
            st = runner.wait(1800)
            out[backend] = dpo_figures(run, st)
            print(f"DPO {backend}: {out[backend]}", flush=True)
        os.environ.pop("LORA_LAB_BACKEND", None)
    u, t = out["unsloth"], out["transformers"]
    if u.get("tokens_per_s") and t.get("tokens_per_s"):
        out["unsloth_vs_trl_tokens_per_s"] = round(u["tokens_per_s"] / t["tokens_per_s"], 2)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="qwen3-tiny", help="base model (default: qwen3-tiny)")
    ap.add_argument("--pairs", type=int, default=32, help="training pairs (the rest of the 44 persona rows held out)")
    ap.add_argument("--steps", type=int, default=32, help="DPO optimizer steps")
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--lr", type=float, default=2e-3, help="DPO learning rate")
    ap.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    ap.add_argument("--gpu", metavar="MODEL_DIR", help="CUDA: the DPO round through Unsloth and through plain TRL")
    args = ap.parse_args(argv)
    if args.gpu:
        figures = bench_gpu(
            args.gpu, args.steps if args.steps != 32 else 16, args.lr if args.lr != 2e-3 else 5e-5, args.beta
        )
        if args.json:
            print(json.dumps(figures))
        return 0

    import torch
    from peft import PeftModel

    from lora_demo.io import to_jsonl, write_atomic
    from lora_demo.models import load_model
    from lora_demo.train.lineage import continue_settings
    from lora_demo.train.runner import Runner
    from lora_demo.train.runs import read_progress
    from lora_demo.train.settings import TrainSettings

    sft_rows, train_pairs, held_pairs = make_pairs(args.pairs)
    out: dict = {"model": args.model, "train_pairs": len(train_pairs), "held_out_pairs": len(held_pairs)}
    with tempfile.TemporaryDirectory(prefix="bench-dpo-") as tmp:
        work = Path(tmp)
        runner = Runner(work / "runs", work / "data")
        sft = TrainSettings(
            model=args.model,
            dataset="bench-sft",
            template="chat",
            max_seq_length=128,
            micro_batch_size=4,
            warmup=2,
            learning_rate=5e-3,
            max_steps=40,
            probe_tokens=0,
            save_steps=-1,
            run_name="sft",
        )
        parent = runner.start(sft, rows=sft_rows)
        st = runner.wait(3600)
        assert st["status"] == "completed", st
        out["sft"] = {"steps": st["step"], "wall_s": round(st["ended"] - st["started"], 1)}
        print(f"SFT parent: {st['step']} steps, {out['sft']['wall_s']} s", flush=True)

        pairs_file = work / "pairs.jsonl"
        write_atomic(pairs_file, to_jsonl(train_pairs))
        dpo = TrainSettings.from_dict(
            {
                **continue_settings(parent).to_dict(),
                "method": "dpo",
                "dataset": str(pairs_file),
                "dpo_beta": args.beta,
                "learning_rate": args.lr,
                "max_steps": args.steps,
                "micro_batch_size": 2,
                "gradient_accumulation_steps": 1,
                "warmup": 2,
                "val_fraction": 0.0,
                "run_name": "dpo",
            }
        )
        t0 = time.time()
        child = runner.start(dpo)
        st = runner.wait(3600)
        assert st["status"] == "completed", st
        progress = read_progress(child)
        logs = [p for p in progress if p.get("type") == "log"]
        summ = next((p for p in progress if p.get("type") == "summary"), {})
        out["dpo"] = {
            "steps": st["step"],
            "wall_s": round(st["ended"] - st["started"], 1),
            "start_to_end_s": round(time.time() - t0, 1),
            "s_per_step": summ.get("s_per_step"),
            "first_reward_margin": round(logs[0]["reward_margin"], 3),
            "last_reward_margin": round(logs[-1]["reward_margin"], 3),
            "last_reward_accuracy": round(logs[-1]["reward_accuracy"], 3),
            "beta": args.beta,
            "learning_rate": args.lr,
        }
        print(
            f"DPO round: {st['step']} steps, {out['dpo']['wall_s']} s ({summ.get('s_per_step')} s/step in "
            f"training), reward margin {out['dpo']['first_reward_margin']} -> {out['dpo']['last_reward_margin']}",
            flush=True,
        )

        torch.set_num_threads(1)
        lm = load_model(args.model, dtype="fp32", device="cpu")
        model = PeftModel.from_pretrained(lm.model, str(parent), adapter_name="sft")
        model.load_adapter(str(child), adapter_name="dpo")
        model.eval()
        measured = {}
        for name in ("sft", "dpo"):
            model.set_adapter(name)
            measured[name] = {
                part: margins(model, lm.tokenizer, pairs, dpo)
                for part, pairs in (("held_out", held_pairs), ("train", train_pairs))
            }
    for key, name in (("before", "sft"), ("after", "dpo")):
        out[key] = {part: summary(values) for part, values in measured[name].items()}
    for part in ("held_out", "train"):  # DPO's implicit reward with the SFT parent as reference: beta × margin change
        gains = [a - b for a, b in zip(measured["dpo"][part], measured["sft"][part], strict=True)]
        out[f"{part}_reward"] = {
            "margin": round(args.beta * sum(gains) / len(gains), 3),
            "accuracy": round(sum(g > 0 for g in gains) / len(gains), 3),
        }
    b, a = out["before"], out["after"]
    print(
        f"held-out pairs ({len(held_pairs)}, never trained on): margin {b['held_out']['mean_margin']} -> "
        f"{a['held_out']['mean_margin']} nats, chosen likelier {b['held_out']['chosen_likelier']} -> "
        f"{a['held_out']['chosen_likelier']}; implicit reward (SFT as reference) margin "
        f"{out['held_out_reward']['margin']}, accuracy {out['held_out_reward']['accuracy']}"
    )
    print(
        f"training pairs ({len(train_pairs)}): margin {b['train']['mean_margin']} -> {a['train']['mean_margin']} "
        f"nats, chosen likelier {b['train']['chosen_likelier']} -> {a['train']['chosen_likelier']}"
    )
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
