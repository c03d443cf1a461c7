"""Train tab: settings, plan with warnings, one-click start, live progress and loss curve, stop, runs, export.

Layout only: the components are laid out by small functions and wired to TrainActions, whose methods call the
LabEngine (lora_demo/engine.py). Each action can be called without launching the app.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr
import pandas as pd

from lora_demo.data import example_names
from lora_demo.data.preferences import PAIRS, VOTES
from lora_demo.device import detect
from lora_demo.errors import InputError
from lora_demo.i18n import msg
from lora_demo.models import REGISTRY
from lora_demo.rundir import CHECKPOINTS, RunDir
from lora_demo.train import probes
from lora_demo.train.plan import plan_markdown
from lora_demo.train.plots import compare_figure, empty_loss_figure, loss_figure, progress_html, stage_label
from lora_demo.train.runner import equivalent_command
from lora_demo.train.runs import LOG_TAIL_LINES, list_runs
from lora_demo.train.settings import (
    ALL_LINEAR,
    METHODS,
    OPTIMIZERS,
    SCHEDULERS,
    TRACKERS,
    TrainSettings,
    defaults_for,
)
from lora_demo.train.watch import look
from lora_demo.ui.common import dynamic, friendly, lang, on_language, on_load, pill_sink, say, show, show_errors
from lora_demo.ui.export_panel import export_panel

# The form's fields, in the order the handlers receive them (names match TrainSettings).
FORM = [
    "model",
    "dataset",
    "template",
    "enable_thinking",
    "max_seq_length",
    "r",
    "lora_alpha",
    "lora_dropout",
    "target_modules",
    "use_rslora",
    "load_in_4bit",
    "learning_rate",
    "num_epochs",
    "max_steps",
    "micro_batch_size",
    "gradient_accumulation_steps",
    "warmup",
    "lr_scheduler",
    "weight_decay",
    "optimizer",
    "seed",
    "train_on_responses_only",
    "packing",
    "val_fraction",
    "logging_steps",
    "eval_steps",
    "save_steps",
    "run_name",
    "num_processes",
    "keep_checkpoints",
    "init_adapter",
    "probe_prompts",
    "probe_tokens",
    "probe_rows",
    "padding_free",
    "auto_micro_batch",
    "report_to",
    "num_nodes",
    "node_rank",
    "master_addr",
    "master_port",
    "fsdp",
    "method",
    "dpo_beta",
    "rewards",
    "grpo_generations",
    "grpo_max_tokens",
    "grpo_temperature",
]
INTS = {
    "max_seq_length",
    "r",
    "max_steps",
    "micro_batch_size",
    "gradient_accumulation_steps",
    "seed",
    "logging_steps",
    "eval_steps",
    "save_steps",
    "keep_checkpoints",
    "probe_tokens",
    "probe_rows",
    "num_nodes",
    "node_rank",
    "master_port",
    "grpo_generations",
    "grpo_max_tokens",
}
# The form's labels (the switch translates them; an empty field's error names it by its label).
LABELS = {
    "model": "model",
    "dataset": "dataset",
    "template": "template",
    "enable_thinking": "Qwen3 thinking",
    "max_seq_length": "max sequence length",
    "r": "rank r",
    "lora_alpha": "alpha",
    "lora_dropout": "dropout",
    "target_modules": "target modules",
    "use_rslora": "rsLoRA",
    "load_in_4bit": "4-bit (QLoRA)",
    "learning_rate": "learning rate",
    "num_epochs": "epochs",
    "max_steps": "max steps (-1: epochs)",
    "micro_batch_size": "micro batch",
    "gradient_accumulation_steps": "grad. accumulation",
    "warmup": "warmup (steps, or ratio < 1)",
    "lr_scheduler": "scheduler",
    "weight_decay": "weight decay",
    "optimizer": "optimizer",
    "seed": "seed",
    "train_on_responses_only": "train on responses only",
    "packing": "packing",
    "padding_free": "padding-free batches",
    "auto_micro_batch": "auto micro batch (CUDA)",
    "val_fraction": "validation fraction",
    "logging_steps": "logging steps",
    "eval_steps": "eval steps",
    "save_steps": "checkpoint every N steps (0: auto, about 5; -1: none)",
    "keep_checkpoints": "keep the newest N checkpoints",
    "run_name": "run name (optional)",
    "init_adapter": "continue from (parent adapter)",
    "probe_prompts": "probe prompts (one per line)",
    "probe_tokens": "probe answer tokens (0: off)",
    "probe_rows": "rows to probe (no prompts given)",
    "num_processes": "GPUs",
    "report_to": "also report to",
    "num_nodes": "machines (nodes)",
    "node_rank": "this machine's node rank",
    "master_addr": "node 0's address",
    "master_port": "rendezvous port",
    "fsdp": "FSDP (shard the model over the GPUs)",
    "method": "training method",
    "dpo_beta": "DPO beta",
    "rewards": "rewards (pick presets or type KIND:ARG@WEIGHT)",
    "grpo_generations": "answers per prompt",
    "grpo_max_tokens": "answer tokens",
    "grpo_temperature": "sampling temperature",
}
# Ready-made GRPO rewards for the form's list (train/rewards.py reads them; any other spec may be typed in).
REWARD_PRESETS = [
    "format:<answer>",
    r"format:^[A-Z].*[.!?]$",
    "length:40",
    "match:fuzzy",
    "match:exact",
    "not_contains:As an AI",
    "contains:",
]
# The fields only one method uses (shown with it): another method's run never stops on them.
METHOD_FIELDS = {
    "dpo_beta": "dpo",
    "rewards": "grpo",
    "grpo_generations": "grpo",
    "grpo_max_tokens": "grpo",
    "grpo_temperature": "grpo",
}
# The methods as the form's radio names them (values: TrainSettings.method).
METHOD_NAMES = {"sft": "SFT", "dpo": "DPO", "grpo": "GRPO"}
SKIP7 = (gr.skip(),) * 7
POLL_S = 2.0  # seconds between the Train tab's looks at an active run


def idle():
    """No run to watch and nothing left to draw: the page stops polling until Start, the tab or ↻ wakes it."""
    return gr.Timer(active=False)


def settings_from_form(values) -> TrainSettings:
    """TrainSettings from the form's values (numbers from gr.Number may arrive as floats or None)."""
    data = dict(zip(FORM, values, strict=True))
    defaults = TrainSettings().to_dict()
    for k, v in data.items():
        if v is None and METHOD_FIELDS.get(k, data.get("method")) != data.get("method"):
            data[k] = defaults[k]  # another method's hidden field, left empty: its default (it is not used)
        elif v is None and k != "run_name":
            raise InputError(msg("{name} is empty: fill it in.", name=msg(LABELS[k])))
        if k in INTS and isinstance(v, float) and v.is_integer():
            data[k] = int(v)
    data["run_name"] = data["run_name"] or ""
    data["init_adapter"] = data["init_adapter"] or ""
    prompts = data["probe_prompts"]
    data["probe_prompts"] = (
        [t.strip() for t in prompts.splitlines() if t.strip()] if isinstance(prompts, str) else prompts
    )
    return TrainSettings.from_dict(data)


