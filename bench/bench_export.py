"""What each export costs and how faithful it is: time, size and parity, for qwen3-tiny and SmolLM2-135M.

    python bench/bench_export.py [--run RUN_DIR ...] [--models qwen3-tiny,smollm2-135m-instruct] [--steps N] [--json]

Without --run, a short run of each model is trained first on example:persona (the Alpaca template for SmolLM2, as
the CPU default trains it; the chat template for qwen3-tiny), with a 0.1 validation split. Then, per run:
- merged: the adapter merged into its base and saved 16-bit (`export --merged`), seconds and MB;
- GGUF f16 / bf16 / q8_0 through LoRA Lab (merged -> convert_hf_to_gguf.py -> Modelfile), seconds and MB;
- baseline: the same converter run by hand on the same merged folder (`python convert_hf_to_gguf.py merged
  --outtype f16`), so LoRA Lab's own overhead shows;
- LoRA GGUF (the adapter alone, f16), seconds and MB;
- parity (`export --check`): the share of answer tokens (greedy, 48 new at most, >= 3 prompts) equal to the app's,
  for the merged model and each GGUF; where the app chats in bf16, also against its fp32 adapter path.
Timings on 2 cores vary by about +-10% run to run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def train(work: Path, model: str, steps: int) -> Path:
    from lora_demo.train.runner import Runner
    from lora_demo.train.settings import defaults_for

    s = defaults_for("cpu", model)
    s.dataset, s.max_steps, s.val_fraction, s.save_steps, s.probe_tokens = "example:persona", steps, 0.1, -1, 0
    s.run_name = model.split("-")[0]
    if model == "qwen3-tiny":
        s.template, s.learning_rate, s.micro_batch_size, s.max_seq_length = "chat", 5e-3, 4, 128
    runner = Runner(work / "runs", work / "data")
    run_dir = runner.start(s)
    st = runner.wait(3600)
    if st.get("status") != "completed":
        raise SystemExit(f"training {model} ended {st.get('status')}: {(run_dir / 'train.log').read_text()[-800:]}")
    return run_dir


def mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return round(sum(p.stat().st_size for p in files) / 1e6, 1)


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return out, round(time.perf_counter() - t, 2)


def bench_run(run_dir: Path) -> dict:
    import shutil

    from lora_demo.export import layout
    from lora_demo.export.gguf import export_gguf
    from lora_demo.export.llamacpp import CONVERT_MODEL, converters_dir
    from lora_demo.export.run_exports import check_run, ensure_merged, export_gguf_with_modelfile, export_lora_gguf_run

    for stale in (layout.merged_dir(run_dir), layout.exports_dir(run_dir)):
        shutil.rmtree(stale, ignore_errors=True)
    out: dict = {"run": run_dir.name}
    merged, out["merged_s"] = timed(ensure_merged, run_dir)
    out["merged_mb"] = mb(merged)
    for t in layout.GGUF_TYPES:
        (gguf, _), out[f"gguf_{t}_s"] = timed(export_gguf_with_modelfile, run_dir, t)
        out[f"gguf_{t}_mb"] = mb(gguf)
    with tempfile.TemporaryDirectory() as tmp:  # the plain converter on the same folder: the baseline
        t0 = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                str(converters_dir() / CONVERT_MODEL),
                str(merged),
                "--outfile",
                f"{tmp}/plain.gguf",
                "--outtype",
                "f16",
            ],
            check=True,
            capture_output=True,
        )
        out["plain_converter_f16_s"] = round(time.perf_counter() - t0, 2)
        _, out["export_gguf_f16_only_s"] = timed(export_gguf, merged, Path(tmp) / "lab.gguf", "f16")
    lora, out["lora_gguf_s"] = timed(export_lora_gguf_run, run_dir)
    out["lora_gguf_mb"] = mb(lora)
    report, out["check_s"] = timed(check_run, run_dir, ("f16", "q8_0"))
    out["prompts"] = len(report["prompts"])
    out["merged_agreement"] = report["merged_agreement"]
    out["gguf_agreements"] = report["gguf_agreements"]
    out["template_equal"] = report["template_equal"]
    out["app_precision"] = report["app_precision"].split(" ")[0]
    out["vs_app_fp32"] = report.get("vs_app_fp32")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", action="append", default=[], help="a trained run folder (repeatable); default: train")
    ap.add_argument("--models", default="qwen3-tiny,smollm2-135m-instruct")
    ap.add_argument("--steps", type=int, default=40, help="steps of each training run made here")
    ap.add_argument("--json", action="store_true", help="end with one JSON line")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        runs = [Path(r) for r in args.run] or [train(Path(tmp), m, args.steps) for m in args.models.split(",")]
        results = [bench_run(r) for r in runs]
    for r in results:
        print(
            f"\n{r['run']}: merged {r['merged_s']} s ({r['merged_mb']} MB); LoRA GGUF {r['lora_gguf_s']} s "
            f"({r['lora_gguf_mb']} MB)"
        )
        for t in ("f16", "bf16", "q8_0"):
            print(f"  GGUF {t:5s} {r[f'gguf_{t}_s']:6.2f} s  {r[f'gguf_{t}_mb']:7.1f} MB (with the Modelfile)")
        print(
            f"  f16 alone: LoRA Lab {r['export_gguf_f16_only_s']} s vs the plain converter {r['plain_converter_f16_s']} s"
        )
        agree = ", ".join(f"GGUF {t} {100 * v:.1f}%" for t, v in r["gguf_agreements"].items())
        print(
            f"  parity over {r['prompts']} prompts ({r['check_s']} s): merged {100 * r['merged_agreement']:.1f}%, "
            f"{agree}; prompts equal: {r['template_equal']}; app chats in {r['app_precision']}"
        )
        if r["vs_app_fp32"]:
            print(
                "  against the app's fp32 path: "
                + ", ".join(f"{k} {100 * v:.1f}%" for k, v in r["vs_app_fp32"].items())
            )
    if args.json:
        print(json.dumps({"runs": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
