"""Chat tab: base (adapter off) and tuned (adapter on) answer the same prompt side by side, streaming.

Layout only: components are laid out here and wired to ChatActions, whose methods call the LabEngine's chat
engine (lora_demo/chat/engine.py). Each action can be called without launching the app.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd

from lora_demo.engine import LabEngine
from lora_demo.errors import InputError
from lora_demo.i18n import msg
from lora_demo.ui.common import (
    adapter_list,
    dynamic,
    friendly,
    gen_settings,
    lang,
    on_language,
    pill_sink,
    say,
    session_key,
    show,
    show_errors,
)
from lora_demo.ui.judge_section import create_judge_section
from lora_demo.ui.sessions import SessionStore

# The page gets at most one update of both chats per this many seconds (plus the first token and the end): every
# update re-renders both histories in the browser, which on 2 cores competed with decoding when sent per token.
# LORA_LAB_CHAT_UPDATE_S changes it (bench/bench_chat_page.py --update-s 0 measures the per-chunk page).
PAGE_UPDATE_S = LabEngine.chat_update_s
# Adapters the N-way compare adds beside base and the picked adapter (one batch of up to 2 + MAX_COMPARE rows).
MAX_COMPARE = 3
MODEL_LOCK = dict(concurrency_limit=1, concurrency_id="model")  # generation is serialized per loaded model


def _history_for_engine(history: list[dict]) -> list[dict]:
    """The turns the model should see: user messages and assistant answers (collapsed thinking blocks dropped)."""
    out = []
    for m in history or []:
        if m.get("role") == "assistant" and (m.get("metadata") or {}).get("title"):
            continue
        out.append({"role": m.get("role"), "content": LabEngine.flatten_content(m.get("content"))})
    return out


def _assistant_messages(text: str, done: bool) -> list[dict]:
    """A reply as chat messages: a collapsible 'thinking' block (Qwen3) and the answer, in the session's language."""
    thought, answer = LabEngine.split_thinking(text)
    msgs = []
    if thought or ("<think>" in text and not answer):
        status = "done" if (answer or done) else "pending"
        msgs.append(
            {
                "role": "assistant",
                "content": thought or "…",
                "metadata": {"title": say("💭 Thinking"), "status": status},
            }
        )
    if answer or not msgs:
        msgs.append({"role": "assistant", "content": answer or ("…" if not done else say("(empty answer)"))})
    return msgs


def _stats(res) -> str:
    """The line under each side: "{n} tokens · {tps} tok/s · first token {ms} ms" (— for what is not known yet)."""
    if res is None or res.tokens == 0:
        return ""
    tps = f"{res.tokens_per_s:.1f}" if res.tokens_per_s else "—"
    ttft = f"{res.ttft_s * 1000:.0f}" if res.ttft_s is not None else "—"
    return say("{n} tokens · {tps} tok/s · first token {ms} ms", n=res.tokens, tps=tps, ms=ttft)


class _SessionStops:
    """Each browser (or API) session's Stop: an Event per session, fresh for each Send, so one visitor's Stop ends
    only their own answer (generation of other visitors goes on)."""

    def __init__(self, size: int = 2048):
        self.events = SessionStore(size)

    def fresh(self) -> threading.Event:
        key, event = session_key(), threading.Event()
        if key is not None:
            self.events.put(key, event)
        return event

    def stop(self) -> None:
        event = self.events.get(session_key())
        if event is not None:
            event.set()


