"""The Train tab's views: the live loss chart, the progress box, the probe timeline, the compared runs' chart and
the runs tables, each built from the engine's plain data with its texts in the language given.

progress_html alone asks the engine something: what a run that ended left (LabEngine.run_outcome: whether its
adapter was saved, the command that repeats it), so that the box never says "Adapter saved" where none was.
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from lora_demo.engine import LabEngine
from lora_demo.i18n import Msg, render, translator

# The stages of a run (status.json's "status", a code), as the progress box names them.
STAGES = ("starting", "loading", "compiling", "training", "saving", "completed", "stopped", "failed")
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


# --- the loss chart ---
def loss_figure(progress: list[dict], title: str | None = None, lang: str = "en") -> go.Figure:
    """Loss (and validation loss) per optimizer step, with the learning rate on a second axis (a DPO run: its reward
    margin and accuracy; a GRPO run: its rewards); texts in `lang`, the title defaults to "Training loss".

    Redrawn while a run trains, so it is kept cheap: one plain Figure with an overlaid right axis (no
    make_subplots grid) and the light "simple_white" template."""
    tr = translator(lang)
    title = tr("Training loss") if title is None else render(title, lang)
    logs = [p for p in progress if p.get("type") == "log" and "loss" in p]
    if not logs:  # nothing logged yet (loading, first steps): say so instead of blank axes from -1 to 6
        return empty_loss_figure(title, lang)
    evals = [p for p in progress if p.get("type") == "eval"]
    steps = [p["step"] for p in logs]
    loss = [p["loss"] for p in logs]
    traces = [go.Scatter(x=steps, y=loss, name=tr("train loss"), mode="lines+markers", line=dict(color="#4f46e5"))]
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
    right_traces, right, prefs = _right_axis(logs, tr)
    traces += right_traces + _checkpoint_marks(progress, logs, tr)
    shapes, notes = _resume_marks(progress, tr)
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


def _right_axis(logs: list[dict], tr) -> tuple[list, str, bool]:
    """The right axis' curves and title: a DPO run's reward margin and accuracy, a GRPO run's mean reward and each
    reward's mean (all from 0 to 1), else the learning rate; and whether they are a DPO run's."""
    prefs = [p for p in logs if "reward_margin" in p]
    if prefs:
        at = [p["step"] for p in prefs]
        margin = go.Scatter(
            x=at,
            y=[p["reward_margin"] for p in prefs],
            name=tr("reward margin (chosen − rejected)"),
            mode="lines+markers",
            yaxis="y2",
            line=dict(color="#db2777"),
        )
        accuracy = go.Scatter(
            x=at,
            y=[p.get("reward_accuracy") for p in prefs],
            name=tr("reward accuracy"),
            mode="lines",
            yaxis="y2",
            line=dict(color="#f97316", dash="dot"),
        )
        return [margin, accuracy], tr("reward margin · accuracy"), True
    scored = [p for p in logs if "reward" in p]
    if scored:
        at = [p["step"] for p in scored]
        mean = [p["reward"] for p in scored]
        traces = [
            go.Scatter(
                x=at, y=mean, name=tr("mean reward"), mode="lines+markers", yaxis="y2", line=dict(color="#db2777")
            )
        ]
        names = sorted(
            {k[len("reward_") :] for p in scored for k in p if k.startswith("reward_") and k != "reward_std"}
        )
        for name in names:  # each preset reward's own mean (reward_format, reward_length, ...)
            y = [p.get("reward_" + name) for p in scored]
            label = f"{tr('reward')}: {name}"
            traces.append(go.Scatter(x=at, y=y, name=label, mode="lines", yaxis="y2", line=dict(dash="dot")))
        return traces, tr("reward (0–1)"), False
    lr = go.Scatter(
        x=[p["step"] for p in logs],
        y=[p.get("lr") for p in logs],
        name=tr("learning rate"),
        mode="lines",
        yaxis="y2",
        line=dict(color="#f97316", dash="dot"),
    )
    return [lr], tr("learning rate"), False


def _checkpoint_marks(progress: list[dict], logs: list[dict], tr) -> list:
    """Where the checkpoints are, on the loss curve: what Resume continues from, what Chat and the probes show."""
    loss_at = {p["step"]: p["loss"] for p in logs}
    saved = [p["step"] for p in progress if p.get("type") == "checkpoint" and p.get("step") in loss_at]
    if not saved:
        return []
    marker = dict(symbol="diamond", size=10, color="#0f766e")
    return [go.Scatter(x=saved, y=[loss_at[k] for k in saved], name=tr("checkpoint"), mode="markers", marker=marker)]


def _resume_marks(progress: list[dict], tr) -> tuple[list, list]:
    """A dashed line and a note where the run was resumed (the curve goes on)."""
    shapes, notes = [], []
    for p in progress:
        if p.get("stage") == "resumed":
            x = p["step"]
            dash = dict(color="#6b7280", dash="dash")
            shapes.append(dict(type="line", xref="x", yref="paper", x0=x, x1=x, y0=0, y1=1, line=dash))
            notes.append(dict(x=x, y=1, xref="x", yref="paper", text=tr("resumed"), showarrow=False, yanchor="bottom"))
    return shapes, notes


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


# --- the progress box ---
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
    step, total = status.get("step") or 0, status.get("total_steps") or 0
    stage = status.get("status", "—")
    pct = int(100 * step / total) if total else 0
    color = {"failed": "#dc2626", "stopped": "#f59e0b", "completed": "#16a34a"}.get(stage, "#4f46e5")
    name = html.escape(Path(run_dir).name) if run_dir else ""
    bits = _progress_bits(status, progress, lang)
    return (
        f'<div id="train-progress" data-run="{name}" data-stage="{html.escape(str(stage))}" data-step="{step}" '
        f'data-total="{total}">'
        f'<div style="background:#e5e7eb;border-radius:6px;height:18px;width:100%">'
        f'<div style="background:{color};height:18px;border-radius:6px;width:{pct}%"></div></div>'
        f'<div style="margin-top:4px">{" · ".join(bits)}</div></div>{_outcome_html(status, run_dir, lang)}'
    )


def _progress_bits(status: dict, progress: list[dict], lang: str) -> list[str]:
    """The line under the bar: stage, step/total, epoch, loss, then the speed (live: the recent steps'; ended: the
    run's average), the GPU's peak memory and what a slow stage is doing."""
    tr = translator(lang)
    step, total = status.get("step") or 0, status.get("total_steps") or 0
    stage = status.get("status", "—")
    logs = [p for p in progress if p.get("type") == "log"]
    last = logs[-1] if logs else {}
    summary = run_summary(progress)
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
    return bits


def _outcome_html(status: dict, run_dir, lang: str) -> str:
    """Under the bar: why the run failed, or (ended) where its adapter is and the command that repeats it, that no
    adapter was saved, or that another machine's part of a run keeps nothing here."""
    tr = translator(lang)
    stage = status.get("status", "—")
    outcome = LabEngine.run_outcome(run_dir, status)
    error = outcome["error"]
    if stage == "failed" and error:  # the error can quote user input or a library's text: escape
        text = tr("<b>Failed:</b> {error}", error=html.escape(str(render(error, lang))))
        return f'<div style="color:#dc2626;margin-top:4px">{text}</div>'
    if stage not in ("completed", "stopped") or not run_dir:
        return ""
    if status.get("node_rank"):  # another machine's part
        text = tr(
            "Node {rank}'s part of a run over {nodes} machines: node 0's run folder holds the curve, the "
            "checkpoints and the adapter.",
            rank=status["node_rank"],
            nodes=status.get("num_nodes") or "?",
        )
    elif not outcome["adapter"]:  # e.g. stopped while loading
        why = html.escape(str(render(error, lang))) if error else ""
        text = tr("<b>No adapter was saved</b> in <code>{path}</code>. {why}", path=html.escape(str(run_dir)), why=why)
    else:
        text = tr(
            "Adapter saved in <code>{path}</code>. Repeat: <code>{command}</code>",
            path=html.escape(str(run_dir)),
            command=html.escape(outcome["command"]),
        )
    return f"<div style='margin-top:4px'>{text}</div>"


# --- the probe timeline ---
def timeline_html(points: list[dict], lang: str = "en") -> str:
    """A narrow column beside the curve: the probe prompts (P1, P2, ...), then per point (step 0 → checkpoints →
    final) each prompt's answer, so the eye follows one answer changing down the column (texts in `lang`)."""
    tr = translator(lang)
    if not points:
        return (
            f"<div id='probe-timeline' data-points='0'><i>"
            f"{tr('Probe answers appear here: at step 0, at every checkpoint and at the end.')}</i></div>"
        )
    prompts = next((p.get("prompts") for p in reversed(points) if p.get("answers")), None) or []
    many = len(prompts) > 1
    head = "".join(f"<div><b>P{i + 1}</b> {html.escape(_prompt_label(p))}</div>" for i, p in enumerate(prompts))
    body = []
    for p in points:
        kind = p.get("kind")
        label = (
            tr("step 0")
            if kind == "start"
            else tr("final (step {step})", step=p["step"])
            if kind == "final"
            else tr("step {step}", step=p["step"])
        )
        if p.get("error"):
            body.append(f"<div class='probe-error' style='color:#dc2626'>{html.escape(_probe_error(p, lang))}</div>")
            continue
        empty = tr("(empty)")
        answers = "".join(
            f"<div>{f'<b>P{i + 1}</b> ' if many else ''}{html.escape(a) or f'<i>{empty}</i>'}</div>"
            for i, a in enumerate(p["answers"])
        )
        body.append(
            f"<div class='probe-point' data-step='{p['step']}' style='border-left:3px solid #0f766e;"
            f"padding-left:8px;margin:8px 0'><b>{label}</b>{answers}</div>"
        )
    cost = sum(p.get("seconds", 0) for p in points)
    summary = tr("{n} point(s), {seconds:.1f} s of generation in all.", n=len(points), seconds=cost)
    return (
        f"<div id='probe-timeline' data-points='{len(points)}'><div style='color:#6b7280'>{head}</div>"
        f"{''.join(body)}<small>{summary}</small></div>"
    )


def _probe_error(point: dict, lang: str) -> str:
    """A probe point's error in `lang`: its message when recorded as one (else the English text as it is)."""
    data = point.get("error_msg")
    if isinstance(data, dict):
        try:
            return render(Msg.from_json(data), lang)
        except (KeyError, IndexError, ValueError, TypeError, AttributeError):
            pass
    return str(point["error"])


def _prompt_label(row: dict) -> str:
    text = row.get("instruction", "") + (f" — {row['input']}" if row.get("input") else "")
    return text if len(text) <= 80 else text[:77] + "…"


# --- the runs tables and the compared runs' chart ---
def runs_frame(runs: list[dict] | None, lang: str = "en") -> pd.DataFrame:
    """The runs table (LabEngine.train.runs()), its headers and statuses in `lang` (the run names as they are);
    None: the empty table of the built page (filled when a page loads)."""
    tr = translator(lang)
    rows = [
        [
            r["name"],
            stage_label(r["status"], lang),
            r["model"],
            r["dataset"],
            None if r["final_loss"] is None else round(r["final_loss"], 4),
            r["duration_s"],
            r["started"],
        ]
        for r in runs or []
    ]
    columns = [tr("run"), tr("status"), tr("model"), tr("dataset"), tr("final loss"), tr("seconds"), tr("started")]
    return pd.DataFrame(rows, columns=columns)


def compare_frame(result: dict | None, columns, lang: str = "en") -> pd.DataFrame:
    """The compared runs' table (LabEngine.compare_runs; columns: the keys of each row, in order), headers and
    statuses in `lang`; None: the empty table."""
    tr = translator(lang)
    headers = {
        "run": tr("run"),
        "status": tr("status"),
        "steps": tr("steps"),
        "final_loss": tr("final train loss"),
        "min_eval_loss": tr("min eval loss"),
        "final_eval_loss": tr("final eval loss"),
        "learning_rate": tr("learning rate"),
        "r": "r",
        "lora_alpha": tr("alpha"),
        "effective_batch": tr("effective batch"),
        "tokens_per_s": "tokens/s",
        "wall_s": tr("seconds"),
    }

    def cell(key, value):
        if key == "status":
            return stage_label(value, lang)
        return round(value, 4) if key.endswith("loss") and isinstance(value, float) else value

    rows = [[cell(k, r[k]) for k in columns] for r in (result or {}).get("runs", [])]
    return pd.DataFrame(rows, columns=[headers[k] for k in columns])


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