def form_values(s: TrainSettings, parents: list) -> list:
    """The form's values for settings s (the inverse of settings_from_form), in FORM order."""
    d = s.to_dict()
    d["probe_prompts"] = "\n".join(s.probe_prompts)
    d["init_adapter"] = gr.Dropdown(choices=parents, value=s.init_adapter)
    d["num_processes"] = max(1, min(s.num_processes, visible_gpus()))  # the parent's GPUs may not be here
    return [d[k] for k in FORM]


def resumable_now(run_dir) -> bool:
    """Whether the Resume button belongs on this run: stopped or failed, with a finished checkpoint (presence of its
    files only; Resume itself reads them and says which one it skips)."""
    from lora_demo.train.checkpoints import can_resume
    from lora_demo.train.runs import read_status, settled

    st = settled(run_dir, read_status(run_dir))
    if (st.get("num_nodes") or 1) > 1:  # a run over several machines does not resume (Runner.resume says why)
        return False
    return st.get("status") in ("stopped", "failed") and can_resume(run_dir)


def runs_frame(runs_dir) -> pd.DataFrame:
    """The runs table, its headers and statuses in this session's language (the run names as they are); None: the
    empty table of the built page (filled when a page loads)."""
    here = lang()
    rows = [
        [
            r["name"],
            stage_label(r["status"], here),
            r["model"],
            r["dataset"],
            None if r["final_loss"] is None else round(r["final_loss"], 4),
            r["duration_s"],
            r["started"],
        ]
        for r in (list_runs(runs_dir) if runs_dir is not None else [])
    ]
    columns = [
        say("run"),
        say("status"),
        say("model"),
        say("dataset"),
        say("final loss"),
        say("seconds"),
        say("started"),
    ]
    return pd.DataFrame(rows, columns=columns)


def compare_frame(result) -> pd.DataFrame:
    """The compared runs' table (compare.COLUMNS), headers and statuses in this session's language; None: empty."""
    from lora_demo.train.compare import COLUMNS

    here = lang()
    headers = {
        "run": say("run"),
        "status": say("status"),
        "steps": say("steps"),
        "final_loss": say("final train loss"),
        "min_eval_loss": say("min eval loss"),
        "final_eval_loss": say("final eval loss"),
        "learning_rate": say("learning rate"),
        "r": "r",
        "lora_alpha": say("alpha"),
        "effective_batch": say("effective batch"),
        "tokens_per_s": "tokens/s",
        "wall_s": say("seconds"),
    }

    def cell(key, value):
        if key == "status":
            return stage_label(value, here)
        return round(value, 4) if key.endswith("loss") and isinstance(value, float) else value

    rows = [[cell(k, r[k]) for k in COLUMNS] for r in (result or {}).get("runs", [])]
    return pd.DataFrame(rows, columns=[headers[k] for k in COLUMNS])


def compare_note(result) -> str:
    """Which settings differ between the compared runs (the names as in config.yaml)."""
    from lora_demo.train.compare import cell_text

    if len(result["runs"]) < 2:
        return say("Pick another run to compare it with.")
    if not result["differs"]:
        return say("The runs have the same settings.")
    lines = "; ".join(f"`{k}` " + " · ".join(cell_text(v) for v in values) for k, values in result["differs"].items())
    return say("Settings that differ (in the order of the table): {settings}", settings=lines)


def _adapter_name(path) -> str:
    """A run's name, or run/checkpoint-N for one of its checkpoints."""
    from pathlib import Path

    p = Path(str(path))
    return f"{p.parent.parent.name}/{p.name}" if p.parent.name == CHECKPOINTS else p.name


def _is_preferences(dataset) -> bool:
    return isinstance(dataset, str) and (dataset.startswith(VOTES) or dataset.startswith(PAIRS))


def run_names(runs_dir) -> list[str]:
    return [r["name"] for r in list_runs(runs_dir)]


