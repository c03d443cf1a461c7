"""The LoRA product ΔW = B·A made readable: every row of ΔW is a weighted sum of A's rows.

B (d×r) says how strongly each output neuron moves; A (r×n) holds the r "adjustment directions".
Row i of ΔW = B[i,0]·A₁ + B[i,1]·A₂ + ... + B[i,r-1]·A_r.
"""

from __future__ import annotations

import numpy as np

from lora_demo.errors import InputError
from lora_demo.i18n import msg
from lora_demo.lowrank.matrix import parse_matrix
from lora_demo.lowrank.svd import param_counts

SEED_B = [[0.1, 0.2], [0.3, 0.1], [-0.2, 0.4], [0.4, -0.1]]
SEED_A = [[0.5, -0.2, 0.8, 0.1], [0.3, 0.6, -0.4, 0.2]]


def row_expression(b_row, decimals: int = 2) -> str:
    """'0.1·A₁ + 0.2·A₂' for one row of B."""
    subs = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")
    parts = []
    for j, c in enumerate(b_row):
        coef = f"{abs(c):.{decimals}f}".rstrip("0").rstrip(".") if c != 0 else "0"
        term = f"{coef}·A{str(j + 1).translate(subs)}"
        if not parts:
            parts.append(("-" if c < 0 else "") + term)
        else:
            parts.append(("- " if c < 0 else "+ ") + term)
    return " ".join(parts)


def lora_product(b, a) -> dict:
    """ΔW = B·A with its row-by-row reading and parameter counts. B and A may be text, rows or arrays."""
    bm = parse_matrix(b, msg("B matrix"))
    am = parse_matrix(a, msg("A matrix"))
    if bm.shape[1] != am.shape[0]:
        raise InputError(
            msg(
                "B is {bd}×{br} and A is {ar}×{ak}: B's columns ({br}) must equal A's rows ({ar}), the rank r.",
                bd=bm.shape[0],
                br=bm.shape[1],
                ar=am.shape[0],
                ak=am.shape[1],
            )
        )
    d, r = bm.shape
    k = am.shape[1]
    dw = bm @ am
    return {
        "shape": [d, k],
        "r": r,
        "delta_w": dw.tolist(),
        "delta_w_rounded": np.round(dw, 2).tolist(),
        "row_expressions": [msg("row {i} = {expr}", i=i + 1, expr=row_expression(bm[i])) for i in range(d)],
        **param_counts(d, k, r),
    }


def example_w0(d: int, k: int, seed: int = 0) -> np.ndarray:
    """A stand-in frozen weight W0 for the picture W = W0 + B·A (Gaussian, std 0.5, fixed seed)."""
    return np.random.default_rng(seed).standard_normal((d, k)) * 0.5
