"""Plotly figures for the Low-rank lab (interactive, labelled axes). Pure functions of the engine's numbers; titles,
axis labels and hover texts in `lang` (English or 简体中文)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lora_demo.i18n import msg, render, translator

MAX_HEATMAP_SIDE = 160  # larger matrices are block-averaged for display so the browser stays responsive


def _hover(tr) -> str:
    return tr("row {row}, column {col}: {value}", row="%{y}", col="%{x}", value="%{z:.3f}") + "<extra></extra>"


def spectrum_figure(singular_values, k: int | None = None, title: str | None = None, lang: str = "en") -> go.Figure:
    """Bars of σᵢ (kept ones highlighted) with the cumulative energy curve and its 90% / 99% points."""
    from lora_demo.lowrank.svd import energy, rank_for_energy

    tr = translator(lang)
    title = render(title, lang) if title is not None else tr("Singular values")

    s = np.asarray(singular_values, dtype=float)
    idx = np.arange(1, len(s) + 1)
    e = energy(s) if len(s) else s
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    colors = ["#4f46e5" if k is None or i <= k else "#c7d2fe" for i in idx]
    fig.add_trace(go.Bar(x=idx, y=s, name="σᵢ", marker_color=colors), secondary_y=False)
    fig.add_trace(
        go.Scatter(
            x=idx, y=e * 100, name=tr("cumulative energy Σσ² %"), mode="lines+markers", line=dict(color="#f97316")
        ),
        secondary_y=True,
    )
    for frac in (0.90, 0.99):
        if len(s):
            r = rank_for_energy(s, frac)
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
