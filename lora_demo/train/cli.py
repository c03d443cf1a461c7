"""CLI: `plan` (parameters, steps and warnings, offline) and `train` (the same engine as the Train tab)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from lora_demo.errors import InputError


def add_plan_parser(sub) -> None:
    """Add `plan` to the subparsers `sub` (lora_demo/cli.py calls this)."""
    p = sub.add_parser("plan", help="trainable parameters, steps and pre-flight warnings (offline for Qwen3 ids)")
    p.add_argument("--model", default="auto")
    p.add_argument("--r", type=int, default=16)
    p.add_argument("--alpha", type=float, default=None, help="lora_alpha (default: r)")
    p.add_argument("--targets", default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj")
    p.add_argument("--dataset", help="dataset name, example:<name> or file, to count steps")
    p.add_argument("--config", help="a run's config.yaml instead of the flags")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plan)


def add_train_parser(sub) -> None:
    """Add `train` to the subparsers `sub` (lora_demo/cli.py calls this; its parser class is cli.CommandParser).

    The TrainSettings flags come from `settings_flags` as a lazy parent: they are made (importing transformers)
    only when `train` itself is parsed, so building the CLI for any other command stays fast."""
    p = sub.add_parser("train", help="run a LoRA fine-tune (same engine as the Train tab) with a progress bar",
                       lazy_parents=lambda: [settings_flags()])  # fmt: skip
    p.add_argument("--config", help="config.yaml of an earlier run, or one you wrote; flags below override it")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="resume a stopped or failed run from its newest whole checkpoint (same folder, same curve)",
    )
    p.add_argument(
        "--continue-from",
        metavar="ADAPTER_DIR",
        dest="continue_from",
        help="a new run starting from this adapter (a run folder or checkpoint), with its settings; flags "
        "override them (e.g. --dataset, --num-epochs)",
    )
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--data-dir", default="data")
    p.set_defaults(func=cmd_train)


def settings_flags() -> argparse.ArgumentParser:
    """One flag per TrainSettings field (--max-steps N, --packing true|false, ...) with the field's help text.

    transformers' HfArgumentParser makes them from the dataclass; every default then becomes None, so only the
    flags the user gives override the base settings (--config, or this device's defaults)."""
    from transformers import HfArgumentParser
    from transformers.hf_argparser import string_to_bool

    from lora_demo.train.settings import TrainSettings

    flags = HfArgumentParser(TrainSettings, add_help=False)
    for action in flags._actions:
        action.default = None
        action.option_strings = [o for o in action.option_strings if "_" not in o]  # --max-steps, not --max_steps
        if action.type is string_to_bool:
            action.metavar = "true|false"
        if action.option_strings[0].startswith("--no-"):  # HfArgumentParser's complement of a bool that defaults on
            action.help = f"Same as --{action.dest.replace('_', '-')} false."
        if action.dest == "target_modules":
            action.metavar, action.help = "MODULES", action.help + " Comma-separated: q_proj,v_proj."
    return flags


def _settings_from(args: argparse.Namespace):
    """--config (or this device's defaults), then only the flags given on the command line over it."""
    from lora_demo.device import detect
    from lora_demo.train.settings import TrainSettings, defaults_for

    if getattr(args, "continue_from", None):
        from lora_demo.train.lineage import continue_settings

        base = continue_settings(args.continue_from).to_dict()
    elif args.config:
        base = TrainSettings.from_yaml(args.config).to_dict()
    else:
        base = defaults_for(detect().device).to_dict()
    given = {name: getattr(args, name) for name in base if getattr(args, name, None) is not None}
    if "target_modules" in given:  # nargs="+": "q_proj,v_proj" and "q_proj v_proj" both work
        given["target_modules"] = [t.strip() for v in given["target_modules"] for t in v.split(",") if t.strip()]
    return TrainSettings.from_dict({**base, **given})


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

    runner = Runner(args.runs_dir, args.data_dir)
    if args.resume:
        from pathlib import Path

        run_dir = Path(args.resume)
        ckpt, skipped = runner.resume(run_dir)
        print("\n".join([*skipped, f"resuming {run_dir} from {ckpt.name}"]), flush=True)
    else:
        run_dir = runner.start(_settings_from(args))
        print(f"run folder: {run_dir}\nrepeat with: {equivalent_command(run_dir)}", flush=True)
    st = _watch(runner, run_dir)
    if st.get("status") == "failed":
        raise InputError(st.get("error") or "training failed; see train.log in the run folder")
    loss = st.get("final_loss")
    print(f"{st.get('status')}: {st.get('step')}/{st.get('total_steps')} steps, "
          f"loss {st.get('first_loss', float('nan')):.4f} -> {loss if loss is None else round(loss, 4)}; adapter in {run_dir}")  # fmt: skip
    return 0 if st.get("status") == "completed" else 3


def _watch(runner, run_dir) -> dict:
    """A tqdm bar of the run until it ends (its final status); Ctrl-C asks it to stop, which saves the adapter."""
    from tqdm import tqdm

    from lora_demo.train.runs import read_progress, read_status

    with tqdm(unit="step", file=sys.stdout, dynamic_ncols=True) as bar:
        try:
            while runner.current() is not None:
                _show(bar, read_status(run_dir), read_progress(run_dir))
                time.sleep(0.5)
        except KeyboardInterrupt:
            bar.write("stopping after the current step (the adapter so far is saved)...")
            runner.stop(wait=600)
        st = read_status(run_dir)
        _show(bar, st, read_progress(run_dir))
    return st


def _show(bar, st: dict, progress: list[dict]) -> None:
    """Move the bar to the run's step, with its stage and last logged loss."""
    step, total = st.get("step") or 0, st.get("total_steps") or None
    if total and bar.total != total:
        bar.reset(total=total)  # the steps are known once training starts: rate and ETA count from here
    logs = [p for p in progress if p.get("type") == "log" and "loss" in p]
    bar.set_description_str(st.get("status", ""), refresh=False)
    bar.set_postfix_str(f"loss {logs[-1]['loss']:.4f}" if logs else "", refresh=False)
    if step > bar.n:
        bar.update(step - bar.n)
    else:
        bar.refresh()
