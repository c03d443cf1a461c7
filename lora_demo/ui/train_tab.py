"""Train tab: settings, plan with warnings, one-click start, live progress and loss curve, stop, runs list."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd

from lora_demo.data import DatasetStore, example_names
from lora_demo.device import detect
from lora_demo.errors import InputError
from lora_demo.export import export_gguf, export_merged, export_zip
from lora_demo.models import REGISTRY, cached_tokenizer, resolve_model
from lora_demo.paths import inside
from lora_demo.train.plan import plan_markdown, plan_run
from lora_demo.train.plots import loss_figure, progress_html
from lora_demo.train.runner import equivalent_command, get_runner, resolve_rows
from lora_demo.train.runs import list_runs, read_status
from lora_demo.train.settings import ALL_LINEAR, OPTIMIZERS, SCHEDULERS, TrainSettings, defaults_for
from lora_demo.train.watch import look
from lora_demo.ui.common import friendly, show_errors

# The form's fields, in the order the handlers receive them (names match TrainSettings).
FORM = [
    "model", "dataset", "template", "enable_thinking", "max_seq_length", "r", "lora_alpha", "lora_dropout",
    "target_modules", "use_rslora", "load_in_4bit", "learning_rate", "num_epochs", "max_steps", "micro_batch_size",
    "gradient_accumulation_steps", "warmup", "lr_scheduler", "weight_decay", "optimizer", "seed",
    "train_on_responses_only", "packing", "val_fraction", "logging_steps", "eval_steps", "save_steps", "run_name",
]  # fmt: skip
INTS = {"max_seq_length", "r", "max_steps", "micro_batch_size", "gradient_accumulation_steps", "seed", "logging_steps",
        "eval_steps", "save_steps"}  # fmt: skip


def settings_from_form(values) -> TrainSettings:
    """TrainSettings from the form's values (numbers from gr.Number may arrive as floats or None)."""
    data = dict(zip(FORM, values, strict=True))
    for k, v in data.items():
        if v is None and k != "run_name":
            raise InputError(f"{k.replace('_', ' ')} is empty: fill it in.")
        if k in INTS and isinstance(v, float) and v.is_integer():
            data[k] = int(v)
    data["run_name"] = data["run_name"] or ""
    return TrainSettings.from_dict(data)


def dataset_choices(data_dir) -> list[str]:
    return [f"example:{n}" for n in example_names()] + DatasetStore(data_dir).names()


def runs_frame(runs_dir) -> pd.DataFrame:
    rows = [[r["name"], r["status"], r["model"], r["dataset"], None if r["final_loss"] is None else round(r["final_loss"], 4),
             r["duration_s"], r["started"]] for r in list_runs(runs_dir)]  # fmt: skip
    return pd.DataFrame(rows, columns=["run", "status", "model", "dataset", "final loss", "seconds", "started"])


def run_names(runs_dir) -> list[str]:
    return [r["name"] for r in list_runs(runs_dir)]


def run_to_chat(runs_dir: Path, name) -> str:
    """The adapter path of the shown run, spelled as the Chat list spells it; a clear message if it has none."""
    if not name:
        raise InputError("Pick a run in 'show run' first.")
    run_dir = inside(runs_dir, name, "run name")
    if not (run_dir / "adapter_config.json").is_file():
        st = read_status(run_dir).get("status", "unknown")
        raise InputError(f"Run {name!r} has no adapter yet (status: {st}). Wait until it completes or is stopped.")
    return str(Path(runs_dir) / name)


@dataclass
class TrainTab:
    """What other tabs wire to: the shown run, the "Chat with this run" button and the tab's status line."""

    view: gr.Dropdown
    chat_btn: gr.Button
    status: gr.Markdown


