"""CLI: `plan` (parameters, steps and warnings, offline) and `train` (the same engine as the Train tab)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import fields

from lora_demo.errors import InputError


def register_cli(sub) -> None:
    from lora_demo.cli import COMMANDS
    from lora_demo.train.settings import TrainSettings

    p = sub.add_parser("plan", help="trainable parameters, steps and pre-flight warnings (offline for Qwen3 ids)")
    p.add_argument("--model", default="auto")
    p.add_argument("--r", type=int, default=16)
    p.add_argument("--alpha", type=float, default=None, help="lora_alpha (default: r)")
    p.add_argument("--targets", default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj")
    p.add_argument("--dataset", help="dataset name, example:<name> or file, to count steps")
    p.add_argument("--config", help="a run's config.yaml instead of the flags")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--json", action="store_true")
    COMMANDS["plan"] = cmd_plan

    p = sub.add_parser("train", help="run a LoRA fine-tune (same engine as the Train tab) with a progress bar")
    p.add_argument("--config", help="config.yaml of an earlier run, or one you wrote; flags below override it")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--data-dir", default="data")
    help_ = TrainSettings.help()
    for f in fields(TrainSettings):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "target_modules":
            p.add_argument(flag, help=help_[f.name] + " Comma-separated.")
        elif f.type in ("bool", bool):
            p.add_argument(flag, type=_bool, metavar="true|false", help=help_[f.name])
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            p.add_argument(flag, type=kind, help=help_[f.name])
    COMMANDS["train"] = cmd_train


def _bool(v: str) -> bool:
    if v.lower() in ("1", "true", "yes", "on"):
        return True
    if v.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {v!r}")


def _settings_from(args: argparse.Namespace):
    from lora_demo.device import detect
    from lora_demo.train.settings import TrainSettings, defaults_for

    base = TrainSettings.from_yaml(args.config).to_dict() if args.config else defaults_for(detect().device).to_dict()
    for f in fields(TrainSettings):
        v = getattr(args, f.name, None)
        if v is not None:
            base[f.name] = [t.strip() for t in v.split(",") if t.strip()] if f.name == "target_modules" else v
    return TrainSettings.from_dict(base)


def cmd_plan(args: argparse.Namespace) -> int:
    from lora_demo.models import resolve_model
    from lora_demo.train.plan import plan_markdown, plan_run
    from lora_demo.train.runner import resolve_rows
    from lora_demo.train.settings import TrainSettings

    if args.config:
        s = TrainSettings.from_yaml(args.config)
    else:
        targets = [t.strip() for t in args.targets.split(",") if t.strip()]
        s = TrainSettings(model=resolve_model(args.model), r=args.r, lora_alpha=args.alpha or args.r,
                          target_modules=targets, dataset=args.dataset or "example:persona")  # fmt: skip
    rows = tok = None
    if args.dataset or args.config:
        rows = resolve_rows(s.dataset, args.data_dir)
        try:
            from lora_demo.models import cached_tokenizer

            tok = cached_tokenizer(s.model)
        except Exception:  # noqa: BLE001 - token lengths are optional offline
            tok = None
    plan = plan_run(s, rows, tok)
    if args.json:
        keys = ["trainable_params", "total_params", "trainable_percent", "lora_modules", "backend", "precision",
                "estimated_memory_gb", "total_steps", "steps_per_epoch", "effective_batch", "warmup_steps",
                "warnings", "errors"]  # fmt: skip
        print(json.dumps({k: plan[k] for k in keys if k in plan}, ensure_ascii=False))
    else:
        print(plan_markdown(plan).replace("**", ""))
    return 1 if plan["errors"] else 0


def cmd_train(args: argparse.Namespace) -> int:
    from lora_demo.train.runner import Runner, equivalent_command
    from lora_demo.train.runs import read_progress, read_status

    s = _settings_from(args)
    runner = Runner(args.runs_dir, args.data_dir)
    run_dir = runner.start(s)
    print(f"run folder: {run_dir}\nrepeat with: {equivalent_command(run_dir)}", flush=True)
    try:
        while runner.current() is not None:
            _print_bar(read_status(run_dir), read_progress(run_dir))
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nstopping after the current step (the adapter so far is saved)...", flush=True)
        runner.stop(wait=600)
    st = read_status(run_dir)
    _print_bar(st, read_progress(run_dir))
    print()
    if st.get("status") == "failed":
        raise InputError(st.get("error") or "training failed; see train.log in the run folder")
    loss = st.get("final_loss")
    print(f"{st.get('status')}: {st.get('step')}/{st.get('total_steps')} steps, "
          f"loss {st.get('first_loss', float('nan')):.4f} -> {loss if loss is None else round(loss, 4)}; adapter in {run_dir}")  # fmt: skip
    return 0 if st.get("status") == "completed" else 3


def _print_bar(st: dict, progress: list[dict]) -> None:
    step, total = st.get("step") or 0, st.get("total_steps") or 0
    logs = [p for p in progress if p.get("type") == "log"]
    last = logs[-1] if logs else {}
    frac = step / total if total else 0
    bar = "#" * int(30 * frac) + "-" * (30 - int(30 * frac))
    loss = f" loss {last['loss']:.4f}" if "loss" in last else ""
    eta = f" eta {last['eta_s']:.0f}s" if "eta_s" in last else ""
    sys.stdout.write(f"\r[{bar}] {step}/{total} {st.get('status', '')}{loss}{eta}    ")
    sys.stdout.flush()
