"""build_app: the LoRA Lab Blocks app, one tab per concept, all acting on one LabEngine."""

from __future__ import annotations

import gradio as gr

from lora_demo.engine import AppSettings, LabEngine
from lora_demo.ui.chat_tab import ChatTab, create_chat_tab
from lora_demo.ui.common import friendly, show_errors
from lora_demo.ui.dataset_tab import create_dataset_tab
from lora_demo.ui.lowrank_tab import create_lowrank_tab
from lora_demo.ui.system_tab import create_system_tab
from lora_demo.ui.train_tab import TrainTab, create_train_tab


def build_app(settings: AppSettings | LabEngine | None = None) -> gr.Blocks:
    lab = settings if isinstance(settings, LabEngine) else LabEngine(settings)
    with gr.Blocks(title="LoRA Lab") as demo:
        gr.Markdown("# LoRA Lab\nLearn why LoRA works, build a dataset, fine-tune, and compare base vs tuned.")
        with gr.Tabs() as tabs:
            with gr.Tab("System", id="system"):
                create_system_tab()
            with gr.Tab("Low-rank lab", id="lowrank") as lowrank_tab:
                create_lowrank_tab(lab, lowrank_tab)
            with gr.Tab("Dataset", id="dataset"):
                create_dataset_tab(lab)
            with gr.Tab("Train", id="train") as train_tab:
                train = create_train_tab(lab, train_tab)
            with gr.Tab("Chat", id="chat") as chat_tab:
                chat = create_chat_tab(lab, chat_tab)
        wire_chat_with_run(lab, tabs, train, chat)
    demo.lab = lab  # tests and scripts reach the engine of a built app here
    return demo


def wire_chat_with_run(lab: LabEngine, tabs: gr.Tabs, train: TrainTab, chat: ChatTab) -> None:
    """Train tab → "Chat with this run": the Chat tab opens with the run's adapter on its base ('auto'), loading."""
    from lora_demo.adapters import adapter_choices

    @friendly
    def hand_over(name):
        path = lab.adapter_for_chat(name)
        choices = adapter_choices(lab.runs_dir)
        # The newest adapter goes with it: opening the Chat tab refreshes its list, which must keep this pick.
        return (gr.Tabs(selected="chat"), "auto", gr.Dropdown(choices=choices, value=path),
                f"Loading `{name}` on its base model…", choices[0][1] if choices else None)  # fmt: skip

    event = train.chat_btn.click(hand_over, train.view, [tabs, chat.model, chat.adapter, chat.status, chat.newest],
                                 api_name="train_chat_with_run")  # fmt: skip
    show_errors(event, train.status)
    show_errors(event.success(chat.actions.load, [chat.model, chat.adapter], chat.status, api_visibility="private",
                              concurrency_limit=1, concurrency_id="model"), chat.status)  # fmt: skip