class TrainActions:
    """The Train tab's event handlers, over one LabEngine."""

    def __init__(self, lab):
        self.lab = lab

    def dataset_choices(self, saved: bool = True, method: str = "sft") -> list:
        """The examples, then (saved=True) the data folder's datasets, read now (the built page lists examples only).
        A DPO run's: preference pairs instead (the parent's votes, each run's votes, the saved preference sets)."""
        if method == "dpo":
            parent_votes = (say("votes: (the parent's votes)"), VOTES)
            return [parent_votes, *((show(label), value) for label, value in self.lab.preference_sources())]
        return [f"example:{n}" for n in example_names()] + (self.lab.datasets.names() if saved else [])

    def method_changed(self, method, dataset, parent):
        """Another training method: its datasets (a DPO run learns from preference pairs: votes or a preference
        set; SFT and GRPO from instruction rows), its own settings shown, and what it needs said."""
        choices = self.dataset_choices(method=method)
        values = [c[1] if isinstance(c, tuple) else c for c in choices]
        keep = dataset in values or (method != "dpo" and not _is_preferences(dataset))
        pick = gr.Dropdown(choices=choices, value=dataset if keep else values[0])
        said = ""
        if method == "dpo" and not parent:
            said = say(
                "DPO continues from an SFT adapter: pick it under *Continue from an adapter* (or press **Train "
                "DPO from these votes** in the Chat tab's blind votes)."
            )
        return pick, gr.Number(visible=method == "dpo"), gr.Row(visible=method == "grpo"), said

    def adopt_dataset(self, name):
        """A dataset this visitor just saved in the Dataset tab becomes this page's Train dataset (this session only:
        another visitor's form keeps its own pick)."""
        name = str(name or "").strip()
        if not name or name not in self.lab.datasets.names():
            return gr.skip()
        return gr.Dropdown(choices=self.dataset_choices(), value=name)

    @staticmethod
    def remember(*values) -> dict:
        """The form's values, kept in this browser (gr.BrowserState) so a reload gets them back."""
        return dict(zip(FORM, values, strict=True))

    def restore(self, stored):
        """At page load: the form as this browser last left it (what is missing or no longer there stays default)."""
        stored = stored if isinstance(stored, dict) else {}
        out = []
        for k in FORM:
            v = stored.get(k)
            if k not in stored or (v is None and k != "run_name"):
                out.append(gr.skip())
            elif k == "dataset":
                out.append(gr.Dropdown(choices=self.dataset_choices(method=stored.get("method") or "sft"), value=v))
            elif k == "dpo_beta":
                out.append(gr.Number(value=v, visible=stored.get("method") == "dpo"))
            elif k == "init_adapter":
                parents = self.parents()
                known = v in [value for _, value in parents]
                out.append(gr.Dropdown(choices=parents, value=v) if known else gr.skip())
            elif k == "num_processes":
                out.append(max(1, min(int(v), visible_gpus())) if isinstance(v, (int, float)) else gr.skip())
            else:
                out.append(v)
        return out

    def restore_once(self, stored, done):
        """restore(), the first time this page has stored values to restore; nothing after that."""
        if done or not (isinstance(stored, dict) and stored):
            return (*(gr.skip() for _ in FORM), done)
        return (*self.restore(stored), True)

    def lists(self):
        """At page load, this session's lists of the user's work, read now (the built page names none): datasets,
        parent adapters, runs (the newest shown), the runs table, Resume for the shown run."""
        names = run_names(self.lab.runs_dir)
        shown = names[0] if names else None
        return (
            gr.Dropdown(choices=self.dataset_choices()),
            gr.Dropdown(choices=self.parents()),
            gr.Dropdown(choices=names, value=shown),
            runs_frame(self.lab.runs_dir),
            gr.Button(visible=bool(shown) and resumable_now(self.lab.runs_dir / shown)),
        )

    @friendly
    def plan(self, *values) -> str:
        return plan_markdown(self.lab.plan(settings_from_form(values)), lang())

    @friendly
    def plan_kept(self, *values):
        """The Check plan button: the plan in this session's language, and the plan itself (a gr.State, to render
        it again when the language is switched)."""
        plan = self.lab.plan(settings_from_form(values))
        return plan_markdown(plan, lang()), plan

    @friendly
    def start(self, *values):
        run_dir, plan = self.lab.start_training(settings_from_form(values))
        started = say(
            "Started **{name}**. Same run from a terminal: `{command}`",
            name=run_dir.name,
            command=equivalent_command(run_dir),
        )
        view = gr.Dropdown(choices=run_names(self.lab.runs_dir), value=run_dir.name)
        return started, plan_markdown(plan, lang()), view, plan

    @friendly
    def resume(self, name):
        from lora_demo.train.checkpoints import step_of

        ckpt, skipped = self.lab.resume(name)
        notes = "".join(
            "\n- ⚠️ " + say("{why} It was set aside (renamed corrupt-…), and the previous one used.", why=m)
            for m in skipped
        )
        resuming = say(
            "Resuming **{name}** from checkpoint step {step}: same folder, same curve.", name=name, step=step_of(ckpt)
        )
        return resuming + notes

    def parents(self) -> list:
        """The 'continue from' list: first 'new LoRA factors' (start a fresh adapter, in this session's language),
        then the adapters of the runs folder."""
        from lora_demo.adapters import adapter_choices

        return [(say("— new LoRA factors —"), ""), *adapter_choices(self.lab.runs_dir, lang())]

    @friendly
    def continue_from(self, name):
        """'Continue training': the form filled with the shown run's settings, starting from its adapter."""
        path = self._adapter_or_checkpoint(name)
        s = self.lab.continue_settings(path)
        told = say(
            "The form now continues from **{name}**: its settings, starting from its adapter. Pick a dataset "
            "(the same or a new one), adjust epochs or learning rate, and press Start; the new run records its "
            "parent.",
            name=name,
        )
        return *self.form_for(s), told

    def form_for(self, s: TrainSettings) -> list:
        """The form's values for settings s (form_values), with the dataset list and the fields of s's method."""
        values = form_values(s, self.parents())
        values[FORM.index("dataset")] = gr.Dropdown(choices=self.dataset_choices(method=s.method), value=s.dataset)
        values[FORM.index("dpo_beta")] = gr.Number(value=s.dpo_beta, visible=s.method == "dpo")
        return values

    @friendly
    def dpo_from_votes(self, adapter):
        """Chat tab → "Train DPO from these votes": the Train form set for a DPO round on the votes cast on the
        adapter the Chat tab shows, continuing from it (nothing starts: the user checks the plan and presses Start)."""
        s = self.lab.dpo_from_votes(adapter)
        told = say(
            "The form now trains **DPO** from the blind votes on **{name}**, continuing from it. Check the plan "
            "(pairs, steps, the reference model's cost), then press Start.",
            name=_adapter_name(adapter),
        )
        return *self.form_for(s), told

    def _adapter_or_checkpoint(self, name) -> str:
        """The run's final adapter, else (a failed or running run) its newest finished checkpoint."""
        from lora_demo.train.checkpoints import checkpoint_choices

        try:
            return self.lab.adapter_for_chat(name)
        except InputError:
            ckpts = checkpoint_choices(self.lab.run_dir(name))
            if not ckpts:
                raise
            return str(RunDir(self.lab.runs_dir / name).checkpoints_dir / ckpts[0][1].name)

    def thinking(self, model):
        """The 'Qwen3 thinking' switch, shown only for a model whose chat template reads it (off otherwise)."""
        return (
            gr.Checkbox(visible=True) if self.lab.thinking_offered(model) else gr.Checkbox(visible=False, value=False)
        )

    @friendly
    def adopt_parent(self, adapter):
        """Picking an adapter to continue from takes its base model and LoRA shape, which must match it."""
        if not adapter:
            return (gr.skip(),) * 5
        s = self.lab.continue_settings(adapter)
        return s.model, s.r, s.lora_alpha, s.target_modules, s.use_rslora

    @friendly
    def stop(self) -> str:
        from lora_demo.train.runs import stop_notice

        run_dir = self.lab.runner.stop()
        if run_dir is None:
            return say("No training is running.")
        return show(stop_notice(run_dir))  # what it does at the run's stage: nothing saved while the model loads

    @friendly
    def ask_delete(self, name):
        """🗑: say what would be deleted and show 'Confirm delete' (armed: the confirmation the endpoint needs)."""
        self.lab.run_dir(name)  # a run of this folder, or the message why not
        active = self.lab.runner.current()
        if active is not None and active.name == name:
            self.lab.delete_run(name)  # refuses, saying how to stop it
        asked = say(
            "Delete **{name}** and everything in it (adapter, checkpoints, log, data snapshot)? This cannot be "
            "undone: press **Confirm delete**.",
            name=name,
        )
        return asked, gr.Button(visible=True), True

    @friendly
    def delete(self, name, confirm):
        """Delete the shown run (confirm must be True: the page sets it with 🗑 → Confirm delete); refresh the lists."""
        if confirm is not True:
            raise InputError(
                msg(
                    "Deleting a run cannot be undone: confirm it (🗑 Delete run, then Confirm delete; "
                    "through the API pass confirm=True)."
                )
            )
        self.lab.delete_run(name)
        names = run_names(self.lab.runs_dir)
        shown = names[0] if names else None
        return (
            say("Deleted **{name}**.", name=name),
            runs_frame(self.lab.runs_dir),
            gr.Dropdown(choices=names, value=shown),
            gr.Button(visible=False),
            False,
            gr.Button(visible=bool(shown) and resumable_now(self.lab.runs_dir / shown)),
            gr.skip() if shown else progress_html({}, [], None, lang()),
        )

    def tick(self, shown, seen_before):
        """Redraw only what changed (train.watch.look): on 2 cores the page competes with the training. The timer
        runs while there is something to watch (started by Start, the tab's selection or ↻) and stops itself."""
        active = self.lab.runner.current()
        name = active.name if active is not None else shown
        if not name or not (self.lab.runs_dir / name).is_dir():
            return (*SKIP7, seen_before, idle())
        run_dir = self.lab.runs_dir / name
        now = look(run_dir, seen_before)
        if not now.changed and not now.curve:
            return (*SKIP7, now.seen, gr.skip() if active is not None else idle())
        before = (seen_before or {}).get("key") or [None]
        new_run = (seen_before or {}).get("run") != str(run_dir)  # another run shown: its buttons, not the last one's
        status_changed = now.status is not None and (new_run or before[0] != now.status.get("status"))
        here = lang()
        return (
            progress_html(now.status, now.progress, run_dir, here) if now.status is not None else gr.skip(),
            loss_figure(now.progress, msg("Run {name}", name=name), here) if now.curve else gr.skip(),
            probes.timeline_html(probes.read(run_dir), here) if now.curve else gr.skip(),
            now.log if now.log is not None else gr.skip(),
            gr.Dropdown(choices=run_names(self.lab.runs_dir), value=name) if name != shown else gr.skip(),
            runs_frame(self.lab.runs_dir) if status_changed else gr.skip(),
            gr.Button(visible=resumable_now(run_dir)) if status_changed else gr.skip(),
            now.seen,
            gr.skip(),
        )

    def buttons(self):
        """Start off and Stop on while a run is active (a reloaded page re-attaches to it); the other way round
        once it has ended."""
        running = self.lab.runner.current() is not None
        return gr.Button(interactive=not running), gr.Button(interactive=running)

    def tick_and_buttons(self, shown, seen_before):
        return (*self.tick(shown, seen_before), *self.buttons())

    def relabel(self, shown):
        """After a language switch: the runs table now; the shown run's panels at the next tick (its `seen` is
        cleared, so everything is redrawn, and the timer woken); the empty panels now when no run is shown."""
        here = lang()
        if shown and (self.lab.runs_dir / str(shown)).is_dir():
            return gr.skip(), gr.skip(), runs_frame(self.lab.runs_dir), None, gr.Timer(active=True)
        return (
            progress_html({}, [], None, here),
            probes.timeline_html([], here),
            runs_frame(self.lab.runs_dir),
            None,
            gr.skip(),
        )

    @staticmethod
    def replan(plan):
        """The last plan shown, in the language just chosen."""
        return plan_markdown(plan, lang()) if plan else gr.skip()

    def compare_choices(self, picked):
        """The runs to compare: the runs folder's, read now (newest first); the picks that are still there stay."""
        names = run_names(self.lab.runs_dir)
        picked = [p for p in picked or [] if p in names] if isinstance(picked, list) else []
        return gr.Dropdown(choices=names, value=picked)

    @friendly
    def compare(self, names):
        """The picked runs' loss curves on one plot, their table, and which settings differ (nothing picked: the
        empty chart says what to pick)."""
        result = self.lab.compare_runs(names) if names else None
        return compare_figure(result, lang()), compare_frame(result), compare_note(result) if result else ""

    def recompare(self, names):
        """After a language switch: the comparison shown, in the new language (left as it is if it cannot be made
        again, e.g. a picked run was deleted meanwhile: the next pick says why)."""
        try:
            result = self.lab.compare_runs(names) if names else None
        except InputError:
            return gr.skip(), gr.skip(), gr.skip()
        return compare_figure(result, lang()), compare_frame(result), compare_note(result) if result else ""

    def refresh_runs(self):
        self.lab.runner.reap()  # a run whose worker is gone (killed, app restarted) is recorded as failed
        return runs_frame(self.lab.runs_dir), gr.Dropdown(choices=run_names(self.lab.runs_dir))