class ChatActions:
    """The Chat tab's event handlers, over one LabEngine. Every action takes the base model and adapter the page
    shows (its two lists) and asks the engine for exactly those: nothing is kept app-wide between visitors."""

    def __init__(self, lab):
        self.lab = lab
        self.stops = _SessionStops()

    @friendly
    def load(self, model_id, adapter_dir):
        for line in self.lab.load_chat(model_id, adapter_dir):
            yield show(line)

    def thinking(self, model_id=None, adapter_dir=None):
        """The 'Qwen3 thinking' switch, shown only when the base that answers has a chat template that reads it
        (off otherwise)."""
        on = self.lab.thinking_offered(model_id, adapter_dir or None)
        return gr.Checkbox(visible=True) if on else gr.Checkbox(visible=False, value=False)

    def status(self, model_id=None, adapter_dir=None, shown=None):
        """The status line of what the page shows selected, in the session's language (after the language switch,
        a change of the lists); an error shown there stays until the next action."""
        if isinstance(shown, str) and "lab-error" in shown:
            return gr.skip()
        return show(self.lab.chat_status(model_id, adapter_dir))

    @friendly
    def send(
        self,
        text,
        base_hist,
        tuned_hist,
        sys_prompt,
        think,
        temperature,
        top_p,
        top_k,
        repetition_penalty,
        max_new_tokens,
        seed,
        scale,
        greedy,
        model_id=None,
        adapter_dir=None,
        compare=None,
        *extra_hists,
    ):
        """One prompt to the base, the picked adapter and the adapters picked to compare with (one batch), streamed
        into their panes; the status line shows a load or attach stage when the request needs one."""
        if not str(text or "").strip():
            raise InputError(msg("Type a message first."))
        extra = [a for a in (compare or []) if a and a != adapter_dir][:MAX_COMPARE] if adapter_dir else []
        gen = gen_settings(temperature, top_p, top_k, repetition_penalty, max_new_tokens, seed, scale, greedy)
        user = {"role": "user", "content": text}
        hists = [[*(h or []), user] for h in (base_hist, tuned_hist, *extra_hists)]
        hists += [[user]] * (2 + MAX_COMPARE - len(hists))
        stream = self.lab.chat_stream(
            model_id,
            [adapter_dir, *extra] if adapter_dir else [],
            [_history_for_engine(h) for h in hists],
            sys_prompt or "",
            gen,
            enable_thinking=bool(think),
            every_s=PAGE_UPDATE_S,
            stop=self.stops.fresh(),
        )
        got = None
        try:  # closing this generator (page closed) closes the stream, which stops and joins generation
            for kind, value in stream:
                if kind == "stage":
                    yield (gr.skip(),) * 5 + (show(value[-1]),) + (gr.skip(),) * (2 * MAX_COMPARE)
                    continue
                got = value
                yield self._panes(hists, value, bool(adapter_dir), len(extra))
        finally:
            stream.close()
        if got is None:
            raise InputError(msg("Nothing was generated."))

    def _panes(self, hists: list, results: list, has_adapter: bool, n_extra: int) -> tuple:
        """The outputs of one update: the input cleared, base and tuned chats and stats, the status untouched,
        then each compare pane's chat and stats (skipped when not asked for)."""
        base = results[0]
        tuned = results[1] if has_adapter else None
        tuned_msgs = (
            _assistant_messages(tuned.text, tuned.done)
            if tuned is not None
            else [{"role": "assistant", "content": say("(no adapter picked: pick one to see the tuned side)")}]
        )
        out = [
            "",
            hists[0] + _assistant_messages(base.text, base.done),
            hists[1] + tuned_msgs,
            _stats(base),
            _stats(tuned),
            gr.skip(),
        ]
        for i in range(MAX_COMPARE):
            res = results[2 + i] if i < n_extra else None
            out.append(hists[2 + i] + _assistant_messages(res.text, res.done) if res is not None else gr.skip())
        for i in range(MAX_COMPARE):
            res = results[2 + i] if i < n_extra else None
            out.append(_stats(res) if res is not None else gr.skip())
        return tuple(out)

    def stop(self) -> str:
        self.stops.stop()
        return say("Stopped.")

    @friendly
    def add_to_dataset(self, name, tuned_hist, adapter_dir=None) -> str:
        hist = _history_for_engine(tuned_hist)
        users = [m for m in hist if m["role"] == "user"]
        answers = [m for m in hist if m["role"] == "assistant"]
        if not users or not answers:
            raise InputError(msg("Chat first: there is no exchange to add yet."))
        n = self.lab.datasets.add_exchange(name, users[-1]["content"], answers[-1]["content"])
        if adapter_dir:
            return say(
                "Added the last exchange (the answer of `{adapter}`) to **{name}** ({n} rows). Edit it in the "
                "Dataset tab.",
                adapter=Path(str(adapter_dir)).name,
                name=name,
                n=n,
            )
        return say("Added the last exchange to **{name}** ({n} rows). Edit it in the Dataset tab.", name=name, n=n)

    @friendly
    def compare(self, model_id, adapter_dir):
        if not adapter_dir:
            raise InputError(msg("Load an adapter trained in LoRA Lab first."))
        rows = self.lab.compare_rows(model_id, adapter_dir)
        columns = [say("split"), say("prompt"), say("expected"), say("base"), say("tuned")]
        return pd.DataFrame([[r.split, r.instruction, r.expected, r.base, r.tuned] for r in rows], columns=columns)

    def refresh_adapters(self, current, seen_newest):
        return adapter_list(self.lab.runs_dir, current, seen_newest)

    def compare_choices(self, picked):
        """The adapters to compare with: the same list as the adapter's (the runs folder, newest first)."""
        return gr.Dropdown(choices=self.lab.adapter_choices(lang()), value=picked or [])

    @staticmethod
    def compare_panes(picked):
        """Show one pane per adapter picked to compare with (up to MAX_COMPARE), labelled with its folder name."""
        picked = [p for p in picked or [] if p][:MAX_COMPARE]
        chats = [
            gr.Chatbot(visible=i < len(picked), label=Path(picked[i]).name if i < len(picked) else None)
            for i in range(MAX_COMPARE)
        ]
        return (
            *chats,
            *(gr.Markdown(visible=i < len(picked)) for i in range(MAX_COMPARE)),
            gr.Row(visible=bool(picked)),
        )


