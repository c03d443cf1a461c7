"""Parent vs child: how a 'Continue training' run changed its parent's update ΔW, module by module.

Everything is computed from the LoRA factors, never the d×k products: for ΔW₁ = s₁B₁A₁ and ΔW₂ = s₂B₂A₂,
⟨ΔW₁, ΔW₂⟩_F = s₁s₂·trace((B₁ᵀB₂)(A₂A₁ᵀ)) needs only r×r matrices, and ‖ΔW₂ − ΔW₁‖²_F = ‖ΔW₂‖² + ‖ΔW₁‖² − 2⟨ΔW₁, ΔW₂⟩.
The direction measure is the overlap of the top-k left singular subspaces, ‖U₁ᵀU₂‖²_F / k (1: the same
directions, 0: orthogonal), the kind of subspace similarity the LoRA paper (Hu et al. 2021, §7) uses.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from lora_demo.errors import InputError
from lora_demo.i18n import msg
from lora_demo.lowrank.adapter import _LAYER, factor_svd, load_lora_factors

TOP_K = 4


def _inner(f1, f2) -> float:
    (b1, a1, s1), (b2, a2, s2) = f1, f2
    b1, a1, b2, a2 = (t.to(torch.float64) for t in (b1, a1, b2, a2))
    return float(s1 * s2 * torch.trace((b1.T @ b2) @ (a2 @ a1.T)))


def compare_module(parent, child, k: int = TOP_K) -> dict:
    """Norms, relative change, cosine and top-k subspace overlap of the parent's and child's ΔW of one module."""
    pp, cc, pc = _inner(parent, parent), _inner(child, child), _inner(parent, child)
    diff = math.sqrt(max(pp + cc - 2 * pc, 0.0))
    up, sp, _ = factor_svd(*parent, vectors=True)
    uc, sc, _ = factor_svd(*child, vectors=True)
    k = max(1, min(k, int((sp > 0).sum()), int((sc > 0).sum())))
    overlap = float(torch.linalg.matrix_norm(up[:, :k].T @ uc[:, :k]) ** 2 / k)
    return {
        "parent_norm": math.sqrt(pp),
        "child_norm": math.sqrt(cc),
        "rel_change": diff / math.sqrt(pp) if pp > 0 else None,  # ‖ΔW_child − ΔW_parent‖ / ‖ΔW_parent‖
        "cosine": pc / math.sqrt(pp * cc) if pp > 0 and cc > 0 else None,
        "subspace_overlap": overlap,
    }


def compare_adapters(parent_dir: str | Path, child_dir: str | Path) -> dict:
    """Per-module comparison of two adapters of the same shape (a parent and the child continued from it)."""
    _, parent = load_lora_factors(parent_dir)
    _, child = load_lora_factors(child_dir)
    # The same ΔW shape (d×k); the ranks may differ (a rank-k copy against its source).
    shared = [
        n
        for n in child
        if n in parent
        and parent[n][0].shape[0] == child[n][0].shape[0]
        and parent[n][1].shape[1] == child[n][1].shape[1]
    ]
    if not shared:
        raise InputError(
            msg(
                "{parent} and {child} share no LoRA module of the same shape: compare a run with the run "
                "continued from it.",
                parent=Path(parent_dir).name,
                child=Path(child_dir).name,
            )
        )
    modules = []
    for name in shared:
        lm = _LAYER.search("." + name + ".")
        modules.append(
            {
                "name": name,
                "layer": int(lm.group(1)) if lm else None,
                "module": name.split(".")[-1],
                **compare_module(parent[name], child[name]),
            }
        )
    return {
        "parent": str(parent_dir),
        "child": str(child_dir),
        "top_k": TOP_K,
        "modules": modules,
        "only_parent": sorted(set(parent) - set(shared)),
        "only_child": sorted(set(child) - set(shared)),
    }
