"""System tab: what this machine will run on, and which models work offline."""

from __future__ import annotations

import gradio as gr

from lora_demo.system import format_system_info, system_info
from lora_demo.ui.common import dynamic, lang, on_language


def system_markdown() -> str:
    """The System panel, freshly detected, in this browser session's language."""
    return format_system_info(system_info(), lang())


def create_system_tab() -> None:
    info = dynamic(gr.Markdown(system_markdown(), elem_id="system-info"))  # rendered per language, not re-labelled
    refresh = gr.Button("Refresh", size="sm")
    refresh.click(system_markdown, outputs=info, api_name="system_info")
    on_language(system_markdown, None, info)  # the language switch re-renders the panel
