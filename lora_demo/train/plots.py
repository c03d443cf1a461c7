"""Live training figures and the progress summary the Train tab shows."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots


def loss_figure(progress: list[dict], title: str = "Training loss") -> go.Figure:
    """Loss (and validation loss) per optimizer step, with the learning rate on a second axis."""
    logs = [p for p in progress if p.get("type") == "log" and "loss" in p]
    evals = [p for p in progress if p.get("type") == "eval"]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Scatter(x=[p["step"] for p in logs], y=[p["loss"] for p in logs], name="train loss",
                             mode="lines+markers", line=dict(color="#4f46e5")), secondary_y=False)  # fmt: skip
    if evals:
        fig.add_trace(go.Scatter(x=[p["step"] for p in evals], y=[p["eval_loss"] for p in evals], name="validation loss",
                                 mode="lines+markers", line=dict(color="#16a34a")), secondary_y=False)  # fmt: skip
    fig.add_trace(go.Scatter(x=[p["step"] for p in logs], y=[p.get("lr") for p in logs], name="learning rate",
                             mode="lines", line=dict(color="#f97316", dash="dot")), secondary_y=True)  # fmt: skip
    fig.update_layout(
        title=title, height=340, margin=dict(l=50, r=60, t=50, b=40), legend=dict(orientation="h", y=-0.25)
    )
    fig.update_xaxes(title_text="optimizer step")
    fig.update_yaxes(title_text="loss", secondary_y=False)
    fig.update_yaxes(title_text="learning rate", secondary_y=True, exponentformat="e")
    return fig


def progress_html(status: dict, progress: list[dict]) -> str:
    """A progress bar with stage, step/total, loss, speed and ETA."""
    step, total = status.get("step") or 0, status.get("total_steps") or 0
    stage = status.get("status", "—")
    logs = [p for p in progress if p.get("type") == "log"]
    last = logs[-1] if logs else {}
    pct = int(100 * step / total) if total else 0
    bits = [f"<b>{stage}</b>", f"step {step}/{total or '?'}"]
    if "epoch" in last:
        bits.append(f"epoch {last['epoch']:.2f}")
    if "loss" in last:
        bits.append(f"loss {last['loss']:.4f}")
    if "tokens_per_s" in last:
        bits.append(f"{last['tokens_per_s']:.0f} tok/s")
    if "s_per_step" in last:
        bits.append(f"{last['s_per_step']:.2f} s/step")
    if "eta_s" in last and stage in ("training", "compiling"):
        bits.append(f"ETA {last['eta_s']:.0f} s")
    if "gpu_peak_gb" in last:
        bits.append(f"GPU peak {last['gpu_peak_gb']:.2f} GiB")
    if stage == "compiling":
        bits.append("(the first step compiles kernels: this can take ~40 s)")
    if stage == "loading":
        bits.append("(loading the model)")
    color = {"failed": "#dc2626", "stopped": "#f59e0b", "completed": "#16a34a"}.get(stage, "#4f46e5")
    return (f'<div id="train-progress" data-stage="{stage}" data-step="{step}" data-total="{total}">'
            f'<div style="background:#e5e7eb;border-radius:6px;height:18px;width:100%">'
            f'<div style="background:{color};height:18px;border-radius:6px;width:{pct}%"></div></div>'
            f'<div style="margin-top:4px">{" · ".join(bits)}</div></div>')  # fmt: skip
