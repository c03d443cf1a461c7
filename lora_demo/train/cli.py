"""CLI: `plan` (parameters, steps and warnings, offline), `train` (the same engine as the Train tab), `stop` (what
the Train tab's Stop does), `delete-run` and `runs` (list, or --compare)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from lora_demo.errors import InputError
from lora_demo.i18n import msg
from lora_demo.models import cached_tokenizer, resolve_model
from lora_demo.rundir import RunDir
from lora_demo.train.compare import compare_runs, table_text
from lora_demo.train.lineage import continue_settings
from lora_demo.train.plan import plan_markdown, plan_run
from lora_demo.train.runner import Runner, equivalent_command, resolve_data
from lora_demo.train.runs import (
    ACTIVE,
    delete_run,
    has_adapter,
    list_runs,
    read_progress,
    read_status,
    request_stop,
    settled,
    stop_command,
    stop_notice,
)
from lora_demo.train.settings import TrainSettings, defaults_for


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
    p.add_argument("--runs-dir", default="runs", help="where votes:<run> looks for a run (a DPO config)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plan)


def add_train_parser(sub) -> None:
    """Add `train` to the subparsers `sub` (lora_demo/cli.py calls this; its parser class is cli.CommandParser).

    The TrainSettings flags come from `settings_flags` as a lazy parent: they are made (importing transformers)
    only when `train` itself is parsed, so building the CLI for any other command stays fast."""
    p = sub.add_parser(
        "train",
        help="run a LoRA fine-tune (same engine as the Train tab) with a progress bar",
        lazy_parents=lambda: [settings_flags()],
    )
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
    p.add_argument(
        "--detach",
        action="store_true",
        help="start the run and return at once, leaving it training (it prints how to watch and stop it); without "
        "it the run ends when this command ends, even if it is killed",
    )
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--data-dir", default="data")
    p.set_defaults(func=cmd_train)


def add_stop_parser(sub) -> None:
    """Add `stop` (lora_demo/cli.py calls this)."""
    p = sub.add_parser("stop", help="stop a training run as the Train tab's Stop does (the adapter so far is saved)")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run's folder, e.g. runs/<run>")
    p.add_argument(
        "--wait",
        nargs="?",
        type=float,
        const=600.0,
        default=0.0,
        metavar="SECONDS",
        help="wait until it has stopped (at most SECONDS, default 600) and print how it ended",
    )
    p.set_defaults(func=cmd_stop)


def add_delete_run_parser(sub) -> None:
    """Add `delete-run` (lora_demo/cli.py calls this)."""
    p = sub.add_parser("delete-run", help="delete a run folder that is not training (asks first, unless --yes)")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run's folder, e.g. runs/<run>")
    p.add_argument("--yes", action="store_true", help="delete without asking")
    p.set_defaults(func=cmd_delete_run)


def add_runs_parser(sub) -> None:
    """Add `runs` (lora_demo/cli.py calls this): the runs of a folder, or --compare some of them."""
    p = sub.add_parser("runs", help="list the runs, or --compare RUN RUN ...: losses, speed, settings side by side")
    p.add_argument(
        "--compare",
        nargs="+",
        metavar="RUN",
        help="runs to compare: names in --runs-dir, or run folders (e.g. runs/<run>)",
    )
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--json", action="store_true", help="print one JSON object (with --compare: runs, curves, differs)")
    p.set_defaults(func=cmd_runs)


def settings_flags() -> argparse.ArgumentParser:
    """One flag per TrainSettings field (--max-steps N, --packing true|false, ...) with the field's help text.

    transformers' HfArgumentParser makes them from the dataclass; every default then becomes None, so only the
    flags the user gives override the base settings (--config, or this device's defaults)."""
    from transformers import HfArgumentParser
    from transformers.hf_argparser import string_to_bool

    flags = HfArgumentParser(TrainSettings, add_help=False)
    for action in flags._actions:
        action.default = None
        action.option_strings = [o for o in action.option_strings if "_" not in o]  # --max-steps, not --max_steps
        if action.type is string_to_bool:
            action.metavar = "true|false"
        if action.option_strings[0].startswith("--no-"):  # HfArgumentParser's complement of a bool that defaults on
            action.help = f"Same as --{action.dest.replace('_', '-')} false."
        if action.dest == "num_nodes":
            action.option_strings.append("--nnodes")  # torchrun's own name for it
        if action.dest == "target_modules":
            action.metavar, action.help = "MODULES", action.help + " Comma-separated: q_proj,v_proj."
        if action.dest == "rewards":  # --reward SPEC, repeatable (a regex may hold commas: never split)
            action.__class__ = argparse._ExtendAction
            action.option_strings, action.metavar = ["--reward", "--rewards"], "SPEC"
            action.help += " Repeat --reward for each."
    return flags


def _settings_from(args: argparse.Namespace):
    """--config (or this device's defaults), then only the flags given on the command line over it."""
    from lora_demo.device import detect  # deferred: device imports torch

    if getattr(args, "continue_from", None):
        base = continue_settings(args.continue_from).to_dict()
    elif args.config:
        base = TrainSettings.from_yaml(args.config).to_dict()
    else:
        base = defaults_for(detect().device).to_dict()
    given = {name: getattr(args, name) for name in base if getattr(args, name, None) is not None}
    for key in ("target_modules", "report_to"):  # nargs="+": "q_proj,v_proj" and "q_proj v_proj" both work
        if key in given:
            given[key] = [t.strip() for v in given[key] for t in v.split(",") if t.strip()]
    return TrainSettings.from_dict({**base, **given})


def cmd_plan(args: argparse.Namespace) -> int:

    if args.config:
        s = TrainSettings.from_yaml(args.config)
    else:
        targets = [t.strip() for t in args.targets.split(",") if t.strip()]
        s = TrainSettings(
            model=resolve_model(args.model),
            r=args.r,
            lora_alpha=args.alpha or args.r,
            target_modules=targets,
            dataset=args.dataset or "example:persona",
        )
    rows = tok = None
    if args.dataset or args.config:
        rows = resolve_data(s, args.data_dir, args.runs_dir)  # (a DPO config: its preference pairs)
        try:
            tok = cached_tokenizer(s.model)
        except Exception:  # noqa: BLE001 - token lengths are optional offline
            tok = None
    plan = plan_run(s, rows, tok)
    if args.json:
        keys = [
            "trainable_params",
            "total_params",
            "trainable_percent",
            "lora_modules",
            "backend",
            "precision",
            "estimated_memory_gb",
            "total_steps",
            "steps_per_epoch",
            "effective_batch",
            "warmup_steps",
            "method",
            "pairs",
            "prompts",
            "generations",
            "rewards",
            "warnings",
            "errors",
        ]
        print(json.dumps({k: plan[k] for k in keys if k in plan}, ensure_ascii=False))
    else:
        print(plan_markdown(plan).replace("**", ""))
    return 1 if plan["errors"] else 0


def cmd_train(args: argparse.Namespace) -> int:

    runner = Runner(args.runs_dir, args.data_dir, attached=not args.detach)  # attached: the worker ends with us
    if args.resume:
        from pathlib import Path

        run_dir = Path(args.resume)
        ckpt, skipped = runner.resume(run_dir)
        print("\n".join([*skipped, f"resuming {run_dir} from {ckpt.name}"]), flush=True)
    else:
        run_dir = runner.start(_settings_from(args))
        print(f"run folder: {run_dir}\nrepeat with: {equivalent_command(run_dir)}", flush=True)
    if args.detach:
        print(
            f"training on its own (pid {runner.proc.pid})\nwatch it: tail -f {RunDir(run_dir).log_path} (or the Train "
            f"tab of lora-lab --runs-dir {run_dir.parent})\nstop it:  {stop_command(run_dir)}",
            flush=True,
        )
        return 0
    print(f"stop it: Ctrl-C, or {stop_command(run_dir)} (the adapter so far is saved)", flush=True)
    st = _watch(runner, run_dir)
    if st.get("status") == "failed":
        raise InputError(st.get("error") or "training failed; see train.log in the run folder")
    if st.get("node_rank"):  # another machine of a multi-node run: node 0 holds the adapter
        print(
            f"{st.get('status')}: node {st['node_rank']} of {st.get('num_nodes')} ended its part at step "
            f"{st.get('step') or 0}; node 0 saved the adapter in its run folder (this node's log: "
            f"{RunDir(run_dir).log_path})"
        )
        return 0 if st.get("status") == "completed" else 3
    loss = st.get("final_loss")
    where = f"adapter in {run_dir}" if has_adapter(run_dir) else f"no adapter was saved in {run_dir}"
    losses = "" if loss is None else f", loss {st.get('first_loss', float('nan')):.4f} -> {round(loss, 4)}"
    if st.get("reward") is not None:  # GRPO: the mean reward of the first and the last logged step
        losses += f", reward {st.get('first_reward', float('nan')):.3f} -> {st['reward']:.3f}"
    print(f"{st.get('status')}: {st.get('step') or 0}/{st.get('total_steps') or '?'} steps{losses}; {where}")
    return 0 if st.get("status") == "completed" else 3


def cmd_stop(args: argparse.Namespace) -> int:
    """Write the run's STOP file, as the Train tab's Stop does (runs.request_stop); --wait: until it has ended."""
    from pathlib import Path

    run_dir = Path(args.run_dir)
    if not RunDir(run_dir).is_run():
        raise InputError(msg("{path} is not a run folder (it has no status.json).", path=str(run_dir)))
    st = settled(run_dir, read_status(run_dir))
    if st.get("status") not in ACTIVE:
        print(f"{run_dir.name} is not running (status: {st.get('status', 'unknown')}): nothing to stop.")
        return 0
    request_stop(run_dir)
    print(stop_notice(run_dir), flush=True)
    deadline = time.time() + args.wait
    while time.time() < deadline and st.get("status") in ACTIVE:
        time.sleep(0.5)
        st = settled(run_dir, read_status(run_dir))
    if args.wait:
        saved = f"adapter in {run_dir}" if has_adapter(run_dir) else "no adapter was saved"
        print(
            f"{st.get('status')}: step {st.get('step') or 0}; {saved}"
            if st.get("status") not in ACTIVE
            else f"still {st.get('status')} after {args.wait:.0f} s"
        )
    return 0 if st.get("status") not in ACTIVE or not args.wait else 1


def cmd_delete_run(args: argparse.Namespace) -> int:
    """Delete a run folder (runs.delete_run: never a running one, never a symlink's target), after asking."""
    from pathlib import Path

    run_dir = Path(args.run_dir)
    link = run_dir.is_symlink()
    if not args.yes:
        if not sys.stdin.isatty():
            raise InputError(
                msg("Not deleting {path}: confirm with --yes (there is no terminal to ask on).", path=str(run_dir))
            )
        answer = input(f"Delete {run_dir} and everything in it (adapter, checkpoints, log, data)? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    removed = delete_run(run_dir.parent, run_dir.name)
    print(f"deleted {removed}" + (" (the link only; its target is untouched)" if link else ""))
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    """The runs table, or (--compare) the chosen runs' table and the settings that differ (compare.table_text)."""
    from pathlib import Path

    if not args.compare:
        runs = list_runs(args.runs_dir)
        if args.json:
            print(json.dumps(runs, ensure_ascii=False))
        else:
            for r in runs:
                loss = "" if r["final_loss"] is None else f"  loss {r['final_loss']:.4f}"
                print(f"{r['name']}  {r['status']}  step {r['step'] or 0}/{r['total_steps'] or '?'}{loss}")
            if not runs:
                print(f"no runs in {args.runs_dir}")
        return 0
    # A run folder as given (runs/<run>, an absolute path), else a run of --runs-dir by its name.
    dirs = [Path(r) if RunDir(r).is_run() else Path(args.runs_dir) / r for r in args.compare]
    result = compare_runs(dirs)
    print(json.dumps(result, ensure_ascii=False) if args.json else table_text(result))
    return 0


def _watch(runner, run_dir) -> dict:
    """A tqdm bar of the run until it ends (its final status); Ctrl-C asks it to stop, which saves the adapter."""
    from tqdm import tqdm

    with tqdm(unit="step", file=sys.stdout, dynamic_ncols=True) as bar:
        try:
            while runner.current() is not None:
                _show(bar, read_status(run_dir), read_progress(run_dir))
                time.sleep(0.5)
        except KeyboardInterrupt:
            request_stop(run_dir)
            bar.write(f"{stop_notice(run_dir)} ...")
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