@dataclass
class TrainTab:
    """What other tabs wire to: the shown run, the "Chat with this run" button and the tab's status line."""

    view: gr.Dropdown
    chat_btn: gr.Button
    status: gr.Markdown
    dataset: gr.Dropdown | None = None  # the form's dataset (a dataset saved in the Dataset tab is picked here)
    actions: TrainActions | None = None
    remember: dict | None = None  # event arguments that keep the form in this browser (after a change made for it)
    form: list | None = None  # the settings' components, in FORM order
    continue_box: gr.Accordion | None = None  # "Continue from an adapter": opened when a hand-off sets the parent


def _settings_form(d: dict, choices: dict) -> dict:
    """The settings, in accordions, each with its help text; returns {field name: component}."""
    help_ = TrainSettings.help()
    c: dict[str, gr.components.Component] = {}

    def num(name, label, precision=None):
        c[name] = gr.Number(value=d[name], label=label, info=help_[name], precision=precision)

    with gr.Row():
        c["model"] = dynamic(
            gr.Dropdown(
                choices["models"],
                value=d["model"],
                label="model",
                info=help_["model"],
                allow_custom_value=True,
                elem_id="train-model",
            )
        )
        c["dataset"] = dynamic(
            gr.Dropdown(
                choices["datasets"], value=d["dataset"], label="dataset", info=help_["dataset"], allow_custom_value=True
            )
        )
        c["template"] = gr.Radio(["alpaca", "chat"], value=d["template"], label="template", info=help_["template"])
        c["enable_thinking"] = gr.Checkbox(
            value=d["enable_thinking"] and choices["thinking"],
            label="Qwen3 thinking",
            visible=choices["thinking"],
            elem_id="train-thinking",
        )
        num("max_seq_length", "max sequence length", 0)
    with gr.Row():
        c["method"] = gr.Radio(
            [(METHOD_NAMES.get(m, m), m) for m in METHODS],
            value=d["method"],
            label="training method",
            info=help_["method"],
            elem_id="train-method",
        )
        c["dpo_beta"] = gr.Number(
            value=d["dpo_beta"],
            label="DPO beta",
            info=help_["dpo_beta"],
            visible=d["method"] == "dpo",
            minimum=0,
            elem_id="train-dpo-beta",
        )
    with gr.Row(visible=d["method"] == "grpo", elem_id="train-grpo") as grpo_box:
        c["rewards"] = gr.Dropdown(
            REWARD_PRESETS,
            value=d["rewards"],
            multiselect=True,
            allow_custom_value=True,
            label="rewards (pick presets or type KIND:ARG@WEIGHT)",
            info=help_["rewards"],
            elem_id="train-rewards",
            scale=3,
        )
        num("grpo_generations", "answers per prompt", 0)
        num("grpo_max_tokens", "answer tokens", 0)
        num("grpo_temperature", "sampling temperature")
    c["grpo_box"] = grpo_box  # (not a setting: shown for the GRPO method)
    with gr.Accordion("LoRA", open=True), gr.Row():
        num("r", "rank r", 0)
        num("lora_alpha", "alpha")
        num("lora_dropout", "dropout")
        c["target_modules"] = gr.CheckboxGroup(ALL_LINEAR, value=d["target_modules"], label="target modules")
        c["use_rslora"] = gr.Checkbox(value=d["use_rslora"], label="rsLoRA")
        c["load_in_4bit"] = gr.Checkbox(value=d["load_in_4bit"], label="4-bit (QLoRA)")
    with gr.Accordion("Optimisation", open=True), gr.Row():
        for name, label, precision in (
            ("learning_rate", "learning rate", None),
            ("num_epochs", "epochs", None),
            ("max_steps", "max steps (-1: epochs)", 0),
            ("micro_batch_size", "micro batch", 0),
            ("gradient_accumulation_steps", "grad. accumulation", 0),
            ("warmup", "warmup (steps, or ratio < 1)", None),
        ):
            num(name, label, precision)
        c["lr_scheduler"] = gr.Dropdown(list(SCHEDULERS), value=d["lr_scheduler"], label="scheduler")
        num("weight_decay", "weight decay")
        c["optimizer"] = gr.Dropdown(list(OPTIMIZERS), value=d["optimizer"], label="optimizer")
        num("seed", "seed", 0)
    with gr.Accordion("Data, logging, saving", open=False):
        with gr.Row(elem_id="train-data-switches"):  # their own row, wide enough for each label and help text
            c["train_on_responses_only"] = gr.Checkbox(
                value=d["train_on_responses_only"], label="train on responses only", min_width=260
            )
            c["packing"] = gr.Checkbox(value=d["packing"], label="packing", info=help_["packing"], min_width=260)
            c["padding_free"] = gr.Checkbox(
                value=d["padding_free"], label="padding-free batches", info=help_["padding_free"], min_width=260
            )
            c["auto_micro_batch"] = gr.Checkbox(
                value=d["auto_micro_batch"],
                label="auto micro batch (CUDA)",
                info=help_["auto_micro_batch"],
                min_width=260,
            )
        _data_numbers(num, c)
        # TensorBoard is always on (RUN_DIR/tensorboard); W&B / MLflow only when picked and configured by the user.
        c["report_to"] = gr.CheckboxGroup(
            list(TRACKERS),
            value=d["report_to"],
            label="also report to",
            info=help_["report_to"],
            elem_id="train-report-to",
        )
    c.update(_continue_and_probes(d, choices["parents"], help_))
    c["num_processes"] = _gpus_box(choices["gpus"], help_)
    c.update(_machines(d, choices["gpus"], help_))
    return c