@dataclass
class ChatTab:
    """What the Train tab's "Chat with this run" hands over to."""

    model: gr.Dropdown
    adapter: gr.Dropdown
    status: gr.Markdown
    actions: ChatActions
    newest: gr.State  # the newest adapter the list showed: a hand-over sets it so the tab's refresh keeps its pick
    dpo_btn: gr.Button | None = None  # the blind votes' "Train DPO from these votes" (→ the Train tab's form)
    blind_status: gr.Markdown | None = None  # the blind votes' status line


def _settings_box(thinking_offered: bool = True) -> list:
    """Generation settings, in the order ChatActions.send takes them after the prompt ones; the thinking switch is
    shown only for a base whose chat template reads it (ChatActions.thinking keeps that up to date)."""
    with gr.Accordion("Prompt and generation settings", open=False):
        with gr.Row():
            system = gr.Textbox(label="system prompt", placeholder="(none)")
            thinking = gr.Checkbox(
                value=False, label="Qwen3 thinking", visible=thinking_offered, elem_id="chat-thinking"
            )
            greedy = gr.Checkbox(value=False, label="greedy (deterministic)")
        with gr.Row():
            temperature = gr.Slider(0.01, 2, value=0.7, step=0.01, label="temperature")
            top_p = gr.Slider(0.01, 1, value=0.9, step=0.01, label="top-p")
            top_k = gr.Slider(0, 200, value=50, step=1, label="top-k (0: off)")
            repetition_penalty = gr.Slider(0.8, 2, value=1.1, step=0.01, label="repetition penalty")
        with gr.Row():
            max_new_tokens = gr.Slider(1, 2048, value=256, step=1, label="max new tokens")
            seed = gr.Number(value=0, precision=0, label="seed (shared by both sides)")
            scale = gr.Slider(0, 2, value=1, step=0.05, label="adapter scale (0 = base, 1 = as trained)")
    return [system, thinking, temperature, top_p, top_k, repetition_penalty, max_new_tokens, seed, scale, greedy]


