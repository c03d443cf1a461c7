"""Chat tab: base (adapter off) and tuned (adapter on) answer the same prompt side by side, streaming.

Layout only: components are laid out here and wired to ChatActions, whose methods call the LabEngine's chat
engine (lora_demo/chat/engine.py). Each action can be called without launching the app.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import gradio as gr
import pandas as pd

from lora_demo.chat.engine import compare_on_rows, flatten_content, split_thinking
from lora_demo.errors import InputError
from lora_demo.i18n import msg
from lora_demo.models import REGISTRY
from lora_demo.ui.common import adapter_list, dynamic, friendly, gen_settings, on_language, say, show, show_errors
from lora_demo.ui.judge_section import create_judge_section

# The page gets at most one update of both chats per this many seconds (plus the first token and the end): every
# update re-renders both histories in the browser, which on 2 cores competed with decoding when sent per token.
# LORA_LAB_CHAT_UPDATE_S changes it (bench/bench_chat_page.py --update-s 0 measures the per-chunk page).
PAGE_UPDATE_S = float(os.environ.get("LORA_LAB_CHAT_UPDATE_S", "0.12"))


def _history_for_engine(history: list[dict]) -> list[dict]:
    """The turns the model should see: user messages and assistant answers (collapsed thinking blocks dropped)."""
    out = []
    for m in history or []:
        if m.get("role") == "assistant" and (m.get("metadata") or {}).get("title"):
            continue
        out.append({"role": m.get("role"), "content": flatten_content(m.get("content"))})
    return out


def _assistant_messages(text: str, done: bool) -> list[dict]:
    """A reply as chat messages: a collapsible 'thinking' block (Qwen3) and the answer, in the session's language."""
    thought, answer = split_thinking(text)
    msgs = []
    if thought or ("<think>" in text and not answer):
        status = "done" if (answer or done) else "pending"
        msgs.append({"role": "assistant", "content": thought or "…",
                     "metadata": {"title": say("💭 Thinking"), "status": status}})  # fmt: skip
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


class ChatActions:
    """The Chat tab's event handlers, over one LabEngine."""

    def __init__(self, lab):
        self.lab = lab

    @friendly
    def load(self, model_id, adapter_dir):
        for line in self.lab.load_chat(model_id, adapter_dir):
            yield show(line)

    def status(self, shown=None):
        """The loaded model's status line again, in the session's language (after the language switch); an error
        shown there stays until the next action."""
        if isinstance(shown, str) and "lab-error" in shown:
            return gr.skip()
        return show(self.lab.chat.status())

    @friendly
    def send(self, text, base_hist, tuned_hist, sys_prompt, think, t, p, k, r, n, sd, sc, greedy):
        chat = self.lab.chat
        if not str(text or "").strip():
            raise InputError(msg("Type a message first."))
        if chat.model is None:
            raise InputError(msg("Load a model first: pick an adapter (or a model) and press Load."))
        gen = gen_settings(t, p, k, r, n, sd, sc, greedy)
        user = {"role": "user", "content": text}
        base_hist, tuned_hist = [*(base_hist or []), user], [*(tuned_hist or []), user]
        stream = chat.generate_pair(_history_for_engine(base_hist), _history_for_engine(tuned_hist), sys_prompt or "",
                                    gen, enable_thinking=bool(think), every_s=PAGE_UPDATE_S)  # fmt: skip
        b = None
        try:  # closing this generator (page closed, Stop) closes the stream, which stops and joins generation
            for b, t_ in stream:
                yield "", base_hist + _assistant_messages(b.text, b.done), tuned_hist + self._tuned(t_), _stats(b), \
                    _stats(t_)  # fmt: skip
        finally:
            stream.close()
        if b is None:
            raise InputError(msg("Nothing was generated."))

    def _tuned(self, res) -> list[dict]:
        if self.lab.chat.adapter_dir is None:
            return [{"role": "assistant", "content": say("(no adapter loaded: load one to see the tuned side)")}]
        return _assistant_messages(res.text, res.done)

    def stop(self) -> str:
        self.lab.chat.stop()
        return say("Stopped.")

    @friendly
    def add_to_dataset(self, name, tuned_hist) -> str:
        hist = _history_for_engine(tuned_hist)
        users = [m for m in hist if m["role"] == "user"]
        answers = [m for m in hist if m["role"] == "assistant"]
        if not users or not answers:
            raise InputError(msg("Chat first: there is no exchange to add yet."))
        n = self.lab.datasets.add_exchange(name, users[-1]["content"], answers[-1]["content"])
        return say("Added the last exchange to **{name}** ({n} rows). Edit it in the Dataset tab.", name=name, n=n)

    @friendly
    def compare(self):
        chat = self.lab.chat
        if chat.adapter_dir is None:
            raise InputError(msg("Load an adapter trained in LoRA Lab first."))
        rows = compare_on_rows(chat, chat.adapter_dir)
        columns = [say("split"), say("prompt"), say("expected"), say("base"), say("tuned")]
        return pd.DataFrame([[r.split, r.instruction, r.expected, r.base, r.tuned] for r in rows], columns=columns)

    def refresh_adapters(self, current, seen_newest):
        return adapter_list(self.lab.runs_dir, current, seen_newest)


