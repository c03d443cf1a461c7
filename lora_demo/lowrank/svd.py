"""SVD and the best rank-k approximation, with every number the Low-rank lab shows.

M = U Σ Vᵀ,  σ₁ ≥ σ₂ ≥ ... ≥ 0
M_k = U[:, :k] Σ[:k, :k] Vᵀ[:k, :]          (the best rank-k approximation: Eckart-Young)
‖M - M_k‖_F² = Σ_{i>k} σᵢ²                  (the error is exactly the energy left out)
LoRA factors, singular values folded into A as in the seed write-up:
B = U[:, :k]  (d×k),   A = Σ[:k, :k] Vᵀ[:k, :]  (k×n),   B·A = M_k
"""

from __future__ import annotations

import numpy as np

from lora_demo.errors import InputError
from lora_demo.i18n import msg
from lora_demo.lowrank.matrix import check_rank

SEED_SINGULAR_VALUES = (5.2, 3.1, 1.8, 0.3, 0.1)


def energy(singular_values: np.ndarray) -> np.ndarray:
    """Cumulative energy fractions Σ_{i≤k} σᵢ² / Σ σᵢ², k = 1..n."""
    sq = np.asarray(singular_values, dtype=np.float64) ** 2
    total = sq.sum()
    return np.cumsum(sq) / total if total > 0 else np.ones_like(sq)


def rank_for_energy(singular_values: np.ndarray, fraction: float) -> int:
    """The smallest k whose top-k singular values hold at least `fraction` of the energy."""
    e = energy(singular_values)
    return int(np.searchsorted(e, fraction - 1e-12) + 1) if len(e) else 0


def low_rank_approx(m: np.ndarray, k: int) -> dict:
    """Everything about the rank-k truncation of m: spectrum, approximation, error, factors, parameter counts."""
    d, n = m.shape
    k = check_rank(k, min(d, n))
    u, s, vt = np.linalg.svd(m, full_matrices=False)
    b = u[:, :k]
    a = s[:k, None] * vt[:k, :]
    approx = b @ a
    residual = m - approx
    err = float(np.linalg.norm(residual))
    total = float(np.linalg.norm(m))
    tail = float(np.sum(s[k:] ** 2))
    return {
        "shape": [d, n],
        "rank": k,
        "singular_values": s.tolist(),
        "energy": energy(s).tolist(),
        "rank_90": rank_for_energy(s, 0.90),
        "rank_99": rank_for_energy(s, 0.99),
        "approx": approx.tolist(),
        "residual": residual.tolist(),
        "error_fro": err,
        "relative_error": err / total if total > 0 else 0.0,
        "error_sq": err**2,
        "tail_energy": tail,  # Eckart-Young: equals error_sq
        "B": b.tolist(),
        "A": a.tolist(),
        "factor_check": float(np.max(np.abs(b @ a - approx))) if approx.size else 0.0,
        **param_counts(d, n, k),
    }


def param_counts(d: int, n: int, r: int) -> dict:
    """Parameters of a full d×n update against rank-r factors, and the rank where LoRA stops saving."""
    full, low = d * n, r * (d + n)
    return {
        "params_full": full,
        "params_lowrank": low,
        "compression": full / low if low else float("inf"),
        "break_even_rank": d * n / (d + n),  # LoRA saves only while r < d·n/(d+n)
    }


def random_orthogonal(n: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-random orthogonal n×n matrix (QR of a Gaussian matrix with the sign fix)."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def matrix_with_spectrum(singular_values, d: int | None = None, n: int | None = None, seed: int = 0) -> np.ndarray:
    """U diag(σ) Vᵀ with random orthogonal U, V: a matrix whose singular values are exactly the given ones."""
    s = np.asarray(singular_values, dtype=np.float64)
    d = d or len(s)
    n = n or len(s)
    if len(s) > min(d, n):
        raise ValueError("more singular values than min(d, n)")
    rng = np.random.default_rng(seed)
    u = random_orthogonal(d, rng)[:, : len(s)]
    v = random_orthogonal(n, rng)[:, : len(s)]
    return (u * s) @ v.T


def seed_matrix(seed: int = 0) -> np.ndarray:
    """The seed write-up's example: σ = 5.2, 3.1, 1.8, 0.3, 0.1 in a 5×5 matrix."""
    return matrix_with_spectrum(SEED_SINGULAR_VALUES, seed=seed)


def low_rank_plus_noise(d: int, n: int, true_rank: int, noise: float, seed: int = 0) -> np.ndarray:
    """A rank-`true_rank` d×n matrix (Gaussian factors, scaled to unit-ish entries) plus Gaussian noise."""

    for label, v, hi in (("d", d, 2048), ("k", n, 2048)):
        if not isinstance(v, (int, np.integer)) and not float(v).is_integer() or not 1 <= v <= hi:
            raise InputError(msg("{label} must be a whole number from 1 to {hi}; got {v}.", label=label, hi=hi, v=v))
    d, n = int(d), int(n)
    true_rank = check_rank(true_rank, min(d, n))
    if not np.isfinite(noise) or noise < 0:
        raise InputError(msg("The noise level must be a number ≥ 0; got {noise}.", noise=noise))
    rng = np.random.default_rng(seed)
    m = rng.standard_normal((d, true_rank)) @ rng.standard_normal((true_rank, n)) / np.sqrt(true_rank)
    return m + noise * rng.standard_normal((d, n))
