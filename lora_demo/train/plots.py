"""Live training figures and the progress summary the Train tab shows."""

from __future__ import annotations

import html
from pathlib import Path

import plotly.graph_objects as go

from lora_demo.i18n import render, translator

# The stages of a run (status.json's "status", a code), as the progress box names them.
STAGES = ("starting", "loading", "compiling", "training", "saving", "completed", "stopped", "failed")


def loss_figure(progress: list[dict], title: str | None = None, lang: str = "en") -> go.Figure:
    """Loss (and validation loss) per optimizer step, with the learning rate on a second axis (texts in `lang`;
    the title defaults to "Training loss").

    Redrawn while a run trains, so it is kept cheap: one plain Figure with an overlaid right axis (no
    make_subplots grid) and the light "simple_white" template."""
    tr = translator(lang)
    title = tr("Training loss") if title is None else render(title, lang)
    logs = [p for p in progress if p.get("type") == "log" and "loss" in p]
    evals = [p for p in progress if p.get("type") == "eval"]
    steps = [p["step"] for p in logs]
    traces = [
        go.Scatter(
            x=steps,
            y=[p["loss"] for p in logs],
            name=tr("train loss"),
            mode="lines+markers",
            line=dict(color="#4f46e5"),
        )
    ]
    if evals:
        traces.append(
            go.Scatter(
                x=[p["step"] for p in evals],
                y=[p["eval_loss"] for p in evals],
                name=tr("validation loss"),
                mode="lines+markers",
                line=dict(color="#16a34a"),
            )
        )
    prefs = [p for p in logs if "reward_margin" in p]  # a DPO run: its reward curves take the right axis
    if prefs:
        at = [p["step"] for p in prefs]
        traces += [
            go.Scatter(
                x=at,
                y=[p["reward_margin"] for p in prefs],
                name=tr("reward margin (chosen − rejected)"),
                mode="lines+markers",
                yaxis="y2",
                line=dict(color="#db2777"),
            ),
            go.Scatter(
                x=at,
                y=[p.get("reward_accuracy") for p in prefs],
                name=tr("reward accuracy"),
                mode="lines",
                yaxis="y2",
                line=dict(color="#f97316", dash="dot"),
            ),
        ]
        right = tr("reward margin · accuracy")
    elif any("reward" in p for p in logs):  # a GRPO run: the mean reward and each reward's mean, all from 0 to 1
        scored = [p for p in logs if "reward" in p]
        at = [p["step"] for p in scored]
        traces.append(
            go.Scatter(
                x=at,
                y=[p["reward"] for p in scored],
                name=tr("mean reward"),
                mode="lines+markers",
                yaxis="y2",
                line=dict(color="#db2777"),
            )
        )
        names = sorted(
            {k[len("reward_") :] for p in scored for k in p if k.startswith("reward_") and k != "reward_std"}
        )
        for name in names:  # each preset reward's own mean (reward_format, reward_length, ...)
            traces.append(
                go.Scatter(
                    x=at,
                    y=[p.get("reward_" + name) for p in scored],
                    name=f"{tr('reward')}: {name}",
                    mode="lines",
                    yaxis="y2",
                    line=dict(dash="dot"),
                )
            )
        right = tr("reward (0–1)")
    else:
        traces.append(
            go.Scatter(
                x=steps,
                y=[p.get("lr") for p in logs],
                name=tr("learning rate"),
                mode="lines",
                yaxis="y2",
                line=dict(color="#f97316", dash="dot"),
            )
        )
        right = tr("learning rate")
    loss_at = {p["step"]: p["loss"] for p in logs}
    saved = [p["step"] for p in progress if p.get("type") == "checkpoint" and p.get("step") in loss_at]
    if saved:  # where the checkpoints are: what Resume continues from, what Chat and the probes show
        traces.append(
            go.Scatter(
                x=saved,
                y=[loss_at[k] for k in saved],
                name=tr("checkpoint"),
                mode="markers",
                marker=dict(symbol="diamond", size=10, color="#0f766e"),
            )
        )
    shapes, notes = [], []
    for p in progress:
        if p.get("stage") == "resumed":  # the curve goes on; this marks where the run was resumed
            shapes.append(
                dict(
                    type="line",
                    xref="x",
                    yref="paper",
                    x0=p["step"],
                    x1=p["step"],
                    y0=0,
                    y1=1,
                    line=dict(color="#6b7280", dash="dash"),
                )
            )
            notes.append(
                dict(x=p["step"], y=1, xref="x", yref="paper", text=tr("resumed"), showarrow=False, yanchor="bottom")
            )
    if not logs:  # nothing logged yet (loading, first steps): say so instead of blank axes from -1 to 6
        return empty_loss_figure(title, lang)
    return go.Figure(
        traces,
        layout=dict(
            shapes=shapes,
            annotations=notes,
            title=title,
            height=340,
            margin=dict(l=50, r=60, t=50, b=40),
            legend=dict(orientation="h", y=-0.25),
            template="simple_white",
            xaxis=dict(title=tr("optimizer step")),
            yaxis=dict(title=tr("loss")),
            yaxis2=dict(title=right, overlaying="y", side="right", exponentformat="none" if prefs else "e"),
        ),
    )


