"""build_app: the LoRA Lab Blocks app, one tab per concept, all acting on one LabEngine."""

from __future__ import annotations

import gradio as gr

from lora_demo.engine import AppSettings, LabEngine
from lora_demo.i18n import LANGS, pick_lang
from lora_demo.ui import common
from lora_demo.ui.chat_tab import ChatTab, create_chat_tab
from lora_demo.ui.common import friendly, say, show_errors
from lora_demo.ui.dataset_tab import create_dataset_tab
from lora_demo.ui.localize import Localizer
from lora_demo.ui.lowrank_tab import create_lowrank_tab
from lora_demo.ui.system_tab import create_system_tab
from lora_demo.ui.train_tab import TrainTab, create_train_tab

# In the page: the switch's language also goes to Gradio's own texts (its upload boxes, toasts), through the
# changeLocale that its frontend module exports (found among the loaded scripts; skipped if absent). At load with
# no --lang, the browser's language decides.
_GRADIO_LOCALE_JS = """
function labLocale(lang) {
  try {
    const core = performance.getEntriesByType('resource').map((e) => e.name)
      .find((n) => /\\/assets\\/core-[^/]+\\.js(\\?|$)/.test(n));
    if (core) import(core).then((m) => m.changeLocale && m.changeLocale(lang === 'zh' ? 'zh-CN' : 'en'));
  } catch (e) {}
  return lang;
}
"""
SWITCH_JS = f"(lang) => {{ {_GRADIO_LOCALE_JS} return labLocale(lang); }}"
BROWSER_LANG_JS = (
    f"(lang) => {{ {_GRADIO_LOCALE_JS} "
    "return labLocale((navigator.language || '').toLowerCase().startsWith('zh') ? 'zh' : 'en'); }"
)
FIXED_LANG_JS = SWITCH_JS  # --lang given: that language, Gradio's texts too

# The first tab: where a newcomer starts (the workflow in three steps; the rest is there to learn and check).
START_HERE = """### Start here: three steps, all offline

1. **Dataset**: press *Load example* (or add your own rows), then *Validate* and *Save*.
2. **Train**: pick the model and the dataset, *Check plan*, then *Start training*; the loss curve and the probe
   answers show it learning.
3. **Chat**: press *💬 Chat with this run* on the Train tab, then *Send* a prompt: the base and the tuned model
   answer side by side.

To see why a low-rank update is enough, open the **Low-rank lab**; **System** shows this machine's device, backend
and the models usable offline."""


def build_app(settings: AppSettings | LabEngine | None = None, lang: str | None = None) -> gr.Blocks:
    """The app, laid out in `lang` ('en' or 'zh'); None: English, switched at page load to the browser's language."""
    lab = settings if isinstance(settings, LabEngine) else LabEngine(settings)
    start = pick_lang(lang)
    common.SESSION_LANG.default = start
    common.ON_LANGUAGE.clear()
    common.STATUS_LINES.clear()
    common.ON_LOAD.clear()
    with gr.Blocks(title="LoRA Lab") as demo:
        with gr.Row(equal_height=True):
            gr.Markdown("# LoRA Lab\nLearn why LoRA works, build a dataset, fine-tune, and compare base vs tuned.")
            switch = gr.Radio(
                [(name, code) for code, name in LANGS.items()],
                value=start,
                show_label=False,
                container=False,
                elem_id="lang-switch",
                scale=0,
                min_width=220,
            )
        with gr.Tabs() as tabs:
            with gr.Tab("Start here", id="start"):
                gr.Markdown(START_HERE, elem_id="start-here")
            with gr.Tab("Low-rank lab", id="lowrank") as lowrank_tab:
                create_lowrank_tab(lab, lowrank_tab)
            with gr.Tab("Dataset", id="dataset"):
                dataset_saved = create_dataset_tab(lab)
            with gr.Tab("Train", id="train") as train_tab:
                train = create_train_tab(lab, train_tab)
            with gr.Tab("Chat", id="chat") as chat_tab:
                chat = create_chat_tab(lab, chat_tab)
            with gr.Tab("System", id="system"):
                create_system_tab(lab)
        wire_chat_with_run(lab, tabs, train, chat)
        wire_saved_dataset(dataset_saved, train)
        wire_dpo_from_votes(tabs, train, chat)
        loaded = wire_language(demo, switch, follow_browser=lang is None, start=start)
        for event in common.ON_LOAD:  # after the page's language is known
            loaded.then(**event)
        common.ON_LOAD.clear()
    demo.lab = lab  # tests and scripts reach the engine of a built app here
    return demo


