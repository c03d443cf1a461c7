"""Train tab: settings, plan with warnings, one-click start, live progress and loss curve, stop, runs, export.

Layout only: the form is generated from TrainSettings' fields (train/settings.py says how each is shown: label,
section, widget, limits), the components are laid out by small functions and wired to TrainActions, whose methods
call the LabEngine (lora_demo/engine.py; its `train` object for the tab's own lists and runs) and render with the
views of ui/views/train.py. Each action can be called without launching the app.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from lora_demo.engine import LabEngine
from lora_demo.errors import InputError
from lora_demo.i18n import msg
from lora_demo.ui.common import dynamic, friendly, lang, on_language, on_load, pill_sink, say, show, show_errors
from lora_demo.ui.export_panel import export_panel
from lora_demo.ui.views.train import (
    compare_figure,
    compare_frame,
    empty_loss_figure,
    loss_figure,
    progress_html,
    runs_frame,
    timeline_html,
)

# The form's fields (TrainSettings' fields, each with how it is shown), in the order the handlers and the
# /train_plan and /train_start endpoints receive them.
FIELDS = LabEngine.train_form()
FORM = [f["name"] for f in FIELDS]
POLL_S = 2.0  # seconds between the Train tab's looks at an active run


def idle():
    """No run to watch and nothing left to draw: the page stops polling until Start, the tab or ↻ wakes it."""
    return gr.Timer(active=False)


def settings_from_form(values):
    """TrainSettings from the form's values, in FORM order (numbers from gr.Number may arrive as floats or None)."""
    return LabEngine.settings_from_form(dict(zip(FORM, values, strict=True)))


def form_values(s, parents: list) -> list:
    """The form's values for settings s (the inverse of settings_from_form), in FORM order."""
    d = s.to_dict()
    d["probe_prompts"] = "\n".join(s.probe_prompts)
    d["init_adapter"] = gr.Dropdown(choices=parents, value=s.init_adapter)
    d["num_processes"] = max(1, min(s.num_processes, LabEngine.visible_gpus()))  # the parent's GPUs may not be here
    return [d[k] for k in FORM]


def shown_choices(choices: list) -> list:
    """A list's choices with their labels in this session's language (a label may be a Msg)."""
    return [(show(c[0]), c[1]) if isinstance(c, tuple) else c for c in choices]