@dataclass
class ChatTab:
    """What the Train tab's "Chat with this run" hands over to."""

    model: gr.Dropdown
    adapter: gr.Dropdown
    status: gr.Markdown
    actions: ChatActions
    newest: gr.State  # the newest adapter the list showed: a hand-over sets it so the tab's refresh keeps its pick


def _settings_box() -> list:
    """Generation settings, in the order ChatActions.send takes them after the prompt ones."""
    with gr.Accordion("Prompt and generation settings", open=False):
        with gr.Row():
            system = gr.Textbox(label="system prompt", placeholder="(none)")
            thinking = gr.Checkbox(value=False, label="Qwen3 thinking")
            greedy = gr.Checkbox(value=False, label="greedy (deterministic)")
        with gr.Row():
            temperature = gr.Slider(0.01, 2, value=0.7, step=0.01, label="temperature")
            top_p = gr.Slider(0.01, 1, value=0.9, step=0.01, label="top-p")
            top_k = gr.Slider(0, 200, value=50, step=1, label="top-k (0: off)")
            rep = gr.Slider(0.8, 2, value=1.1, step=0.01, label="repetition penalty")
        with gr.Row():
            max_new = gr.Slider(1, 2048, value=256, step=1, label="max new tokens")
            seed = gr.Number(value=0, precision=0, label="seed (shared by both sides)")
            scale = gr.Slider(0, 2, value=1, step=0.05, label="adapter scale (0 = base, 1 = as trained)")
    return [system, thinking, temperature, top_p, top_k, rep, max_new, seed, scale, greedy]


def _side(label: str, elem: str):
    with gr.Column():
        chat = gr.Chatbot(label=label, height=420, elem_id=f"chat-{elem}")
        stats = gr.Markdown(elem_id=f"chat-{elem}-stats")
    return chat, stats


def create_chat_tab(lab, tab: gr.Tab) -> ChatTab:
    act = ChatActions(lab)
    with gr.Row():
        model = gr.Dropdown(["auto", *REGISTRY], value="auto", allow_custom_value=True, label="base model",
                            info="auto: the base the adapter was trained on (no adapter: this device's default)")  # fmt: skip
        adapter = dynamic(gr.Dropdown(label="adapter (runs, truncated copies; newest first)",  # filled from runs/
                                      allow_custom_value=True, elem_id="chat-adapter",
                                      info="or type the path of any PEFT adapter folder"))  # fmt: skip
        newest = gr.State(None)
        refresh = gr.Button("↻", size="sm", scale=0, elem_id="chat-refresh")
        load_btn = gr.Button("Load", variant="primary", elem_id="chat-load")
    status = dynamic(gr.Markdown(show(lab.chat.status()), elem_id="chat-status"))
    on_language(act.status, status, status)
    gen_inputs = _settings_box()
    with gr.Row():
        base_chat, base_stats = _side("Base (adapter off)", "base")
        tuned_chat, tuned_stats = _side("Tuned (adapter on)", "tuned")
    with gr.Row():
        msg = gr.Textbox(placeholder="Ask both models…", show_label=False, scale=5, elem_id="chat-input")
        send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
        stop = gr.Button("Stop", variant="stop", scale=1, elem_id="chat-stop")
        clear = gr.Button("Clear", scale=1, elem_id="chat-clear")
    with gr.Row():
        ds_name = gr.Textbox(value="chat-exchanges", label="dataset to add to")
        add_btn = gr.Button("Add this exchange (tuned answer) to the dataset")
        add_msg = gr.Markdown()
    create_judge_section(lab, gen_inputs, tuned_chat)
    with gr.Accordion("Compare on the run's training and validation rows (greedy)", open=False):
        cmp_btn = gr.Button("Compare")
        cmp_table = gr.Dataframe(interactive=False, wrap=True, max_height=400)

    model_lock = dict(concurrency_limit=1, concurrency_id="model")  # generation is serialized per loaded model
    show_errors(load_btn.click(act.load, [model, adapter], status, api_name="chat_load", **model_lock), status)
    refresh_args = dict(fn=act.refresh_adapters, inputs=[adapter, newest], outputs=[adapter, newest],
                        api_visibility="private", show_progress="hidden")  # fmt: skip
    for event in (refresh.click, adapter.focus, tab.select):
        event(**refresh_args)
    send_args = dict(fn=act.send, inputs=[msg, base_chat, tuned_chat, *gen_inputs],
                     outputs=[msg, base_chat, tuned_chat, base_stats, tuned_stats], **model_lock)  # fmt: skip
    show_errors(send.click(**send_args, api_name="chat_send"), status)
    show_errors(msg.submit(**send_args, api_visibility="private"), status)
    stop.click(act.stop, None, base_stats, api_name="chat_stop", concurrency_limit=None)
    clear.click(lambda: ([], [], "", ""), None, [base_chat, tuned_chat, base_stats, tuned_stats], api_name="chat_clear")
    show_errors(add_btn.click(act.add_to_dataset, [ds_name, tuned_chat], add_msg, api_name="chat_add_to_dataset"),
                add_msg)  # fmt: skip
    show_errors(cmp_btn.click(act.compare, None, cmp_table, api_name="chat_compare", **model_lock), status)
    return ChatTab(model=model, adapter=adapter, status=status, actions=act, newest=newest)