def empty_loss_figure(title=None, lang: str = "en") -> go.Figure:
    """The loss chart before the first logged step: one line saying when the curve appears, no axes."""
    tr = translator(lang)
    title = tr("Training loss") if title is None else render(title, lang)
    note = dict(
        text=tr("The loss curve appears after the first logged step."),
        x=0.5,
        y=0.5,
        xref="paper",
        yref="paper",
        showarrow=False,
        font=dict(size=15, color="#6b7280"),
    )
    hidden = dict(visible=False)
    return go.Figure(
        layout=dict(
            title=title,
            height=340,
            margin=dict(l=50, r=60, t=50, b=40),
            template="simple_white",
            annotations=[note],
            xaxis=hidden,
            yaxis=hidden,
        )
    )


def stage_label(stage, lang: str = "en") -> str:
    """A stage code (status.json's "status") in `lang`: 'training' → '训练中'; anything else as it is."""
    tr = translator(lang)
    labels = {
        "starting": tr("starting"),
        "loading": tr("loading"),
        "compiling": tr("compiling"),
        "training": tr("training"),
        "saving": tr("saving"),
        "completed": tr("completed"),
        "stopped": tr("stopped"),
        "failed": tr("failed"),
        "unknown": tr("unknown"),
    }
    return labels.get(stage, str(stage))


def run_summary(progress: list[dict]) -> dict | None:
    """The last training's average (the worker's "summary" record), unless a resume started after it."""
    summary = None
    for p in progress:
        if p.get("type") == "summary":
            summary = p
        elif p.get("stage") == "resumed":
            summary = None
    return summary


def progress_html(status: dict, progress: list[dict], run_dir: str | Path | None = None, lang: str = "en") -> str:
    """A progress bar with stage, step/total, loss, speed and ETA; then where the adapter is, or why it failed (the
    texts in `lang`; the data-* attributes keep the codes)."""
    from lora_demo.train.runs import error_of, has_adapter

    tr = translator(lang)
    step, total = status.get("step") or 0, status.get("total_steps") or 0
    stage = status.get("status", "—")
    logs = [p for p in progress if p.get("type") == "log"]
    last = logs[-1] if logs else {}
    summary = run_summary(progress)
    pct = int(100 * step / total) if total else 0
    bits = [f"<b>{html.escape(stage_label(stage, lang))}</b>", tr("step {step}/{total}", step=step, total=total or "?")]
    if "epoch" in last:
        bits.append(tr("epoch {epoch:.2f}", epoch=last["epoch"]))
    if "loss" in last:
        bits.append(tr("loss {loss:.4f}", loss=last["loss"]))
    if stage in ("training", "compiling"):  # live: the speed of the recent steps
        if last.get("tokens_per_s"):
            bits.append(f"{last['tokens_per_s']:.0f} tok/s")
        if "s_per_step" in last:
            bits.append(f"{last['s_per_step']:.2f} s/step")
        if "eta_s" in last:
            bits.append(f"ETA {last['eta_s']:.0f} s")
    elif summary:  # ended (or saving): the run's real average, not its last step's
        if summary.get("tokens_per_s"):
            bits.append(tr("{rate:.0f} tok/s on average", rate=summary["tokens_per_s"]))
        bits.append(tr("{seconds:.2f} s/step on average", seconds=summary["s_per_step"]))
    if "gpu_peak_gb" in last:
        bits.append(tr("GPU peak {gib:.2f} GiB", gib=last["gpu_peak_gb"]))
    if stage == "compiling":
        bits.append(tr("(the first step compiles kernels: this can take ~40 s)"))
    if stage == "loading":
        bits.append(tr("(loading the model)"))
    color = {"failed": "#dc2626", "stopped": "#f59e0b", "completed": "#16a34a"}.get(stage, "#4f46e5")
    name = html.escape(Path(run_dir).name) if run_dir else ""
    after = ""
    error = error_of(status)
    if stage == "failed" and error:  # the error can quote user input or a library's text: escape
        text = tr("<b>Failed:</b> {error}", error=html.escape(str(render(error, lang))))
        after = f'<div style="color:#dc2626;margin-top:4px">{text}</div>'
    elif stage in ("completed", "stopped") and run_dir and status.get("node_rank"):  # another machine's part
        text = tr(
            "Node {rank}'s part of a run over {nodes} machines: node 0's run folder holds the curve, the "
            "checkpoints and the adapter.",
            rank=status["node_rank"],
            nodes=status.get("num_nodes") or "?",
        )
        after = f"<div style='margin-top:4px'>{text}</div>"
    elif stage in ("completed", "stopped") and run_dir and not has_adapter(run_dir):  # e.g. stopped while loading
        why = html.escape(str(render(error, lang))) if error else ""
        text = tr("<b>No adapter was saved</b> in <code>{path}</code>. {why}", path=html.escape(str(run_dir)), why=why)
        after = f"<div style='margin-top:4px'>{text}</div>"
    elif stage in ("completed", "stopped") and run_dir:
        from lora_demo.train.runner import equivalent_command

        after = (
            "<div style='margin-top:4px'>"
            + tr(
                "Adapter saved in <code>{path}</code>. Repeat: <code>{command}</code>",
                path=html.escape(str(run_dir)),
                command=html.escape(equivalent_command(run_dir)),
            )
            + "</div>"
        )
    return (
        f'<div id="train-progress" data-run="{name}" data-stage="{html.escape(str(stage))}" data-step="{step}" '
        f'data-total="{total}">'
        f'<div style="background:#e5e7eb;border-radius:6px;height:18px;width:100%">'
        f'<div style="background:{color};height:18px;border-radius:6px;width:{pct}%"></div></div>'
        f'<div style="margin-top:4px">{" · ".join(bits)}</div></div>{after}'
    )