class TrainActions:
    """The Train tab's event handlers, over one LabEngine. `ui` names the tab's components once it is built (the
    handlers that update several of them return {component: value}: what they leave out stays as it is)."""

    def __init__(self, lab):
        self.lab = lab
        self.ui: dict = {}

    def dataset_choices(self, saved: bool = True, method: str = "sft") -> list:
        """The examples, then (saved=True) the data folder's datasets, read now (the built page lists examples only).
        A DPO run's: preference pairs instead (the parent's votes, each run's votes, the saved preference sets)."""
        return shown_choices(self.lab.train.dataset_choices(saved, method))

    def method_changed(self, method, dataset, parent):
        """Another training method: its datasets (a DPO run learns from preference pairs: votes or a preference
        set; SFT and GRPO from instruction rows), its own settings shown, and what it needs said."""
        choices = self.dataset_choices(method=method)
        values = [c[1] if isinstance(c, tuple) else c for c in choices]
        keep = dataset in values or (method != "dpo" and not self.lab.train.is_preferences(dataset))
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

    def restore(self, stored) -> list:
        """At page load: the form as this browser last left it, in FORM order (what is missing or no longer there
        stays default)."""
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
                gpus = LabEngine.visible_gpus()
                out.append(max(1, min(int(v), gpus)) if isinstance(v, (int, float)) else gr.skip())
            else:
                out.append(v)
        return out

    def restore_once(self, stored, done) -> dict:
        """restore(), the first time this page has stored values to restore; nothing after that."""
        if done or not (isinstance(stored, dict) and stored):
            return gr.skip()  # (an empty dict is refused by Gradio: "not enough output values")
        return {**dict(zip(self._form(), self.restore(stored), strict=True)), self.ui["restored"]: True}

    def _form(self) -> list:
        return [self.ui[k] for k in FORM]

    def lists(self):
        """At page load, this session's lists of the user's work, read now (the built page names none): datasets,
        parent adapters, runs (the newest shown), the runs table, Resume for the shown run."""
        names = self.lab.train.run_names()
        shown = names[0] if names else None
        return (
            gr.Dropdown(choices=self.dataset_choices()),
            gr.Dropdown(choices=self.parents()),
            gr.Dropdown(choices=names, value=shown),
            self._runs_frame(),
            gr.Button(visible=bool(shown) and self.lab.train.resumable(shown)),
        )

    def _runs_frame(self):
        return runs_frame(self.lab.train.runs(), lang())

    @friendly
    def plan(self, *values) -> str:
        return self.lab.train.plan_text(self.lab.plan(settings_from_form(values)), lang())

    @friendly
    def plan_kept(self, *values):
        """The Check plan button: the plan in this session's language, and the plan itself (a gr.State, to render
        it again when the language is switched)."""
        plan = self.lab.plan(settings_from_form(values))
        return self.lab.train.plan_text(plan, lang()), plan

    @friendly
    def start(self, *values):
        run_dir, plan = self.lab.start_training(settings_from_form(values))
        started = say(
            "Started **{name}**. Same run from a terminal: `{command}`",
            name=run_dir.name,
            command=self.lab.train.command(run_dir),
        )
        view = gr.Dropdown(choices=self.lab.train.run_names(), value=run_dir.name)
        return started, self.lab.train.plan_text(plan, lang()), view, plan

    @friendly
    def resume(self, name):
        step, skipped = self.lab.train.resume(name)
        notes = "".join(
            "\n- ⚠️ " + say("{why} It was set aside (renamed corrupt-…), and the previous one used.", why=m)
            for m in skipped
        )
        resuming = say(
            "Resuming **{name}** from checkpoint step {step}: same folder, same curve.", name=name, step=step
        )
        return resuming + notes

    def parents(self) -> list:
        """The 'continue from' list: first 'new LoRA factors' (start a fresh adapter, in this session's language),
        then the adapters of the runs folder."""
        return [(say("— new LoRA factors —"), ""), *self.lab.adapter_choices(lang())]

    @friendly
    def continue_from(self, name):
        """'Continue training': the form filled with the shown run's settings, starting from its adapter."""
        path = self.lab.train.adapter_or_checkpoint(name)
        s = self.lab.continue_settings(path)
        told = say(
            "The form now continues from **{name}**: its settings, starting from its adapter. Pick a dataset "
            "(the same or a new one), adjust epochs or learning rate, and press Start; the new run records its "
            "parent.",
            name=name,
        )
        return *self.form_for(s), told

    def form_for(self, s) -> list:
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
            name=self.lab.train.adapter_name(adapter),
        )
        return *self.form_for(s), told

    def thinking(self, model):
        """The 'Qwen3 thinking' switch, shown only for a model whose chat template reads it (off otherwise)."""
        return (
            gr.Checkbox(visible=True) if self.lab.thinking_offered(model) else gr.Checkbox(visible=False, value=False)
        )

    @friendly
    def adopt_parent(self, adapter) -> dict:
        """Picking an adapter to continue from takes its base model and LoRA shape, which must match it."""
        if not adapter:
            return gr.skip()
        s = self.lab.continue_settings(adapter)
        return {self.ui[k]: getattr(s, k) for k in ("model", "r", "lora_alpha", "target_modules", "use_rslora")}

    @friendly
    def stop(self) -> str:
        return show(self.lab.train.stop())  # what it does at the run's stage: nothing saved while the model loads

    @friendly
    def ask_delete(self, name):
        """🗑: say what would be deleted and show 'Confirm delete' (armed: the confirmation the endpoint needs)."""
        self.lab.train.check_delete(name)
        asked = say(
            "Delete **{name}** and everything in it (adapter, checkpoints, log, data snapshot)? This cannot be "
            "undone: press **Confirm delete**.",
            name=name,
        )
        return asked, gr.Button(visible=True), True

    @friendly
    def delete(self, name, confirm) -> dict:
        """Delete the shown run (confirm must be True: the page sets it with 🗑 → Confirm delete); refresh the lists."""
        if confirm is not True:
            raise InputError(
                msg(
                    "Deleting a run cannot be undone: confirm it (🗑 Delete run, then Confirm delete; "
                    "through the API pass confirm=True)."
                )
            )
        self.lab.delete_run(name)
        names = self.lab.train.run_names()
        shown = names[0] if names else None
        ui = self.ui
        out = {
            ui["status"]: say("Deleted **{name}**.", name=name),
            ui["runs_table"]: self._runs_frame(),
            ui["view"]: gr.Dropdown(choices=names, value=shown),
            ui["confirm_btn"]: gr.Button(visible=False),
            ui["armed"]: False,
            ui["resume_btn"]: gr.Button(visible=bool(shown) and self.lab.train.resumable(shown)),
        }
        if not shown:
            out[ui["progress"]] = progress_html({}, [], None, lang())
        return out

    def tick(self, shown, seen_before) -> dict:
        """Redraw only what changed (LabEngine.train.look): on 2 cores the page competes with the training. The timer
        runs while there is something to watch (started by Start, the tab's selection or ↻) and stops itself."""
        ui, active = self.ui, self.lab.train.active()
        name = active or shown
        if not self.lab.train.has_run(name):
            return {ui["timer"]: idle()}
        now = self.lab.train.look(name, seen_before)
        if not now.changed and not now.curve:
            return {ui["seen"]: now.seen} if active else {ui["seen"]: now.seen, ui["timer"]: idle()}
        before = (seen_before or {}).get("key") or [None]
        run_dir = self.lab.runs_dir / name
        new_run = (seen_before or {}).get("run") != str(run_dir)  # another run shown: its buttons, not the last one's
        status_changed = now.status is not None and (new_run or before[0] != now.status.get("status"))
        here = lang()
        out = {ui["seen"]: now.seen}
        if now.status is not None:
            out[ui["progress"]] = progress_html(now.status, now.progress, run_dir, here)
        if now.curve:
            out[ui["curve"]] = loss_figure(now.progress, msg("Run {name}", name=name), here)
            out[ui["timeline"]] = timeline_html(self.lab.train.probe_points(name), here)
        if now.log is not None:
            out[ui["log"]] = now.log
        if name != shown:
            out[ui["view"]] = gr.Dropdown(choices=self.lab.train.run_names(), value=name)
        if status_changed:
            out[ui["runs_table"]] = self._runs_frame()
            out[ui["resume_btn"]] = gr.Button(visible=self.lab.train.resumable(name))
        return out

    def buttons(self):
        """Start off and Stop on while a run is active (a reloaded page re-attaches to it); the other way round
        once it has ended."""
        running = self.lab.train.active() is not None
        return gr.Button(interactive=not running), gr.Button(interactive=running)

    def tick_and_buttons(self, shown, seen_before) -> dict:
        start, stop = self.buttons()
        return {**self.tick(shown, seen_before), self.ui["start_btn"]: start, self.ui["stop_btn"]: stop}

    def relabel(self, shown) -> dict:
        """After a language switch: the runs table now; the shown run's panels at the next tick (its `seen` is
        cleared, so everything is redrawn, and the timer woken); the empty panels now when no run is shown."""
        ui, here = self.ui, lang()
        out = {ui["runs_table"]: self._runs_frame(), ui["seen"]: None}
        if self.lab.train.has_run(shown):
            return {**out, ui["timer"]: gr.Timer(active=True)}
        return {**out, ui["progress"]: progress_html({}, [], None, here), ui["timeline"]: timeline_html([], here)}

    def replan(self, plan):
        """The last plan shown, in the language just chosen."""
        return self.lab.train.plan_text(plan, lang()) if plan else gr.skip()

    def compare_choices(self, picked):
        """The runs to compare: the runs folder's, read now (newest first); the picks that are still there stay."""
        names = self.lab.train.run_names()
        picked = [p for p in picked or [] if p in names] if isinstance(picked, list) else []
        return gr.Dropdown(choices=names, value=picked)

    @friendly
    def compare(self, names):
        """The picked runs' loss curves on one plot, their table, and which settings differ (nothing picked: the
        empty chart says what to pick)."""
        return self._compared(self.lab.compare_runs(names) if names else None)

    def recompare(self, names):
        """After a language switch: the comparison shown, in the new language (left as it is if it cannot be made
        again, e.g. a picked run was deleted meanwhile: the next pick says why)."""
        try:
            result = self.lab.compare_runs(names) if names else None
        except InputError:
            return gr.skip(), gr.skip(), gr.skip()
        return self._compared(result)

    def _compared(self, result):
        here, columns = lang(), self.lab.train.COMPARE_COLUMNS
        note = show(self.lab.train.compare_note(result)) if result else ""
        return compare_figure(result, here), compare_frame(result, columns, here), note

    def refresh_runs(self):
        self.lab.train.refresh()  # a run whose worker is gone (killed, app restarted) is recorded as failed
        return self._runs_frame(), gr.Dropdown(choices=self.lab.train.run_names())


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