def _side(label: str, elem: str):
    with gr.Column():
        chat = gr.Chatbot(label=label, height=420, elem_id=f"chat-{elem}")
        stats = gr.Markdown(elem_id=f"chat-{elem}-stats")
    return chat, stats


def create_chat_tab(lab, tab: gr.Tab) -> ChatTab:
    """Lay out the Chat tab (the judging section inside it) and wire it to a ChatActions over `lab`."""
    act = ChatActions(lab)
    model, adapter, newest, refresh, load_btn = _picker_row(lab)
    picked = [model, adapter]  # what every chat action of this page uses
    status = dynamic(gr.Markdown(show(msg("No model loaded.")), elem_id="chat-status"))
    on_language(act.status, [model, adapter, status], status)
    gen_inputs = _settings_box(lab.thinking_offered("auto"))
    with gr.Row():
        base_chat, base_stats = _side("Base (adapter off)", "base")
        tuned_chat, tuned_stats = _side("Tuned (adapter on)", "tuned")
    compare, extra_chats, extra_stats = _compare_box()
    msg_box, send, stop, clear = _input_row()
    with gr.Row():
        ds_name = gr.Textbox(value="chat-exchanges", label="dataset to add to")
        add_btn = gr.Button("Add this exchange (tuned answer) to the dataset")
        add_msg = gr.Markdown()
    dpo_btn, blind_status = create_judge_section(lab, gen_inputs, tuned_chat, picked)
    cmp_btn, cmp_table = _rows_box()

    _wire_lists(act, tab, picked, newest, refresh, load_btn, status, thinking=gen_inputs[1])
    chats, stats = [base_chat, tuned_chat, *extra_chats], [base_stats, tuned_stats, *extra_stats]
    _wire_send(act, msg_box, send, stop, [*gen_inputs, *picked, compare], chats, stats, status)
    clear.click(lambda: ([],) * len(chats) + ("",) * (2 + MAX_COMPARE), None, [*chats, *stats], api_name="chat_clear")
    show_errors(
        add_btn.click(act.add_to_dataset, [ds_name, tuned_chat, adapter], add_msg, api_name="chat_add_to_dataset"),
        add_msg,
    )
    show_errors(cmp_btn.click(act.compare, picked, cmp_table, api_name="chat_compare", **MODEL_LOCK), status)
    _wire_compare(act, compare, extra_chats, extra_stats)
    return ChatTab(
        model=model,
        adapter=adapter,
        status=status,
        actions=act,
        newest=newest,
        dpo_btn=dpo_btn,
        blind_status=blind_status,
    )


def _picker_row(lab) -> tuple:
    """The base model and adapter lists (what this page's requests name), the refresh and Load buttons."""
    with gr.Row():
        model = gr.Dropdown(
            ["auto", *lab.model_choices()],
            value="auto",
            allow_custom_value=True,
            label="base model",
            info="auto: the base the adapter was trained on (no adapter: this device's default)",
        )
        adapter = dynamic(
            gr.Dropdown(
                label="adapter (runs, truncated copies; newest first)",  # filled from runs/
                allow_custom_value=True,
                elem_id="chat-adapter",
                info="or type the path of any PEFT adapter folder",
            )
        )
        newest = gr.State(None)
        refresh = gr.Button("↻", size="sm", scale=0, elem_id="chat-refresh")
        load_btn = gr.Button("Load", elem_id="chat-load")
    return model, adapter, newest, refresh, load_btn


def _input_row() -> tuple:
    """The prompt box and its Send, Stop and Clear buttons."""
    with gr.Row():
        msg_box = gr.Textbox(placeholder="Ask both models…", show_label=False, scale=5, elem_id="chat-input")
        send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
        stop = gr.Button("Stop", scale=1, elem_id="chat-stop", interactive=False)  # enabled while answers stream
        clear = gr.Button("Clear", scale=1, elem_id="chat-clear")
    return msg_box, send, stop, clear


