"""Plotly figures for the Dataset tab."""

from __future__ import annotations

import plotly.graph_objects as go

from lora_demo.i18n import translator


def length_histogram(lengths: list[int], max_seq_length: int | None = None, lang: str = "en") -> go.Figure:
    """Histogram of tokens per example, with the max sequence length marked (titles in `lang`)."""
    tr = translator(lang)
    fig = go.Figure(go.Histogram(x=lengths, nbinsx=min(40, max(5, len(lengths))), marker_color="#4f46e5"))
    if max_seq_length:
        fig.add_vline(
            x=max_seq_length,
            line_dash="dash",
            line_color="#dc2626",
            annotation_text=tr("max length {n}", n=max_seq_length),
        )
    fig.update_layout(
        title=tr("Tokens per example (prompt + response)"), height=300, margin=dict(l=50, r=20, t=50, b=40)
    )
    fig.update_xaxes(title_text=tr("tokens"))
    fig.update_yaxes(title_text=tr("examples"))
    return fig