# The form's widgets (TrainSettings' `widget`), and the widget arguments a setting may give (train/settings.py _f).
WIDGETS = {
    "number": gr.Number,
    "checkbox": gr.Checkbox,
    "text": gr.Textbox,
    "dropdown": gr.Dropdown,
    "radio": gr.Radio,
    "checkboxes": gr.CheckboxGroup,
}
LOOK = ("elem_id", "minimum", "maximum", "lines", "scale", "multiselect", "allow_custom_value")


def _component(f: dict, value, live: dict):
    """One setting's component: its label, help line, choices and limits as TrainSettings gives them, then what only
    the page knows (`live`: the lists read when it is built, a label with the GPU count, what is shown)."""
    kw = {"value": value, "label": f["label"], **{k: f[k] for k in LOOK if k in f}}
    if f.get("info", True):
        kw["info"] = f["help"]
    if f["widget"] == "number" and f["type"] == "int":
        kw["precision"] = 0
    if f["options"] is not None:
        names = f.get("names")
        kw["choices"] = [(names.get(o, o), o) for o in f["options"]] if names else list(f["options"])
    kw.update(live)
    component = WIDGETS[f["widget"]](**kw)
    return dynamic(component) if "choices" in live else component  # the user's work or the registry: no fixed text


def _live(d: dict, page: dict) -> dict:
    """What only the page knows, by setting: the lists known when it is built, this machine's GPUs (the GPUs field
    and FSDP shown only above one), the switches shown for the default model and method."""
    gpus = page["gpus"]
    return {
        "model": {"choices": page["models"]},
        "dataset": {"choices": page["datasets"]},
        "init_adapter": {"choices": page["parents"], "value": ""},
        "enable_thinking": {"value": d["enable_thinking"] and page["thinking"], "visible": page["thinking"]},
        "dpo_beta": {"visible": d["method"] == "dpo"},
        "probe_prompts": {"value": "\n".join(d["probe_prompts"])},
        "num_processes": {  # more than one GPU: train on N of them (DDP, transformers + PEFT; see the help text)
            "value": gpus if gpus > 1 else 1,
            "label": msg("GPUs: N (of {gpus})", gpus=gpus),
            "visible": gpus > 1,
            "maximum": max(gpus, 1),
        },
        "fsdp": {"visible": gpus > 1},  # only where there are GPUs to shard over (accelerate has no CPU FSDP)
    }


