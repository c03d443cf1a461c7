"""Spectra of a Qwen3-1.7B-shaped LoRA adapter (196 modules, r=16): from the factors vs from the explicit ΔW.

    python bench/bench_spectra.py [--r 16] [--layers 28] [--explicit-modules 196] [--json]

Prints the time of each method, their ratio, and the largest relative difference of the singular values;
`--json` ends with one JSON line of the same figures.
The baseline is what a plain library call does: torch.linalg.svdvals(s·B@A) on the d×k product.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from lora_demo.lowrank.adapter import factor_svd  # noqa: E402

# Qwen3-1.7B: hidden 2048, 16 q heads × 128, 8 kv heads × 128, intermediate 6144, 28 layers.
SHAPES = {  # (out, in) of each projection
    "q_proj": (2048, 2048),
    "k_proj": (1024, 2048),
    "v_proj": (1024, 2048),
    "o_proj": (2048, 2048),
    "gate_proj": (6144, 2048),
    "up_proj": (6144, 2048),
    "down_proj": (2048, 6144),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--r", type=int, default=16)
    ap.add_argument("--layers", type=int, default=28)
    ap.add_argument("--explicit-modules", type=int, default=196, help="how many modules the baseline computes")
    ap.add_argument("--json", action="store_true", help="end with one JSON line of all figures")
    args = ap.parse_args()
    torch.manual_seed(0)
    mods = [
        (f"layers.{i}.{n}", torch.randn(d, args.r) * 0.01, torch.randn(args.r, k) * 0.01)
        for i in range(args.layers)
        for n, (d, k) in SHAPES.items()
    ]
    print(
        f"{len(mods)} modules, r={args.r}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} cores"
    )

    t0 = time.perf_counter()
    ours = [factor_svd(b, a, 1.0) for _, b, a in mods]
    t_factors = time.perf_counter() - t0

    n = min(args.explicit_modules, len(mods))
    t0 = time.perf_counter()
    ref = [torch.linalg.svdvals(b @ a)[: args.r] for _, b, a in mods[:n]]
    t_explicit = time.perf_counter() - t0
    t_explicit_all = t_explicit * len(mods) / n

    err = max(float(((o.float() - r).abs() / r.abs().clamp_min(1e-12)).max()) for o, r in zip(ours, ref, strict=False))
    print(f"from factors (QR + r×r SVD, float64): {t_factors:.3f} s for {len(mods)} modules")
    note = "" if n == len(mods) else f" (measured on {n}, scaled to {len(mods)})"
    print(f"explicit svdvals(B@A) (float32):       {t_explicit_all:.1f} s{note}")
    print(f"speed-up: {t_explicit_all / t_factors:.0f}x; max relative difference of σ: {err:.1e}")
    if args.json:
        result = {
            "modules": len(mods),
            "r": args.r,
            "layers": args.layers,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cores": os.cpu_count(),
            "explicit_modules_measured": n,
            "factors_seconds": t_factors,
            "explicit_measured_seconds": t_explicit,
            "explicit_seconds": t_explicit_all,
            "explicit_scaled": n != len(mods),
            "speedup": t_explicit_all / t_factors,
            "max_rel_diff_sigma": err,
        }
        print(json.dumps(result))


if __name__ == "__main__":
    main()