def create_train_tab(settings) -> TrainTab:
    runs_dir, data_dir = Path(settings.runs_dir), Path(settings.data_dir)
    runner = get_runner(runs_dir, data_dir)
    policy = settings.policy()

    def guarded(values) -> TrainSettings:
        """Settings from the form, with every path checked against the app's folders."""
        s = settings_from_form(values)
        s.model = policy.check_model(s.model)
        if not s.dataset.startswith("example:") and s.dataset not in DatasetStore(data_dir).names():
            s.dataset = str(policy.check(s.dataset, "dataset file"))
        return s

    device = detect().device
    d = defaults_for(device, resolve_model(settings.model)).to_dict()
    models = list(dict.fromkeys([d["model"], *REGISTRY]))
    comps: dict[str, gr.components.Component] = {}
    help_ = TrainSettings.help()

    def num(name, label, precision=None, **kw):
        comps[name] = gr.Number(value=d[name], label=label, info=help_[name], precision=precision, **kw)

    with gr.Row():
        comps["model"] = gr.Dropdown(
            models, value=d["model"], label="model", info=help_["model"], allow_custom_value=True, elem_id="train-model"
        )
        comps["dataset"] = gr.Dropdown(dataset_choices(data_dir), value=d["dataset"], label="dataset", info=help_["dataset"],
                                       allow_custom_value=True)  # fmt: skip
        comps["template"] = gr.Radio(["alpaca", "chat"], value=d["template"], label="template", info=help_["template"])
        comps["enable_thinking"] = gr.Checkbox(value=d["enable_thinking"], label="Qwen3 thinking")
        num("max_seq_length", "max sequence length", 0)
    with gr.Accordion("LoRA", open=True), gr.Row():
        num("r", "rank r", 0)
        num("lora_alpha", "alpha")
        num("lora_dropout", "dropout")
        comps["target_modules"] = gr.CheckboxGroup(ALL_LINEAR, value=d["target_modules"], label="target modules")
        comps["use_rslora"] = gr.Checkbox(value=d["use_rslora"], label="rsLoRA")
        comps["load_in_4bit"] = gr.Checkbox(value=d["load_in_4bit"], label="4-bit (QLoRA)")
    with gr.Accordion("Optimisation", open=True), gr.Row():
        num("learning_rate", "learning rate")
        num("num_epochs", "epochs")
        num("max_steps", "max steps (-1: epochs)", 0)
        num("micro_batch_size", "micro batch", 0)
        num("gradient_accumulation_steps", "grad. accumulation", 0)
        num("warmup", "warmup (steps, or ratio < 1)")
        comps["lr_scheduler"] = gr.Dropdown(list(SCHEDULERS), value=d["lr_scheduler"], label="scheduler")
        num("weight_decay", "weight decay")
        comps["optimizer"] = gr.Dropdown(list(OPTIMIZERS), value=d["optimizer"], label="optimizer")
        num("seed", "seed", 0)
    with gr.Accordion("Data, logging, saving", open=False), gr.Row():
        comps["train_on_responses_only"] = gr.Checkbox(
            value=d["train_on_responses_only"], label="train on responses only"
        )
        comps["packing"] = gr.Checkbox(value=d["packing"], label="packing")
        num("val_fraction", "validation fraction")
        num("logging_steps", "logging steps", 0)
        num("eval_steps", "eval steps", 0)
        num("save_steps", "checkpoint every N steps (0: none)", 0)
        comps["run_name"] = gr.Textbox(value="", label="run name (optional)")
    form = [comps[k] for k in FORM]

    with gr.Row():
        plan_btn = gr.Button("Check plan")
        start_btn = gr.Button("Start training", variant="primary", elem_id="train-start")
        stop_btn = gr.Button("Stop", variant="stop", elem_id="train-stop")
    plan_md = gr.Markdown(elem_id="train-plan")
    start_md = gr.Markdown(elem_id="train-message")
    progress = gr.HTML(progress_html({}, []), elem_id="train-progress-box")
    curve = gr.Plot(label="loss and learning rate", elem_id="train-curve")
    log = gr.Code(label="log (tail)", language=None, lines=10, max_lines=14)
    with gr.Row():
        names = run_names(runs_dir)
        view = gr.Dropdown(names, value=names[0] if names else None, label="show run", allow_custom_value=False,
                           elem_id="train-view")  # fmt: skip
        refresh = gr.Button("↻ runs", size="sm")
        chat_btn = gr.Button("💬 Chat with this run", variant="primary", elem_id="train-chat")
    runs_table = gr.Dataframe(value=lambda: runs_frame(runs_dir), label="runs", interactive=False, max_height=300)
    with gr.Accordion("Export the shown run", open=False):
        with gr.Row():
            zip_btn = gr.Button("Adapter as .zip", elem_id="export-zip")
            merge_btn = gr.Button("Merge into the base (16-bit)")
            gguf_btn = gr.Button("GGUF (needs llama.cpp)")
        export_file = gr.File(label="download", interactive=False, elem_id="export-file")
        export_msg = gr.Markdown(elem_id="export-message")
    timer = gr.Timer(1.0)
    seen = gr.State(None)

    @friendly
    def on_plan(*values):
        s = guarded(values)
        rows = resolve_rows(s.dataset, data_dir)
        try:
            tok = cached_tokenizer(s.model)
        except Exception:  # noqa: BLE001 - token counting is optional (hub model offline)
            tok = None
        return plan_markdown(plan_run(s, rows, tok))

    @friendly
    def on_start(*values):
        s = guarded(values)
        rows = resolve_rows(s.dataset, data_dir)
        plan = plan_run(s, rows, None)
        if plan["errors"]:
            raise InputError("Fix these first: " + "; ".join(plan["errors"][:5]))
        run_dir = runner.start(s, rows)
        msg = f"Started **{run_dir.name}**. Same run from a terminal: `{equivalent_command(run_dir)}`"
        return msg, plan_markdown(plan), gr.Dropdown(choices=run_names(runs_dir), value=run_dir.name)

    @friendly
    def on_stop():
        run_dir = runner.stop()
        if run_dir is None:
            return "No training is running."
        return (
            f"Stopping **{run_dir.name}** after the current step; the adapter so far will be saved (status: stopped)."
        )

    def on_tick(shown, seen_before):
        """Redraw only what changed (train.watch.look): on 2 cores the page competes with the training."""
        active = runner.current()
        name = active.name if active is not None else shown
        if not name or not (runs_dir / name).is_dir():
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), seen_before
        run_dir = runs_dir / name
        now = look(run_dir, seen_before)
        if not now.changed and not now.curve:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), now.seen
        html = progress_html(now.status, now.progress, run_dir) if now.status is not None else gr.skip()
        curve_fig = loss_figure(now.progress, f"Run {name}") if now.curve else gr.skip()
        log_text = now.log if now.log is not None else gr.skip()
        view_update = gr.Dropdown(choices=run_names(runs_dir), value=name) if name != shown else gr.skip()
        before = (seen_before or {}).get("key") or [None]
        status_changed = now.status is not None and (before[0] != now.status.get("status"))
        table = runs_frame(runs_dir) if status_changed else gr.skip()
        return html, curve_fig, log_text, view_update, table, now.seen

    def shown_run(name) -> Path:
        if not name:
            raise InputError("Pick a run in 'show run' first.")
        run_dir = inside(runs_dir, name, "run name")
        if not run_dir.is_dir():
            raise InputError(f"No run named {name!r}.")
        return run_dir

    @friendly
    def on_zip(name):
        run_dir = shown_run(name)
        out = export_zip(run_dir, run_dir / "exports" / f"{run_dir.name}.zip")
        return str(out), f"Zipped the adapter, its config and model card: `{out}`."

    @friendly
    def on_merge(name):
        run_dir = shown_run(name)
        out = export_merged(run_dir, run_dir / "merged")
        return f"Merged model (16-bit safetensors + model card) in `{out}`: `AutoModelForCausalLM.from_pretrained` loads it."

    @friendly
    def on_gguf(name):
        run_dir = shown_run(name)
        if not (run_dir / "merged" / "config.json").is_file():
            raise InputError("Merge the run first (the GGUF is made from the merged model).")
        out = export_gguf(run_dir / "merged", run_dir / "exports" / f"{run_dir.name}.gguf")
        return f"GGUF written: `{out}`."

    show_errors(zip_btn.click(on_zip, view, [export_file, export_msg], api_name="export_zip"), export_msg)
    show_errors(merge_btn.click(on_merge, view, export_msg, api_name="export_merged", concurrency_limit=1,
                                concurrency_id="train_start"), export_msg)  # fmt: skip
    show_errors(gguf_btn.click(on_gguf, view, export_msg, api_name="export_gguf", concurrency_limit=1,
                               concurrency_id="train_start"), export_msg)  # fmt: skip
    comps["dataset"].focus(
        lambda: gr.Dropdown(choices=dataset_choices(data_dir)), None, comps["dataset"], api_visibility="private"
    )
    show_errors(plan_btn.click(on_plan, form, plan_md, api_name="train_plan"), start_md)
    show_errors(start_btn.click(on_start, form, [start_md, plan_md, view], api_name="train_start", concurrency_limit=1,
                                concurrency_id="train_start"), start_md)  # fmt: skip
    show_errors(stop_btn.click(on_stop, None, start_md, api_name="train_stop"), start_md)
    timer.tick(
        on_tick,
        [view, seen],
        [progress, curve, log, view, runs_table, seen],
        show_progress="hidden",
        api_visibility="private",
    )

    def on_runs():
        runner.current()  # reaps a finished worker first, so a killed run shows why it failed
        return runs_frame(runs_dir), gr.Dropdown(choices=run_names(runs_dir))

    refresh.click(on_runs, None, [runs_table, view], api_name="train_runs")

    def on_select(evt: gr.SelectData):
        return evt.row_value[0] if evt.row_value else gr.skip()

    runs_table.select(on_select, None, view, api_visibility="private")
    return TrainTab(view=view, chat_btn=chat_btn, status=start_md)