def _settings_form(d: dict, page: dict) -> dict:
    """The settings, each in its section (TrainSettings' `group`, in `arg` order) with its help text; returns
    {field name: component}, and the GRPO row and the Continue accordion (not settings: shown or opened by
    handlers)."""
    groups: dict[str, list[dict]] = {}
    for f in FIELDS:
        groups.setdefault(f["group"], []).append(f)
    live, c = _live(d, page), {}

    def put(group: str, **look) -> None:
        for f in groups.pop(group):
            c[f["name"]] = _component(f, d[f["name"]], {**look, **live.get(f["name"], {})})

    with gr.Row():
        put("base")
    with gr.Row():
        put("method")
    with gr.Row(visible=d["method"] == "grpo", elem_id="train-grpo") as c["grpo_box"]:  # shown for the GRPO method
        put("grpo")
    with gr.Accordion("LoRA", open=True), gr.Row():
        put("lora")
    with gr.Accordion("Optimisation", open=True), gr.Row():
        put("optimisation")
    with gr.Accordion("Data, logging, saving", open=False):
        with gr.Row(elem_id="train-data-switches"):  # their own row, wide enough for each label and help text
            put("data-switches", min_width=260)
        with gr.Row():
            put("data-numbers")
            put("data-name")
        put("data-tracking")  # TensorBoard is always on (RUN_DIR/tensorboard); W&B / MLflow when picked and set up
    with gr.Accordion("Continue from an adapter · probe prompts", open=False) as c["continue_box"], gr.Row():
        put("continue")  # (the accordion is opened when a hand-off fills the parent in)
    put("gpus")
    # One run over several machines: this app starts node 0's part (or another's); every other machine runs the
    # command the plan shows.
    with gr.Accordion("Several machines · FSDP", open=False, elem_id="train-machines"), gr.Row():
        put("machines")
    assert not groups, f"settings in no section of the Train form: {sorted(groups)}"
    return c


