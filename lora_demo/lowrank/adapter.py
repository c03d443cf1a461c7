"""Spectra of trained LoRA adapters, computed from the factors, and rank-k truncated copies.

For a module with factors B (d×r), A (r×k) and PEFT scaling s (alpha/r, or alpha/sqrt(r) with rsLoRA),
ΔW = s·B·A has rank ≤ r, so its SVD never needs the d×k product:

    B  = Q_B R_B        (thin QR, Q_B d×r orthonormal, R_B r×r)
    Aᵀ = Q_A R_A        (thin QR, Q_A k×r orthonormal, R_A r×r)
    ΔW = s · Q_B (R_B R_Aᵀ) Q_Aᵀ
    R_B R_Aᵀ = U_c Σ V_cᵀ   (SVD of an r×r core)
    ⇒ ΔW = (Q_B U_c) (sΣ) (Q_A V_c)ᵀ,   singular values s·Σ

That is O((d+k)r²) instead of O(d·k·min(d,k)): for Qwen3-1.7B's 196 modules at r=16 about a second on a CPU.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from lora_demo.adapters import check_adapter, find_adapter_files
from lora_demo.errors import InputError
from lora_demo.i18n import msg
from lora_demo.io import copy_file, regular_files
from lora_demo.lowrank.svd import rank_for_energy
from lora_demo.models.registry import get_spec, model_path
from lora_demo.rundir import ADAPTER_CONFIG, ADAPTER_WEIGHTS, AdapterDir

_KEY = re.compile(r"^(?P<prefix>.*?)(?P<module>[^.]+)\.lora_(?P<ab>[AB])(?:\.(?P<adapter>[^.]+))?\.weight$")
_LAYER = re.compile(r"\.layers\.(\d+)\.")


@dataclass
class ModuleSpectrum:
    name: str  # e.g. model.layers.3.self_attn.q_proj
    layer: int | None
    module: str  # q_proj, k_proj, ...
    shape: tuple[int, int]  # (out, in) of ΔW
    r: int
    scaling: float
    singular_values: list[float]
    fro_norm: float
    stable_rank: float  # ‖ΔW‖_F² / σ₁²
    effective_rank: float  # exp(entropy of σ/Σσ) (Roy & Vetterli 2007)
    rank_90: int  # smallest k holding 90% of Σσ²
    rank_99: int
    rel_to_base: float | None = None  # ‖ΔW‖_F / ‖W0‖_F where the base weight is at hand


def factor_svd(b: torch.Tensor, a: torch.Tensor, scaling: float = 1.0, vectors: bool = False):
    """Singular values of scaling·B·A from the factors (and, with vectors, U (d×r) and Vᵀ (r×k))."""
    b = b.to(torch.float64)
    a = a.to(torch.float64)
    qb, rb = torch.linalg.qr(b)
    qa, ra = torch.linalg.qr(a.T)
    core = rb @ ra.T
    if not vectors:
        return torch.linalg.svdvals(core) * abs(scaling)
    uc, s, vct = torch.linalg.svd(core)
    sign = 1.0 if scaling >= 0 else -1.0
    return qb @ uc * sign, s * abs(scaling), vct @ qa.T


def spectrum_measures(s: np.ndarray) -> dict:
    """Frobenius norm, stable rank, entropy effective rank and the 90%/99% energy ranks of a spectrum."""

    s = np.asarray(s, dtype=np.float64)
    fro2 = float(np.sum(s**2))
    if fro2 == 0.0:
        return {"fro_norm": 0.0, "stable_rank": 0.0, "effective_rank": 0.0, "rank_90": 0, "rank_99": 0}
    p = s[s > 0] / s.sum()
    return {
        "fro_norm": math.sqrt(fro2),
        "stable_rank": fro2 / float(s[0] ** 2),
        "effective_rank": float(np.exp(-np.sum(p * np.log(p)))),
        "rank_90": rank_for_energy(s, 0.90),
        "rank_99": rank_for_energy(s, 0.99),
    }


def load_lora_factors(adapter_dir: str | Path) -> tuple[dict, dict[str, tuple[torch.Tensor, torch.Tensor, float]]]:
    """(adapter config, {module name: (B, A, scaling)}) read straight from the safetensors file."""
    from safetensors.torch import load_file

    info = check_adapter(adapter_dir)  # a torn or empty file, a bad config: one clear message
    _, weights = find_adapter_files(adapter_dir)
    try:
        config = info.config
        tensors = load_file(str(weights))
    except (OSError, ValueError, json.JSONDecodeError) as e:
        raise InputError(
            msg(
                "{folder}: the adapter files cannot be read ({error}).",
                folder=str(adapter_dir),
                error=str(e).splitlines()[0][:200],
            )
        ) from None
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        m = _KEY.match(key)
        if m:
            name = _module_name(m["prefix"] + m["module"])
            pairs.setdefault(name, {})[m["ab"]] = t
    modules = {}
    for name, ab in sorted(pairs.items(), key=lambda kv: _sort_key(kv[0])):
        if "A" in ab and "B" in ab:
            modules[name] = (ab["B"], ab["A"], _scaling(config, name, ab["A"].shape[0]))
    if not modules:
        raise InputError(
            msg(
                "{folder} holds no LoRA weights (no lora_A/lora_B pairs in adapter_model.safetensors).",
                folder=str(adapter_dir),
            )
        )
    return config, modules


def _module_name(raw: str) -> str:
    return raw.removeprefix("base_model.model.")


def _sort_key(name: str):
    m = _LAYER.search("." + name + ".")
    return (int(m.group(1)) if m else -1, name)


def _scaling(config: dict, name: str, r: int) -> float:
    """PEFT's scaling for one module, honouring rank_pattern / alpha_pattern and rsLoRA."""
    short = name.split(".")[-1]
    alpha = config.get("lora_alpha", r)
    for pattern, value in (config.get("alpha_pattern") or {}).items():
        if name.endswith(pattern) or short == pattern:
            alpha = value
    return alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r