def _machines(d: dict, gpus: int, help_: dict) -> dict:
    """One run over several machines: this app starts node 0's part (or another's); every other machine runs the
    command the plan shows. FSDP only where there are GPUs to shard over (accelerate has no CPU FSDP)."""
    c = {}
    with gr.Accordion("Several machines · FSDP", open=False, elem_id="train-machines"), gr.Row():
        c["num_nodes"] = gr.Number(
            value=d["num_nodes"], label="machines (nodes)", info=help_["num_nodes"], precision=0, minimum=1
        )
        c["node_rank"] = gr.Number(
            value=d["node_rank"], label="this machine's node rank", info=help_["node_rank"], precision=0, minimum=0
        )
        c["master_addr"] = gr.Textbox(value=d["master_addr"], label="node 0's address", info=help_["master_addr"])
        c["master_port"] = gr.Number(
            value=d["master_port"],
            label="rendezvous port",
            info=help_["master_port"],
            precision=0,
            minimum=1,
            maximum=65535,
        )
        c["fsdp"] = gr.Checkbox(
            value=d["fsdp"], label="FSDP (shard the model over the GPUs)", info=help_["fsdp"], visible=gpus > 1
        )
    return c


def _data_numbers(num, c: dict) -> None:
    with gr.Row():
        num("val_fraction", "validation fraction")
        num("logging_steps", "logging steps", 0)
        num("eval_steps", "eval steps", 0)
        num("save_steps", "checkpoint every N steps (0: auto, about 5; -1: none)", 0)
        num("keep_checkpoints", "keep the newest N checkpoints", 0)
        c["run_name"] = gr.Textbox(value="", label="run name (optional)")