def _form_on_page(act: TrainActions) -> dict:
    """The settings form with this device's defaults and the lists known when the page is built (the user's work
    is filled in at page load); the thinking switch follows the model."""
    lab = act.lab
    d = lab.train.form_defaults()
    page = {
        "models": list(dict.fromkeys([d["model"], *lab.model_choices()])),
        "datasets": act.dataset_choices(saved=False),
        "gpus": LabEngine.visible_gpus(),
        "parents": act.parents()[:1],  # the user's work: filled at page load
        "thinking": lab.thinking_offered(d["model"]),
    }
    comps = _settings_form(d, page)
    comps["model"].change(
        act.thinking, comps["model"], comps["enable_thinking"], api_visibility="private", show_progress="hidden"
    )
    return comps


def _controls() -> dict:
    """Check plan, Start, Stop; the plan and the status line under them."""
    with gr.Row():
        plan_btn = gr.Button("Check plan")
        start_btn = gr.Button("Start training", variant="primary", elem_id="train-start")
        stop_btn = gr.Button("Stop", elem_id="train-stop", interactive=False)  # on while a run is active
    plan_md = dynamic(gr.Markdown(elem_id="train-plan"))
    plan_state = gr.State(None)  # the plan shown, to render again in another language
    status = dynamic(gr.Markdown(elem_id="train-message"))
    return dict(
        plan_btn=plan_btn, start_btn=start_btn, stop_btn=stop_btn, plan_md=plan_md, plan_state=plan_state, status=status
    )


def _wire_continue(act: TrainActions, watch: dict) -> None:
    """Resume the shown run; fill the form to continue from it; take a picked parent's base and LoRA shape."""
    ui = act.ui
    view, status, resume_btn = ui["view"], ui["status"], ui["resume_btn"]
    resumed = resume_btn.click(
        act.resume, view, status, api_name="train_resume", concurrency_limit=1, concurrency_id="train_start"
    )
    show_errors(resumed, status)
    resumed.success(lambda: gr.Button(visible=False), None, resume_btn, api_visibility="private").success(**watch)
    form = [ui[k] for k in FORM]
    continued = ui["continue_btn"].click(act.continue_from, view, [*form, status], api_name="train_continue")
    show_errors(continued, status)
    shape = [ui[k] for k in ("model", "r", "lora_alpha", "target_modules", "use_rslora")]
    parent = ui["init_adapter"]
    show_errors(parent.input(act.adopt_parent, parent, shape, api_visibility="private"), status)
    parent.focus(lambda: gr.Dropdown(choices=act.parents()), None, parent, api_visibility="private")


def _picked_run(evt: gr.SelectData):
    """A click in the runs table shows that run."""
    return evt.row_value[0] if evt.row_value else gr.skip()


def _run_row() -> dict:
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
    return dict(
        view=view,
        refresh=refresh,
        chat_btn=chat_btn,
        resume_btn=resume_btn,
        continue_btn=continue_btn,
        delete_btn=delete_btn,
        confirm_btn=confirm_btn,
    )


