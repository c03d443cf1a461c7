"""The Low-rank lab's views: Plotly figures, Markdown reports and tables drawn from the numbers LabEngine's
`lowrank` actions return (interactive, labelled axes). Pure functions of those numbers; titles, axis labels,
hover texts and reports in `lang` (English or 简体中文)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lora_demo.engine import LowRankActions
from lora_demo.i18n import msg, render, translator

# --- figures ---
MAX_HEATMAP_SIDE = 160  # larger matrices are block-averaged for display so the browser stays responsive


def _hover(tr) -> str:
    return tr("row {row}, column {col}: {value}", row="%{y}", col="%{x}", value="%{z:.3f}") + "<extra></extra>"


def spectrum_figure(singular_values, k: int | None = None, title: str | None = None, lang: str = "en") -> go.Figure:
    """Bars of σᵢ (kept ones highlighted) with the cumulative energy curve and its 90% / 99% points."""
    tr = translator(lang)
    title = render(title, lang) if title is not None else tr("Singular values")

    s = np.asarray(singular_values, dtype=float)
    idx = np.arange(1, len(s) + 1)
    e, ranks = LowRankActions.energy_curve(s)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    colors = ["#4f46e5" if k is None or i <= k else "#c7d2fe" for i in idx]
    fig.add_trace(go.Bar(x=idx, y=s, name="σᵢ", marker_color=colors), secondary_y=False)
    fig.add_trace(
        go.Scatter(
            x=idx, y=e * 100, name=tr("cumulative energy Σσ² %"), mode="lines+markers", line=dict(color="#f97316")
        ),
        secondary_y=True,
    )
    for frac, r in ranks.items():
        fig.add_trace(
            go.Scatter(
                x=[r],
                y=[e[r - 1] * 100],
                mode="markers+text",
                text=[tr("{frac:.0%} at k={k}", frac=frac, k=r)],
                textposition="bottom right",
                marker=dict(size=11, symbol="diamond", color="#dc2626"),
                name=tr("{frac:.0%} energy", frac=frac),
                showlegend=False,
            ),
            secondary_y=True,
        )
    if k is not None:
        fig.add_vline(x=k + 0.5, line_dash="dash", line_color="#6b7280", annotation_text=f"k = {k}")
    fig.update_layout(
        title=title, height=360, margin=dict(l=50, r=50, t=50, b=40), legend=dict(orientation="h", y=-0.2)
    )
    fig.update_xaxes(title_text=tr("index i"))
    fig.update_yaxes(title_text=tr("singular value σᵢ"), secondary_y=False)
    fig.update_yaxes(title_text=tr("cumulative energy (%)"), range=[0, 105], secondary_y=True)
    return fig


def _display(m: np.ndarray, tr=translator("en")) -> tuple[np.ndarray, str]:
    """Block-average a large matrix down to at most MAX_HEATMAP_SIDE per side, with a note saying so."""
    d, n = m.shape
    fd, fn = max(1, -(-d // MAX_HEATMAP_SIDE)), max(1, -(-n // MAX_HEATMAP_SIDE))
    if fd == 1 and fn == 1:
        return m, ""
    pd, pn = (-d) % fd, (-n) % fn
    padded = np.pad(m, ((0, pd), (0, pn)), constant_values=np.nan)
    small = np.nanmean(padded.reshape(padded.shape[0] // fd, fd, padded.shape[1] // fn, fn), axis=(1, 3))
    return small, " " + tr("(shown block-averaged {fd}×{fn})", fd=fd, fn=fn)


def heatmaps_figure(m, approx, residual, k: int, lang: str = "en") -> go.Figure:
    """M, M_k and M − M_k side by side on one shared, symmetric colour scale."""
    tr = translator(lang)
    mats = [np.asarray(x, dtype=float) for x in (m, approx, residual)]
    shown = [_display(x, tr) for x in mats]
    vmax = max(float(np.nanmax(np.abs(x))) for x, _ in shown) or 1.0
    titles = [f"M{shown[0][1]}", f"M_k (k={k}){shown[1][1]}", f"M − M_k{shown[2][1]}"]
    fig = make_subplots(rows=1, cols=3, subplot_titles=titles, horizontal_spacing=0.06)
    for i, (x, _) in enumerate(shown):
        fig.add_trace(
            go.Heatmap(z=x, zmin=-vmax, zmax=vmax, colorscale="RdBu_r", showscale=i == 2, hovertemplate=_hover(tr)),
            row=1,
            col=i + 1,
        )
        fig.update_yaxes(autorange="reversed", title_text=tr("row") if i == 0 else None, row=1, col=i + 1)
        fig.update_xaxes(title_text=tr("column"), row=1, col=i + 1)
    fig.update_layout(height=330, margin=dict(l=40, r=20, t=50, b=40))
    return fig


def product_figure(b, a, dw, w0=None, lang: str = "en") -> go.Figure:
    """W0 + B·A as heatmaps: B (d×r), A (r×n), ΔW = B·A, and W0 + ΔW when W0 is given."""
    tr = translator(lang)
    mats = [("B (d×r)", b), ("A (r×n)", a), ("ΔW = B·A", dw)] + (
        [("W0 + ΔW", np.asarray(w0) + np.asarray(dw))] if w0 is not None else []
    )
    fig = make_subplots(rows=1, cols=len(mats), subplot_titles=[t for t, _ in mats], horizontal_spacing=0.07)
    vmax = max(float(np.max(np.abs(np.asarray(x, dtype=float)))) for _, x in mats) or 1.0
    for i, (_, x) in enumerate(mats):
        fig.add_trace(
            go.Heatmap(
                z=np.asarray(x, dtype=float),
                zmin=-vmax,
                zmax=vmax,
                colorscale="RdBu_r",
                showscale=i == len(mats) - 1,
                texttemplate="%{z:.2f}",
                hovertemplate=_hover(tr),
            ),
            row=1,
            col=i + 1,
        )
        fig.update_yaxes(autorange="reversed", title_text=tr("row") if i == 0 else None, row=1, col=i + 1)
        fig.update_xaxes(title_text=tr("column"), row=1, col=i + 1)
    fig.update_layout(height=320, margin=dict(l=40, r=20, t=50, b=40))
    return fig


MEASURES = {
    "effective_rank": msg("effective rank (entropy)"),
    "stable_rank": msg("stable rank ‖ΔW‖²_F/σ₁²"),
    "fro_norm": "‖ΔW‖_F",
    "rank_90": msg("rank for 90% energy"),
    "rank_99": msg("rank for 99% energy"),
    "rel_to_base": "‖ΔW‖_F / ‖W0‖_F",
}
# Measures of a parent/child comparison (lowrank/compare.py), drawn with the same heatmap.
LABELS = {
    **MEASURES,
    "rel_change": "‖ΔW_child − ΔW_parent‖ / ‖ΔW_parent‖",
    "cosine": "cos(ΔW_parent, ΔW_child)",
    "subspace_overlap": msg("top-k subspace overlap"),
}


def adapter_heatmap(analysis: dict, measure: str = "effective_rank", lang: str = "en") -> go.Figure:
    """Layer × module heatmap of one measure over every LoRA module of an adapter."""
    tr = translator(lang)
    label = render(LABELS.get(measure, measure), lang)
    mods = analysis["modules"]
    layers = sorted({m["layer"] for m in mods if m["layer"] is not None})
    kinds = list(dict.fromkeys(m["module"] for m in mods))
    z = np.full((len(layers), len(kinds)), np.nan)
    for m in mods:
        if m["layer"] is not None and m.get(measure) is not None:
            z[layers.index(m["layer"]), kinds.index(m["module"])] = m[measure]
    hover = tr("layer {layer} · {module}: {value}", layer="%{y}", module="%{x}", value="%{z:.4g}") + "<extra></extra>"
    fig = go.Figure(
        go.Heatmap(z=z, x=kinds, y=layers, colorscale="Viridis", colorbar=dict(title=label), hovertemplate=hover)
    )
    fig.update_layout(
        title=tr("{measure} per layer and module", measure=label),
        height=max(300, 22 * len(layers) + 120),
        margin=dict(l=60, r=20, t=50, b=40),
    )
    fig.update_xaxes(title_text=tr("module"))
    fig.update_yaxes(title_text=tr("layer"), autorange="reversed")
    return fig


# --- reports ---
def svd_markdown(res: dict, lang: str = "en") -> str:
    """Error, Eckart-Young check, parameter counts and factor check for one rank-k approximation."""
    tr = translator(lang)
    d, n = res["shape"]
    k = res["rank"]
    return "\n".join(
        [
            tr(
                "**M is {d}×{n}; rank-k approximation with k = {k}** keeps {e:.2%} of the energy Σσ².",
                d=d,
                n=n,
                k=k,
                e=res["energy"][k - 1],
            ),
            tr(
                "- Frobenius error ‖M − M_k‖_F = **{err:.4g}**, relative error **{rel:.2%}**",
                err=res["error_fro"],
                rel=res["relative_error"],
            ),
            tr(
                "- Eckart–Young: error² = {sq:.6g} = Σ_(i>k) σᵢ² = {tail:.6g} (difference {diff:.1e}): no rank-{k} "
                "matrix does better.",
                sq=res["error_sq"],
                tail=res["tail_energy"],
                diff=abs(res["error_sq"] - res["tail_energy"]),
                k=k,
            ),
            tr("- 90% of the energy needs k = {r90}, 99% needs k = {r99}.", r90=res["rank_90"], r99=res["rank_99"]),
            tr(
                "- Parameters: full d·n = {d}·{n} = **{full:,}**, factors k(d+n) = {k}·({d}+{n}) = **{low:,}** → "
                "compression **{ratio:.2f}×**. Low rank saves only while k < d·n/(d+n) = {even:.2f}.",
                d=d,
                n=n,
                k=k,
                full=res["params_full"],
                low=res["params_lowrank"],
                ratio=res["compression"],
                even=res["break_even_rank"],
            ),
            tr(
                "- Factors B = U_k ({d}×{k}) and A = Σ_k V_kᵀ ({k}×{n}); max |B·A − M_k| = {check:.1e}.",
                d=d,
                n=n,
                k=k,
                check=res["factor_check"],
            ),
        ]
    )


def product_markdown(res: dict, lang: str = "en") -> str:
    """Row-by-row reading of ΔW = B·A and the parameter counts (with the break-even rank)."""
    tr = translator(lang)
    d, n = res["shape"]  # rows × columns
    r = res["r"]
    full, low = res["params_full"], res["params_lowrank"]
    saving = msg("this saves {n:,} parameters", n=full - low) if low < full else msg("this saves nothing")
    lines = [
        tr(
            "**ΔW = B·A is {d}×{n} with rank ≤ r = {r}.** Each row of ΔW is a weighted sum of A's rows "
            "(the adjustment directions); B's row i gives the weights:",
            d=d,
            n=n,
            r=r,
        ),
        "",
        *[f"- {render(x, lang)}" for x in res["row_expressions"][:16]],
        *(["- …"] if len(res["row_expressions"]) > 16 else []),
        "",
        tr(
            "**Parameters:** full ΔW d·n = {d}·{n} = {full:,}; factors r(d+n) = {r}·({d}+{n}) = {low:,}: {saving}. "
            "LoRA pays off only while r < d·n/(d+n) = {even:.2f}. At Qwen3-1.7B's 2048×2048 q_proj, r = 16 costs "
            "65,536 parameters against 4,194,304.",
            d=d,
            n=n,
            r=r,
            full=full,
            low=low,
            saving=saving,
            even=res["break_even_rank"],
        ),
    ]
    return "\n".join(lines)


def adapter_markdown(analysis: dict, lang: str = "en") -> str:
    """Summary of an adapter analysis: how low-rank the trained updates really are."""
    tr = translator(lang)
    mods = analysis["modules"]
    if not mods:
        return tr("No LoRA modules found.")
    eff = sorted(m["effective_rank"] for m in mods)
    r90 = sorted(m["rank_90"] for m in mods)
    med = len(mods) // 2
    rel = [m["rel_to_base"] for m in mods if m.get("rel_to_base") is not None]
    lines = [
        tr(
            "**{count} LoRA modules**, base `{base}`, r = {r}, α = {alpha}{rs}.",
            count=len(mods),
            base=analysis["base_model"],
            r=analysis["r"],
            alpha=analysis["lora_alpha"],
            rs=" (rsLoRA)" if analysis["use_rslora"] else "",
        ),
        tr(
            "- Effective rank (exp of the entropy of σ/Σσ): median {med:.2f}, range {lo:.2f}–{hi:.2f} of r = {r}.",
            med=eff[med],
            lo=eff[0],
            hi=eff[-1],
            r=analysis["r"],
        ),
        tr(
            "- Rank holding 90% of Σσ²: median {med}, max {top}. Stable rank = ‖ΔW‖²_F / σ₁².",
            med=r90[med],
            top=r90[-1],
        ),
    ]
    if rel:
        lines.append(
            tr("- ‖ΔW‖_F / ‖W0‖_F: median {med:.2e}, max {top:.2e}.", med=sorted(rel)[len(rel) // 2], top=max(rel))
        )
    else:
        lines.append(tr("- ‖ΔW‖/‖W0‖: the base weights are not on this machine (hub model not downloaded)."))
    return "\n".join(lines)


def compare_markdown(res: dict, lang: str = "en") -> str:
    """The comparison's medians in a few lines of Markdown."""
    tr = translator(lang)
    mods = res["modules"]

    def med(key):
        vals = sorted(m[key] for m in mods if m[key] is not None)
        return vals[len(vals) // 2] if vals else float("nan")

    grew = sum(1 for m in mods if m["child_norm"] > m["parent_norm"])
    return "\n".join(
        [
            tr(
                "**Parent** `{parent}` → **child** `{child}`: {count} shared modules.",
                parent=Path(res["parent"]).name,
                child=Path(res["child"]).name,
                count=len(mods),
            ),
            tr(
                "- ‖ΔW_child − ΔW_parent‖ / ‖ΔW_parent‖: median **{rel:.3f}** (how much the continued training moved the "
                "update).",
                rel=med("rel_change"),
            ),
            tr(
                "- cosine(ΔW_parent, ΔW_child): median **{cos:.3f}**; top-{k} subspace overlap ‖U_pᵀU_c‖²/k: median "
                "**{overlap:.3f}** (1: the same directions).",
                cos=med("cosine"),
                k=res["top_k"],
                overlap=med("subspace_overlap"),
            ),
            tr(
                "- ‖ΔW‖ grew in {grew} of {count} modules (median {before:.4g} → {after:.4g}).",
                grew=grew,
                count=len(mods),
                before=med("parent_norm"),
                after=med("child_norm"),
            ),
        ]
    )


# --- tables ---
MODULE_COLUMNS = [
    msg("module"),
    "r",
    "‖ΔW‖_F",
    msg("eff. rank"),
    msg("stable rank"),
    msg("rank 90%"),
    msg("rank 99%"),
    "‖ΔW‖/‖W0‖",
]


def modules_frame(res: dict, lang: str = "en") -> pd.DataFrame:
    """One row per LoRA module of an adapter analysis: its rank, norm and how low-rank its ΔW is."""
    rows = [
        [
            m["name"],
            m["r"],
            round(m["fro_norm"], 5),
            round(m["effective_rank"], 3),
            round(m["stable_rank"], 3),
            m["rank_90"],
            m["rank_99"],
            None if m["rel_to_base"] is None else float(f"{m['rel_to_base']:.3e}"),
        ]
        for m in res["modules"]
    ]
    return pd.DataFrame(rows, columns=[render(c, lang) for c in MODULE_COLUMNS])


def _r(x):
    return None if x is None else round(x, 4)


def compare_frame(res: dict, lang: str = "en") -> pd.DataFrame:
    """One row per shared module of a parent/child comparison."""
    tr = translator(lang)
    rows = [
        [
            m["name"],
            round(m["parent_norm"], 5),
            round(m["child_norm"], 5),
            _r(m["rel_change"]),
            _r(m["cosine"]),
            _r(m["subspace_overlap"]),
        ]
        for m in res["modules"]
    ]
    return pd.DataFrame(
        rows,
        columns=[
            tr("module"),
            "‖ΔW_parent‖",
            "‖ΔW_child‖",
            tr("relative change"),
            tr("cosine"),
            tr("top-{k} overlap", k=res["top_k"]),
        ],
    )