def _gpus_box(gpus: int, help_: dict):
    # more than one GPU: train on N of them (DDP, transformers + PEFT; see the help text)
    return gr.Number(
        value=gpus if gpus > 1 else 1,
        precision=0,
        label=msg("GPUs: N (of {gpus})", gpus=gpus),
        info=help_["num_processes"],
        visible=gpus > 1,
        minimum=1,
        maximum=max(gpus, 1),
    )


def _continue_and_probes(d: dict, parents: list, help_: dict) -> dict:
    c = {}
    with gr.Accordion("Continue from an adapter · probe prompts", open=False) as box, gr.Row():
        c["init_adapter"] = dynamic(
            gr.Dropdown(
                parents,
                value="",
                label="continue from (parent adapter)",
                info=help_["init_adapter"],
                elem_id="train-parent",
                allow_custom_value=True,
            )
        )
        c["probe_prompts"] = gr.Textbox(
            value="\n".join(d["probe_prompts"]),
            lines=3,
            label="probe prompts (one per line)",
            info=help_["probe_prompts"],
            elem_id="train-probes",
        )
        c["probe_tokens"] = gr.Number(
            value=d["probe_tokens"], label="probe answer tokens (0: off)", info=help_["probe_tokens"], precision=0
        )
        c["probe_rows"] = gr.Number(
            value=d["probe_rows"],
            label="rows to probe (no prompts given)",
            info=help_["probe_rows"],
            precision=0,
            minimum=1,
            maximum=3,
        )
    c["continue_box"] = box  # (not a setting: opened when a hand-off fills the parent in)
    return c