def analyze_adapter(adapter_dir: str | Path, base_model: str | None = None) -> dict:
    """Per-module spectrum and measures of ΔW = s·B·A for a PEFT LoRA adapter folder."""
    config, modules = load_lora_factors(adapter_dir)
    base_norms = _base_weight_norms(base_model or config.get("base_model_name_or_path"), modules)
    out = []
    for name, (b, a, s) in modules.items():
        sv = factor_svd(b, a, s).numpy()
        lm = _LAYER.search("." + name + ".")
        spec = ModuleSpectrum(
            name=name,
            layer=int(lm.group(1)) if lm else None,
            module=name.split(".")[-1],
            shape=(b.shape[0], a.shape[1]),
            r=a.shape[0],
            scaling=s,
            singular_values=sv.tolist(),
            **spectrum_measures(sv),
        )
        if name in base_norms and base_norms[name] > 0:
            spec.rel_to_base = spec.fro_norm / base_norms[name]
        out.append(asdict(spec))
    return {
        "adapter_dir": str(adapter_dir),
        "base_model": config.get("base_model_name_or_path"),
        "r": config.get("r"),
        "lora_alpha": config.get("lora_alpha"),
        "use_rslora": bool(config.get("use_rslora")),
        "base_weights_available": bool(base_norms),
        "modules": out,
    }


def _base_weight_norms(base_model: str | None, modules: dict) -> dict[str, float]:
    """‖W0‖_F for each module, read lazily from the base model's safetensors where they are on disk."""
    if not base_model:
        return {}
    try:
        if get_spec(base_model).kind == "hub":
            return {}  # not downloaded here, or 4-bit packed: no plain W0 to measure
        folder = Path(model_path(base_model))
    except Exception:  # noqa: BLE001 - the base model is optional for this analysis
        return {}
    from safetensors import safe_open

    norms = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), "pt") as f:
            keys = set(f.keys())
            for name in modules:
                key = f"{name}.weight"
                if key in keys:
                    norms[name] = float(torch.linalg.norm(f.get_tensor(key).to(torch.float32)))
    return norms


def truncate_adapter(adapter_dir: str | Path, k: int, out_dir: str | Path) -> Path:
    """Write a rank-k copy of an adapter (its best rank-k approximation per module) as a new PEFT folder.

    The scaling is folded into B' and the new config has r = lora_alpha = k (scaling 1, no rsLoRA), so
    B'·A' = (s·B·A)_k exactly, and any PEFT loader reads it.
    """
    from safetensors.torch import load_file, save_file

    config, modules = load_lora_factors(adapter_dir)
    max_r = min(b.shape[1] for b, _, _ in modules.values())
    try:
        k_int = int(k)
    except (TypeError, ValueError):
        raise InputError(msg("The rank k must be a whole number; got {k!r}.", k=k)) from None
    if k_int != k or not 1 <= k_int < max_r:
        raise InputError(
            msg(
                "Truncation rank must be a whole number from 1 to {top} (below the adapter's r={r}).",
                top=max_r - 1,
                r=max_r,
            )
        )
    out = Path(out_dir)
    if out.exists():
        raise InputError(msg("{out} already exists: pick a new name so no adapter is overwritten.", out=str(out)))
    _, src_weights = find_adapter_files(adapter_dir)
    extras = regular_files(adapter_dir, skip=(ADAPTER_WEIGHTS, ADAPTER_CONFIG))  # links refused
    tensors = load_file(str(src_weights))
    new = {}
    for key, t in tensors.items():
        m = _KEY.match(key)
        if not m:
            new[key] = t  # modules_to_save and other extras are copied unchanged
            continue
        b, a, s = modules[_module_name(m["prefix"] + m["module"])]
        u, sv, vt = factor_svd(b, a, s, vectors=True)
        root = torch.sqrt(sv[:k_int])
        if m["ab"] == "B":
            new[key] = (u[:, :k_int] * root).to(t.dtype).contiguous()
        else:
            new[key] = (root[:, None] * vt[:k_int]).to(t.dtype).contiguous()
    out.mkdir(parents=True)
    copy = AdapterDir(out)
    save_file(new, str(copy.weights_path), metadata={"format": "pt"})
    config = {**config, "r": k_int, "lora_alpha": k_int, "use_rslora": False, "rank_pattern": {}, "alpha_pattern": {}}
    copy.adapter_config_path.write_text(json.dumps(config, indent=2))
    for extra in extras:  # tokenizer files, run config: the Chat tab reads them
        copy_file(extra, out / extra.name)
    copy.truncated_path.write_text(json.dumps({"source": str(adapter_dir), "rank": k_int}))
    return out