def _rows_box() -> tuple:
    """Greedy base and tuned answers on the run's own rows: the button and its table."""
    with gr.Accordion("Compare on the run's training and validation rows (greedy)", open=False):
        cmp_btn = gr.Button("Compare")
        cmp_table = gr.Dataframe(
            pd.DataFrame(columns=[say("split"), say("prompt"), say("expected"), say("base"), say("tuned")]),
            interactive=False,
            wrap=True,
            max_height=400,
        )
    return cmp_btn, cmp_table


def _wire_lists(act: ChatActions, tab: gr.Tab, picked: list, newest, refresh, load_btn, status, thinking) -> None:
    """Load; the adapter list refreshed (the ↻ button, its focus, the tab opened); the status line and the thinking
    switch following what the lists pick."""
    model, adapter = picked
    show_errors(load_btn.click(act.load, picked, status, api_name="chat_load", **MODEL_LOCK), status)
    refresh_args = dict(
        fn=act.refresh_adapters,
        inputs=[adapter, newest],
        outputs=[adapter, newest],
        api_visibility="private",
        show_progress="hidden",
    )
    for event in (refresh.click, adapter.focus, tab.select):
        event(**refresh_args)
    for changed in (model.change, adapter.change):  # the status says what this page's Send will use
        changed(act.status, [model, adapter, status], status, api_visibility="private", show_progress="hidden")
        changed(act.thinking, picked, thinking, api_visibility="private", show_progress="hidden")


def _wire_send(act: ChatActions, msg_box, send, stop, settings: list, chats: list, stats: list, status) -> None:
    """Send (the button or Enter) streams every pane's answer; Stop is enabled while they stream.
    settings: the generation settings, the picked base and adapter, the adapters to compare with."""
    send_args = dict(
        fn=act.send,
        inputs=[msg_box, *chats[:2], *settings, *chats[2:]],
        outputs=[msg_box, *chats[:2], *stats[:2], status, *chats[2:], *stats[2:]],
        **MODEL_LOCK,
    )
    send_args["show_progress_on"] = pill_sink()  # an empty prompt: the message in the status line, no "Error" pill
    sent = [send.click(**send_args, api_name="chat_send"), msg_box.submit(**send_args, api_visibility="private")]
    quiet = dict(api_visibility="private", show_progress="hidden")
    for trigger, event in zip((send.click, msg_box.submit), sent, strict=True):
        show_errors(event, status)
        # Stop can act only while this page's answers stream: enabled with Send, disabled when they end (or fail).
        trigger(lambda: gr.Button(interactive=True), None, stop, queue=False, **quiet)
        event.then(lambda: gr.Button(interactive=False), None, stop, **quiet)
    stop.click(act.stop, None, stats[0], api_name="chat_stop", concurrency_limit=None)


def _wire_compare(act: ChatActions, compare, extra_chats: list, extra_stats: list) -> None:
    """The compare list offers the adapter list; one pane shows per adapter picked."""
    compare.focus(act.compare_choices, compare, compare, api_visibility="private", show_progress="hidden")
    compare.change(
        act.compare_panes,
        compare,
        [*extra_chats, *extra_stats, compare.parent_row],
        api_visibility="private",
        show_progress="hidden",
    )


def _compare_box():
    """N-way compare: up to MAX_COMPARE more adapters (e.g. checkpoints of one run, or two runs' adapters) answer
    beside base and tuned, from the same batch."""
    with gr.Accordion("Compare with more adapters (one batch)", open=False):
        compare = gr.Dropdown(
            [],
            multiselect=True,
            max_choices=MAX_COMPARE,
            allow_custom_value=True,
            label="more adapters to compare with (up to 3)",
            elem_id="chat-compare",
        )
        with gr.Row(visible=False) as row:
            panes = [_side(f"Adapter {i + 2}", f"extra{i}") for i in range(MAX_COMPARE)]
    for chat, stats in panes:
        chat.visible = stats.visible = False
    compare.parent_row = row
    return compare, [c for c, _ in panes], [st for _, st in panes]
