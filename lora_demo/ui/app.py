"""build_app: the LoRA Lab Blocks app, one tab per concept."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from lora_demo.ui.chat_tab import create_chat_tab
from lora_demo.ui.dataset_tab import create_dataset_tab
from lora_demo.ui.lowrank_tab import create_lowrank_tab
from lora_demo.ui.system_tab import create_system_tab
from lora_demo.ui.train_tab import create_train_tab


@dataclass
class AppSettings:
    """What app.py's flags decide for the UI."""

    model: str = "auto"  # "auto": the registry's default for this device
    runs_dir: Path = field(default_factory=lambda: Path("runs"))
    data_dir: Path = field(default_factory=lambda: Path("data"))
    allow_dirs: list[Path] = field(default_factory=list)  # extra folders the browser may name (--allow-dir)

    def policy(self):
        """What paths coming from the browser/API may point at."""
        from lora_demo.paths import PathPolicy

        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return PathPolicy([self.runs_dir, self.data_dir, *self.allow_dirs])


def build_app(settings: AppSettings | None = None) -> gr.Blocks:
    settings = settings or AppSettings()
    with gr.Blocks(title="LoRA Lab") as demo:
        gr.Markdown("# LoRA Lab\nLearn why LoRA works, build a dataset, fine-tune, and compare base vs tuned.")
        with gr.Tabs() as tabs:
            with gr.Tab("System", id="system"):
                create_system_tab(settings)
            with gr.Tab("Low-rank lab", id="lowrank") as lowrank_tab:
                create_lowrank_tab(settings, lowrank_tab)
            with gr.Tab("Dataset", id="dataset"):
                create_dataset_tab(settings)
            with gr.Tab("Train", id="train"):
                train = create_train_tab(settings)
            with gr.Tab("Chat", id="chat") as chat_tab:
                chat = create_chat_tab(settings, chat_tab)
        wire_chat_with_run(settings, tabs, train, chat)
    return demo


def wire_chat_with_run(settings: AppSettings, tabs: gr.Tabs, train, chat) -> None:
    """Train tab → "Chat with this run": the Chat tab opens with the run's adapter on its base ('auto'), loading."""
    from lora_demo.adapters import adapter_choices
    from lora_demo.ui.common import friendly, show_errors
    from lora_demo.ui.train_tab import run_to_chat

    @friendly
    def hand_over(name):
        path = run_to_chat(Path(settings.runs_dir), name)
        return (gr.Tabs(selected="chat"), "auto", gr.Dropdown(choices=adapter_choices(settings.runs_dir), value=path),
                f"Loading `{name}` on its base model…")  # fmt: skip

    event = train.chat_btn.click(hand_over, train.view, [tabs, chat.model, chat.adapter, chat.status],
                                 api_name="train_chat_with_run")  # fmt: skip
    show_errors(event, train.status)
    show_errors(event.success(chat.load, [chat.model, chat.adapter], chat.status, api_visibility="private",
                              concurrency_limit=1, concurrency_id="model"), chat.status)  # fmt: skip
