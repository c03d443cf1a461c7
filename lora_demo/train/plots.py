"""Live training figures and the progress summary the Train tab shows."""

from __future__ import annotations

import html
from pathlib import Path

import plotly.graph_objects as go


def loss_figure(progress: list[dict], title: str = "Training loss") -> go.Figure:
    """Loss (and validation loss) per optimizer step, with the learning rate on a second axis.

    Redrawn while a run trains, so it is kept cheap: one plain Figure with an overlaid right axis (no
    make_subplots grid) and the light "simple_white" template."""
    logs = [p for p in progress if p.get("type") == "log" and "loss" in p]
    evals = [p for p in progress if p.get("type") == "eval"]
    steps = [p["step"] for p in logs]
    traces = [go.Scatter(x=steps, y=[p["loss"] for p in logs], name="train loss", mode="lines+markers",
                         line=dict(color="#4f46e5"))]  # fmt: skip
    if evals:
        traces.append(go.Scatter(x=[p["step"] for p in evals], y=[p["eval_loss"] for p in evals],
                                 name="validation loss", mode="lines+markers", line=dict(color="#16a34a")))  # fmt: skip
    traces.append(go.Scatter(x=steps, y=[p.get("lr") for p in logs], name="learning rate", mode="lines", yaxis="y2",
                             line=dict(color="#f97316", dash="dot")))  # fmt: skip
    loss_at = {p["step"]: p["loss"] for p in logs}
    saved = [p["step"] for p in progress if p.get("type") == "checkpoint" and p.get("step") in loss_at]
    if saved:  # where the checkpoints are: what Resume continues from, what Chat and the probes show
        traces.append(go.Scatter(x=saved, y=[loss_at[k] for k in saved], name="checkpoint", mode="markers",
                                 marker=dict(symbol="diamond", size=10, color="#0f766e")))  # fmt: skip
    shapes, notes = [], []
    for p in progress:
        if p.get("stage") == "resumed":  # the curve goes on; this marks where the run was resumed
            shapes.append(dict(type="line", xref="x", yref="paper", x0=p["step"], x1=p["step"], y0=0, y1=1,
                               line=dict(color="#6b7280", dash="dash")))  # fmt: skip
            notes.append(
                dict(x=p["step"], y=1, xref="x", yref="paper", text="resumed", showarrow=False, yanchor="bottom")
            )
    return go.Figure(traces, layout=dict(shapes=shapes, annotations=notes,
        title=title, height=340, margin=dict(l=50, r=60, t=50, b=40), legend=dict(orientation="h", y=-0.25),
        template="simple_white", xaxis=dict(title="optimizer step"), yaxis=dict(title="loss"),
        yaxis2=dict(title="learning rate", overlaying="y", side="right", exponentformat="e"),
    ))  # fmt: skip


def progress_html(status: dict, progress: list[dict], run_dir: str | Path | None = None) -> str:
    """A progress bar with stage, step/total, loss, speed and ETA; then where the adapter is, or why it failed."""
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
    name = html.escape(Path(run_dir).name) if run_dir else ""
    after = ""
    if stage == "failed" and status.get("error"):  # the error can quote user input or a library's text: escape
        after = f'<div style="color:#dc2626;margin-top:4px"><b>Failed:</b> {html.escape(str(status["error"]))}</div>'
    elif stage in ("completed", "stopped") and run_dir:
        from lora_demo.train.runner import equivalent_command

        after = (f"<div style='margin-top:4px'>Adapter saved in <code>{html.escape(str(run_dir))}</code>. Repeat: "
                 f"<code>{html.escape(equivalent_command(run_dir))}</code></div>")  # fmt: skip
    return (f'<div id="train-progress" data-run="{name}" data-stage="{html.escape(str(stage))}" data-step="{step}" '
            f'data-total="{total}">'
            f'<div style="background:#e5e7eb;border-radius:6px;height:18px;width:100%">'
            f'<div style="background:{color};height:18px;border-radius:6px;width:{pct}%"></div></div>'
            f'<div style="margin-top:4px">{" · ".join(bits)}</div></div>{after}')  # fmt: skip