def _wire_continue(act, view, status, comps: dict, resume_btn, continue_btn, watch: dict) -> None:
    """Resume the shown run; fill the form to continue from it; take a picked parent's base and LoRA shape."""
    resumed = resume_btn.click(
        act.resume, view, status, api_name="train_resume", concurrency_limit=1, concurrency_id="train_start"
    )
    show_errors(resumed, status)
    resumed.success(lambda: gr.Button(visible=False), None, resume_btn, api_visibility="private").success(**watch)
    form = [comps[k] for k in FORM]
    show_errors(continue_btn.click(act.continue_from, view, [*form, status], api_name="train_continue"), status)
    shape = [comps[k] for k in ("model", "r", "lora_alpha", "target_modules", "use_rslora")]
    parent = comps["init_adapter"]
    show_errors(parent.input(act.adopt_parent, parent, shape, api_visibility="private"), status)
    parent.focus(lambda: gr.Dropdown(choices=act.parents()), None, parent, api_visibility="private")


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _picked_run(evt: gr.SelectData):
    """A click in the runs table shows that run."""
    return evt.row_value[0] if evt.row_value else gr.skip()


def _run_row():
    """The shown run and what can be done with it. The list is filled when a page loads (TrainActions.lists); any
    session may name a run made after the app started (the engine checks the name)."""
    with gr.Row():
        view = dynamic(gr.Dropdown([], value=None, label="show run", elem_id="train-view", allow_custom_value=True))
        refresh = gr.Button("↻ runs", size="sm")
        chat_btn = gr.Button("💬 Chat with this run", elem_id="train-chat", interactive=False)  # a run shown: on
        resume_btn = gr.Button("⏯ Resume", elem_id="train-resume", visible=False)
        continue_btn = gr.Button("➕ Continue training from this run", elem_id="train-continue")
        delete_btn = gr.Button("🗑 Delete run", size="sm", elem_id="train-delete")
        confirm_btn = gr.Button(
            "Confirm delete", variant="stop", size="sm", visible=False, elem_id="train-delete-confirm"
        )
    return view, refresh, chat_btn, resume_btn, continue_btn, delete_btn, confirm_btn


def _wire_delete(act, view, status, delete_btn, confirm_btn, resume_btn, runs_table, progress) -> None:
    """🗑 Delete run asks and shows Confirm delete; that deletes (/train_delete: run name, confirm=True). Showing
    another run takes the question back."""
    armed = gr.Checkbox(value=False, visible=False)  # the endpoint's explicit confirmation
    show_errors(delete_btn.click(act.ask_delete, view, [status, confirm_btn, armed], api_visibility="private"), status)
    deleted = confirm_btn.click(
        act.delete,
        [view, armed],
        [status, runs_table, view, confirm_btn, armed, resume_btn, progress],
        api_name="train_delete",
        concurrency_limit=1,
        concurrency_id="train_start",
    )
    show_errors(deleted, status)
    view.change(
        lambda: (gr.Button(visible=False), False),
        None,
        [confirm_btn, armed],
        api_visibility="private",
        show_progress="hidden",
    )


def _watch_panel():
    """The live view of the shown run: progress bar, loss curve beside the probe timeline, log tail."""
    progress = dynamic(gr.HTML(progress_html({}, [], None, lang()), elem_id="train-progress-box"))
    with gr.Row(equal_height=False):
        curve = gr.Plot(empty_loss_figure(None, lang()), label="loss and learning rate", elem_id="train-curve", scale=3)
        timeline = dynamic(
            gr.HTML(
                probes.timeline_html([], lang()),
                label="probe answers as it learns",
                elem_id="train-probe-box",
                max_height=420,
                padding=True,
                scale=2,
            )
        )
    # Tall enough for the whole tail (LOG_TAIL_LINES, plus a long line's scrollbar): the newest line is always shown.
    log = gr.Code(label="log (tail)", language=None, lines=10, max_lines=LOG_TAIL_LINES + 2, elem_id="train-log")
    return progress, curve, timeline, log


def _compare_runs(act) -> None:
    """Compare runs: pick several (e.g. two learning rates); their loss curves on one plot, the table below. The list
    is filled when a page loads and on focus (the built page names no run); each visitor's picks are their own."""
    with gr.Accordion("Compare runs", open=False, elem_id="train-compare"):
        picks = dynamic(
            gr.Dropdown(
                [],
                value=[],
                multiselect=True,
                allow_custom_value=True,
                label="runs to compare",
                elem_id="train-compare-runs",
            )
        )
        plot = gr.Plot(
            compare_figure(None, lang()), label="loss curves of the compared runs", elem_id="train-compare-plot"
        )
        note = dynamic(gr.Markdown(elem_id="train-compare-note"))
        table = gr.Dataframe(value=compare_frame(None), label="compared runs", interactive=False)
    choices = dict(
        fn=act.compare_choices, inputs=picks, outputs=picks, api_visibility="private", show_progress="hidden"
    )
    on_load(**choices)
    picks.focus(**choices)
    show_errors(picks.change(act.compare, picks, [plot, table, note], api_name="train_compare"), note)
    on_language(act.recompare, picks, [plot, table, note])


