"""System tab: what this machine will run on, and which models work offline."""

from __future__ import annotations

import gradio as gr

from lora_demo.system import format_system_info, system_info


def create_system_tab() -> None:
    info = gr.Markdown(format_system_info(system_info()), elem_id="system-info")
    refresh = gr.Button("Refresh", size="sm")
    refresh.click(lambda: format_system_info(system_info()), outputs=info, api_name="system_info")