def wire_language(demo: gr.Blocks, switch: gr.Radio, follow_browser: bool, start: str):
    """The switch changes every captured text and re-renders the dynamic panels, for this browser session only.
    Returns the page-load event (its language set)."""
    loc = Localizer()
    loc.capture(demo, skip=[switch])
    if start != "en":
        loc.apply(start)
    statuses = list(common.STATUS_LINES)
    refreshers = [*common.ON_LANGUAGE, (common.rerender_errors(statuses), statuses, statuses)]
    common.ON_LANGUAGE.clear()
    common.STATUS_LINES.clear()

    def switch_to(value):
        lang = common.SESSION_LANG.set(value)
        return lang, *loc.updates(lang)

    def at_load(value):
        lang = common.SESSION_LANG.set(value)
        if lang == start:  # the page was built in this language
            return gr.skip(), *(gr.skip() for _ in loc.components)
        return lang, *loc.updates(lang)

    outputs = [switch, *loc.components]
    events = [
        switch.input(
            switch_to, switch, outputs, api_name="set_language", show_progress="hidden", queue=False, js=SWITCH_JS
        ),
        demo.load(
            at_load,
            switch,
            outputs,
            js=BROWSER_LANG_JS if follow_browser else FIXED_LANG_JS,
            api_visibility="private",
            show_progress="hidden",
            queue=False,
        ),
    ]
    # Gradio's upload boxes and table drop hints take their text when they mount, not when the locale changes:
    # hidden and shown again (the value stays in the page), they mount anew in the page's language.
    remount = [
        b
        for b in demo.blocks.values()
        if isinstance(b, (gr.File, gr.Dataframe)) and b.visible is True and getattr(b, "interactive", None) is not False
    ]
    quiet = dict(api_visibility="private", show_progress="hidden", queue=False)
    for event in events:
        for fn, inputs, outs in refreshers:
            event.then(fn, inputs, outs, api_visibility="private", show_progress="hidden")
        if remount:
            hidden = event.then(lambda: [gr.update(visible=False)] * len(remount), None, remount, **quiet)
            hidden.then(lambda: [gr.update(visible=True)] * len(remount), None, remount, **quiet)
    return events[1]


def wire_saved_dataset(dataset_saved: tuple, train: TrainTab) -> None:
    """Dataset tab → Save: the saved dataset becomes this page's Train dataset (kept with the form in this browser);
    another visitor's page keeps its own pick."""
    event, saved = dataset_saved
    adopted = event.success(
        train.actions.adopt_dataset, saved, train.dataset, api_visibility="private", show_progress="hidden"
    )
    adopted.then(**train.remember)


def wire_dpo_from_votes(tabs: gr.Tabs, train: TrainTab, chat: ChatTab) -> None:
    """Chat tab → "Train DPO from these votes": the Train tab opens, its form set for a DPO round on the votes cast
    on the adapter this page shows, continuing from it (kept with the form in this browser; Start is the user's)."""
    event = chat.dpo_btn.click(
        train.actions.dpo_from_votes, chat.adapter, [*train.form, train.status], api_name="chat_train_dpo"
    )
    show_errors(event, chat.blind_status)
    event.success(
        lambda: (gr.Tabs(selected="train"), gr.Accordion(open=True)),
        None,
        [tabs, train.continue_box],
        api_visibility="private",
        show_progress="hidden",
    )
    event.success(**train.remember)


def wire_chat_with_run(lab: LabEngine, tabs: gr.Tabs, train: TrainTab, chat: ChatTab) -> None:
    """Train tab → "Chat with this run": the Chat tab opens with the run's adapter on its base ('auto'), loading."""

    @friendly
    def hand_over(name):
        path = lab.adapter_for_chat(name)
        choices = lab.adapter_choices(common.lang())
        # The newest adapter goes with it: opening the Chat tab refreshes its list, which must keep this pick.
        return (
            gr.Tabs(selected="chat"),
            "auto",
            gr.Dropdown(choices=choices, value=path),
            say("Loading `{name}` on its base model…", name=name),
            choices[0][1] if choices else None,
        )

    event = train.chat_btn.click(
        hand_over,
        train.view,
        [tabs, chat.model, chat.adapter, chat.status, chat.newest],
        api_name="train_chat_with_run",
    )
    show_errors(event, train.status)
    show_errors(
        event.success(
            chat.actions.load,
            [chat.model, chat.adapter],
            chat.status,
            api_visibility="private",
            concurrency_limit=1,
            concurrency_id="model",
        ),
        chat.status,
    )