def _wire_delete(act: TrainActions) -> None:
    """🗑 Delete run asks and shows Confirm delete; that deletes (/train_delete: run name, confirm=True). Showing
    another run takes the question back."""
    ui = act.ui
    view, status, confirm_btn = ui["view"], ui["status"], ui["confirm_btn"]
    armed = ui["armed"] = gr.Checkbox(value=False, visible=False)  # the endpoint's explicit confirmation
    asked = ui["delete_btn"].click(act.ask_delete, view, [status, confirm_btn, armed], api_visibility="private")
    show_errors(asked, status)
    deleted = confirm_btn.click(
        act.delete,
        [view, armed],
        [status, ui["runs_table"], view, confirm_btn, armed, ui["resume_btn"], ui["progress"]],
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


def _watch_panel(act: TrainActions) -> dict:
    """The live view of the shown run: progress bar, loss curve beside the probe timeline, log tail."""
    progress = dynamic(gr.HTML(progress_html({}, [], None, lang()), elem_id="train-progress-box"))
    with gr.Row(equal_height=False):
        curve = gr.Plot(empty_loss_figure(None, lang()), label="loss and learning rate", elem_id="train-curve", scale=3)
        timeline = dynamic(
            gr.HTML(
                timeline_html([], lang()),
                label="probe answers as it learns",
                elem_id="train-probe-box",
                max_height=420,
                padding=True,
                scale=2,
            )
        )
    # Tall enough for the whole tail (LOG_TAIL_LINES, plus a long line's scrollbar): the newest line is always shown.
    tail = act.lab.train.LOG_TAIL_LINES
    log = gr.Code(label="log (tail)", language=None, lines=10, max_lines=tail + 2, elem_id="train-log")
    return dict(progress=progress, curve=curve, timeline=timeline, log=log)


def _compare_runs(act: TrainActions) -> None:
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
        empty = compare_frame(None, act.lab.train.COMPARE_COLUMNS, lang())
        table = gr.Dataframe(value=empty, label="compared runs", interactive=False)
    choices = dict(
        fn=act.compare_choices, inputs=picks, outputs=picks, api_visibility="private", show_progress="hidden"
    )
    on_load(**choices)
    picks.focus(**choices)
    show_errors(picks.change(act.compare, picks, [plot, table, note], api_name="train_compare"), note)
    on_language(act.recompare, picks, [plot, table, note])


def _runs_and_lists(act: TrainActions) -> None:
    """The runs table and Compare runs; at page load, this session's lists of the user's work."""
    ui = act.ui
    ui["runs_table"] = gr.Dataframe(value=runs_frame(None, lang()), label="runs", interactive=False, max_height=300)
    _compare_runs(act)
    on_load(
        fn=act.lists,
        inputs=None,
        outputs=[ui["dataset"], ui["init_adapter"], ui["view"], ui["runs_table"], ui["resume_btn"]],
        api_visibility="private",
        show_progress="hidden",
    )


def _wire_memory(act: TrainActions, form: list) -> dict:
    """The form survives a reload in this browser (localStorage; each browser its own): kept on every edit, Check
    plan and Start, restored at page load after the lists are filled. Returns the event arguments that keep it."""
    memory = gr.BrowserState({}, storage_key="lora-lab-train-form")
    remember = dict(
        fn=act.remember, inputs=form, outputs=memory, api_visibility="private", show_progress="hidden", queue=False
    )
    # Gradio mounts the BrowserState after the page-load event may have run: the form is restored from whichever
    # comes first with the stored values, the load or the state's change (once per page: later changes are the
    # form's own edits being kept).
    restored = act.ui["restored"] = gr.State(False)
    restore = dict(
        fn=act.restore_once,
        inputs=[memory, restored],
        outputs=[*form, restored],
        api_visibility="private",
        show_progress="hidden",
    )
    on_load(**restore)
    memory.change(**restore)
    return remember


def _wire_method(act: TrainActions, remember: dict) -> None:
    """The dataset list of the picked method (read on focus); another method: its datasets and its own settings."""
    ui = act.ui
    ui["dataset"].focus(
        lambda m: gr.Dropdown(choices=act.dataset_choices(method=m)),
        ui["method"],
        ui["dataset"],
        api_visibility="private",
    )
    method = ui["method"].input(
        act.method_changed,
        [ui["method"], ui["dataset"], ui["init_adapter"]],
        [ui["dataset"], ui["dpo_beta"], ui["grpo_box"], ui["status"]],
        api_visibility="private",
        show_progress="hidden",
    )
    method.then(**remember)
    # The method's own settings, shown whichever way the method was set (typed, restored, a hand-off, Continue).
    ui["method"].change(
        lambda m: (gr.Number(visible=m == "dpo"), gr.Row(visible=m == "grpo")),
        ui["method"],
        [ui["dpo_beta"], ui["grpo_box"]],
        api_visibility="private",
        show_progress="hidden",
        queue=False,
    )


def _wire_run(act: TrainActions, form: list, remember: dict, watch: dict) -> None:
    """Check plan, Start (then watch the run; Start off and Stop on while it trains), Stop; the form kept on each."""
    ui = act.ui
    status, plan_md, plan_state = ui["status"], ui["plan_md"], ui["plan_state"]
    sink = pill_sink()  # a refused Start or Check plan: the message in the status line, no "Error" pill on the list
    planned = ui["plan_btn"].click(
        act.plan_kept, form, [plan_md, plan_state], api_name="train_plan", show_progress_on=sink
    )
    show_errors(planned, status)
    started = ui["start_btn"].click(
        act.start,
        form,
        [status, plan_md, ui["view"], plan_state],
        api_name="train_start",
        show_progress_on=sink,
        concurrency_limit=1,
        concurrency_id="train_start",
    )
    show_errors(started, status)
    started.success(**watch)
    gr.on([c.input for c in form] + [ui["plan_btn"].click, ui["start_btn"].click], **remember)
    run_buttons = dict(
        fn=act.buttons,
        inputs=None,
        outputs=[ui["start_btn"], ui["stop_btn"]],
        api_visibility="private",
        show_progress="hidden",
    )
    started.success(**run_buttons)
    on_load(**run_buttons)  # a reloaded page re-attaches to the active run: Stop on, Start off
    stopped = ui["stop_btn"].click(act.stop, None, status, api_name="train_stop", show_progress_on=sink)
    show_errors(stopped, status)


def _wire_watch(act: TrainActions, tab: gr.Tab, watch: dict) -> None:
    """The timer's looks at the shown run; Chat, Resume, Continue and Delete for it; the tab, the list, ↻ and a click
    in the runs table wake the timer; a language switch renders the panels again."""
    ui = act.ui
    view = ui["view"]
    watched = ["progress", "curve", "timeline", "log", "view", "runs_table", "resume_btn", "seen", "timer"]
    ui["timer"].tick(
        act.tick_and_buttons,
        [view, ui["seen"]],
        [ui[k] for k in [*watched, "start_btn", "stop_btn"]],
        show_progress="hidden",
        api_visibility="private",
    )
    view.change(
        lambda name: gr.Button(interactive=bool(name)),
        view,
        ui["chat_btn"],
        api_visibility="private",
        show_progress="hidden",
    )
    _wire_continue(act, watch)
    _wire_delete(act)
    tab.select(**watch)
    view.change(**watch)
    ui["refresh"].click(act.refresh_runs, None, [ui["runs_table"], view], api_name="train_runs").then(**watch)
    ui["runs_table"].select(_picked_run, None, view, api_visibility="private")
    on_language(act.replan, ui["plan_state"], ui["plan_md"])
    on_language(act.relabel, view, [ui[k] for k in ("progress", "timeline", "runs_table", "seen", "timer")])


def create_train_tab(lab, tab: gr.Tab) -> TrainTab:
    act = TrainActions(lab)
    ui = act.ui
    ui.update(_form_on_page(act))
    form = [ui[k] for k in FORM]
    ui.update(_controls())
    ui.update(_watch_panel(act))
    ui.update(_run_row())
    _runs_and_lists(act)
    remember = _wire_memory(act, form)
    export_panel(act.lab, ui["view"])
    ui["seen"] = gr.State(None)
    # Every 2 s (as LLaMA-Factory's board): each tick costs the browser CPU time on a 2-core machine that is also
    # training (bench/bench_watch_training.py; README's Performance section), and a bar that moves every 2 s still
    # reads as live.
    ui["timer"] = gr.Timer(POLL_S, active=False)
    watch = dict(
        fn=lambda: gr.Timer(active=True),
        inputs=None,
        outputs=ui["timer"],
        api_visibility="private",
        show_progress="hidden",
    )
    _wire_method(act, remember)
    _wire_run(act, form, remember, watch)
    _wire_watch(act, tab, watch)
    return TrainTab(
        view=ui["view"],
        chat_btn=ui["chat_btn"],
        status=ui["status"],
        dataset=ui["dataset"],
        actions=act,
        remember=remember,
        form=form,
        continue_box=ui["continue_box"],
    )