# One colour per compared run (train loss solid, validation loss dashed in the same colour).
RUN_COLORS = (
    "#4f46e5",
    "#dc2626",
    "#16a34a",
    "#f59e0b",
    "#0891b2",
    "#9333ea",
    "#db2777",
    "#65a30d",
    "#0f766e",
    "#ea580c",
    "#2563eb",
    "#6b7280",
)


def compare_figure(result: dict | None, lang: str = "en") -> go.Figure:
    """The loss curves of several runs on one plot (compare.compare_runs' result): each run's training loss as a line,
    its validation loss dashed in the same colour. None or no runs: the empty state, saying what to pick."""
    tr = translator(lang)
    title = tr("Loss curves of the compared runs")
    runs = (result or {}).get("curves") or {}
    if not runs:
        return _note_figure(title, tr("Pick two or more runs above to overlay their loss curves."))
    traces = []
    for i, (name, c) in enumerate(runs.items()):
        color = RUN_COLORS[i % len(RUN_COLORS)]
        traces.append(
            go.Scatter(
                x=[s for s, _ in c["train"]],
                y=[v for _, v in c["train"]],
                mode="lines",
                name=tr("{run} · train loss", run=name),
                legendgroup=name,
                line=dict(color=color),
            )
        )
        if c["eval"]:
            traces.append(
                go.Scatter(
                    x=[s for s, _ in c["eval"]],
                    y=[v for _, v in c["eval"]],
                    mode="lines+markers",
                    name=tr("{run} · validation loss", run=name),
                    legendgroup=name,
                    line=dict(color=color, dash="dash"),
                )
            )
    if not any(c["train"] or c["eval"] for c in runs.values()):
        return _note_figure(title, tr("None of these runs has logged a loss yet."))
    return go.Figure(
        traces,
        layout=dict(
            title=title,
            height=380,
            margin=dict(l=50, r=30, t=50, b=40),
            legend=dict(orientation="h", y=-0.2),
            template="simple_white",
            xaxis=dict(title=tr("optimizer step")),
            yaxis=dict(title=tr("loss")),
        ),
    )


def _note_figure(title: str, note: str) -> go.Figure:
    """A chart with no data: one line saying why, no axes."""
    text = dict(
        text=note, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font=dict(size=15, color="#6b7280")
    )
    hidden = dict(visible=False)
    return go.Figure(
        layout=dict(
            title=title,
            height=380,
            margin=dict(l=50, r=30, t=50, b=40),
            template="simple_white",
            annotations=[text],
            xaxis=hidden,
            yaxis=hidden,
        )
    )
