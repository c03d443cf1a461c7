"""What checkpoints and probe prompts cost a run: the same training three times, one after another.

    python bench/bench_checkpoints.py [--model ID] [--max-steps N] [--json]

Variants (the Train tab's defaults for this device otherwise, run through the same Runner as the app):
- plain:       no checkpoints (save_steps -1), no probes (probe_tokens 0): the baseline;
- checkpoints: the default checkpoints (about 5 per run, newest 3 kept), no probes;
- default:     checkpoints and probe prompts (3 prompts, 32 greedy tokens at step 0, each checkpoint and the end).
Each reports the worker's wall time (status.json), the training span (first to last logged step), the seconds the
probes took (probes.jsonl, measured inside the worker) and the bytes the checkpoints hold. Run-to-run noise on
2 cores is about ±5%: the probe seconds are the exact part.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

VARIANTS = {"plain": dict(save_steps=-1, probe_tokens=0), "checkpoints": dict(probe_tokens=0), "default": {}}


def one_run(work: Path, model: str | None, max_steps: int | None, overrides: dict) -> dict:
    from lora_demo.device import detect
    from lora_demo.train import checkpoints, probes
    from lora_demo.train.runner import Runner
    from lora_demo.train.runs import read_progress
    from lora_demo.train.settings import defaults_for

    s = defaults_for(detect().device, model)
    for key, value in {**overrides, **({"max_steps": max_steps} if max_steps else {})}.items():
        setattr(s, key, value)
    runner = Runner(work / "runs", work / "data")
    run_dir = runner.start(s)
    st = runner.wait(3600)
    logs = [p for p in read_progress(run_dir) if p.get("type") == "log"]
    points = probes.read(run_dir)
    kept = sum(f.stat().st_size for c in checkpoints.checkpoints(run_dir) for f in c.iterdir() if f.is_file())
    return {
        "status": st.get("status"),
        "steps": st.get("step"),
        "wall_s": round(st["ended"] - st["started"], 2),
        "train_span_s": round(logs[-1]["time"] - logs[0]["time"], 2) if len(logs) > 1 else None,
        "checkpoints_saved": sum(1 for p in read_progress(run_dir) if p.get("type") == "checkpoint"),
        "checkpoint_mb_kept": round(kept / 2**20, 1),
        "probe_points": len(points),
        "probe_s": round(sum(p.get("seconds", 0) for p in points), 2),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="base model (default: this device's default)")
    ap.add_argument("--max-steps", type=int, default=None, help="stop each run after N steps (default: the full run)")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = ap.parse_args(argv)
    out = {}
    for name in args.variants.split(","):
        with tempfile.TemporaryDirectory(prefix=f"bench-ckpt-{name}-") as tmp:
            out[name] = one_run(Path(tmp), args.model, args.max_steps, VARIANTS[name])
        print(f"{name:12s} " + "  ".join(f"{k} {v}" for k, v in out[name].items()), flush=True)
    if "plain" in out:
        base = out["plain"]["wall_s"]
        for name in out:
            out[name]["vs_plain"] = round(out[name]["wall_s"] / base, 3)
        print("wall time vs plain: " + ", ".join(f"{n} {out[n]['vs_plain']}×" for n in out))
    if "default" in out:
        d = out["default"]
        print(
            f"probes: {d['probe_points']} points, {d['probe_s']} s of {d['wall_s']} s "
            f"({100 * d['probe_s'] / d['wall_s']:.1f}% of the run)"
        )
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