def create_train_tab(lab, tab: gr.Tab) -> TrainTab:
    act = TrainActions(lab)
    d = defaults_for(detect().device, lab.default_model).to_dict()
    choices = {
        "models": list(dict.fromkeys([d["model"], *REGISTRY])),
        "datasets": act.dataset_choices(saved=False),
        "gpus": visible_gpus(),
        "parents": act.parents()[:1],  # the user's work: filled at page load
        "thinking": lab.thinking_offered(d["model"]),
    }
    comps = _settings_form(d, choices)
    comps["model"].change(
        act.thinking, comps["model"], comps["enable_thinking"], api_visibility="private", show_progress="hidden"
    )
    form = [comps[k] for k in FORM]
    with gr.Row():
        plan_btn = gr.Button("Check plan")
        start_btn = gr.Button("Start training", variant="primary", elem_id="train-start")
        stop_btn = gr.Button("Stop", elem_id="train-stop", interactive=False)  # on while a run is active
    plan_md = dynamic(gr.Markdown(elem_id="train-plan"))
    plan_state = gr.State(None)  # the plan shown, to render again in another language
    status = dynamic(gr.Markdown(elem_id="train-message"))
    progress, curve, timeline, log = _watch_panel()
    view, refresh, chat_btn, resume_btn, continue_btn, delete_btn, confirm_btn = _run_row()
    runs_table = gr.Dataframe(value=runs_frame(None), label="runs", interactive=False, max_height=300)
    _compare_runs(act)
    on_load(
        fn=act.lists,
        inputs=None,
        outputs=[comps["dataset"], comps["init_adapter"], view, runs_table, resume_btn],
        api_visibility="private",
        show_progress="hidden",
    )
    # The form survives a reload in this browser (localStorage; each browser its own): kept on every edit, Check
    # plan and Start, restored at page load after the lists are filled.
    memory = gr.BrowserState({}, storage_key="lora-lab-train-form")
    remember = dict(
        fn=act.remember, inputs=form, outputs=memory, api_visibility="private", show_progress="hidden", queue=False
    )
    # Gradio mounts the BrowserState after the page-load event may have run: the form is restored from whichever
    # comes first with the stored values, the load or the state's change (once per page: later changes are the
    # form's own edits being kept).
    restored = gr.State(False)
    restore = dict(
        fn=act.restore_once,
        inputs=[memory, restored],
        outputs=[*form, restored],
        api_visibility="private",
        show_progress="hidden",
    )
    on_load(**restore)
    memory.change(**restore)
    export_panel(act.lab, view)
    seen = gr.State(None)
    # Every 2 s (as LLaMA-Factory's board): each tick costs the browser ~90 ms of CPU on a 2-core machine that is
    # also training (bench/bench_watch_training.py), and a bar that moves every 2 s still reads as live.
    timer = gr.Timer(POLL_S, active=False)
    watch = dict(
        fn=lambda: gr.Timer(active=True), inputs=None, outputs=timer, api_visibility="private", show_progress="hidden"
    )

    one_at_a_time = dict(concurrency_limit=1, concurrency_id="train_start")
    comps["dataset"].focus(
        lambda m: gr.Dropdown(choices=act.dataset_choices(method=m)),
        comps["method"],
        comps["dataset"],
        api_visibility="private",
    )
    method = comps["method"].input(
        act.method_changed,
        [comps["method"], comps["dataset"], comps["init_adapter"]],
        [comps["dataset"], comps["dpo_beta"], comps["grpo_box"], status],
        api_visibility="private",
        show_progress="hidden",
    )
    method.then(**remember)
    # The method's own settings, shown whichever way the method was set (typed, restored, a hand-off, Continue).
    comps["method"].change(
        lambda m: (gr.Number(visible=m == "dpo"), gr.Row(visible=m == "grpo")),
        comps["method"],
        [comps["dpo_beta"], comps["grpo_box"]],
        api_visibility="private",
        show_progress="hidden",
        queue=False,
    )
    sink = pill_sink()  # a refused Start or Check plan: the message in the status line, no "Error" pill on the list
    show_errors(
        plan_btn.click(act.plan_kept, form, [plan_md, plan_state], api_name="train_plan", show_progress_on=sink), status
    )
    started = start_btn.click(
        act.start,
        form,
        [status, plan_md, view, plan_state],
        api_name="train_start",
        show_progress_on=sink,
        **one_at_a_time,
    )
    show_errors(started, status)
    started.success(**watch)
    gr.on([c.input for c in form] + [plan_btn.click, start_btn.click], **remember)
    run_buttons = dict(
        fn=act.buttons, inputs=None, outputs=[start_btn, stop_btn], api_visibility="private", show_progress="hidden"
    )
    started.success(**run_buttons)
    on_load(**run_buttons)  # a reloaded page re-attaches to the active run: Stop on, Start off
    show_errors(stop_btn.click(act.stop, None, status, api_name="train_stop", show_progress_on=sink), status)
    timer.tick(
        act.tick_and_buttons,
        [view, seen],
        [progress, curve, timeline, log, view, runs_table, resume_btn, seen, timer, start_btn, stop_btn],
        show_progress="hidden",
        api_visibility="private",
    )
    view.change(
        lambda name: gr.Button(interactive=bool(name)), view, chat_btn, api_visibility="private", show_progress="hidden"
    )
    _wire_continue(act, view, status, comps, resume_btn, continue_btn, watch)
    _wire_delete(act, view, status, delete_btn, confirm_btn, resume_btn, runs_table, progress)
    tab.select(**watch)
    view.change(**watch)
    refresh.click(act.refresh_runs, None, [runs_table, view], api_name="train_runs").then(**watch)
    runs_table.select(_picked_run, None, view, api_visibility="private")
    on_language(act.replan, plan_state, plan_md)
    on_language(act.relabel, view, [progress, timeline, runs_table, seen, timer])
    return TrainTab(
        view=view,
        chat_btn=chat_btn,
        status=status,
        dataset=comps["dataset"],
        actions=act,
        remember=remember,
        form=form,
        continue_box=comps["continue_box"],
    )
