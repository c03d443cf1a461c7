"""System tab: what this machine will run on, and which models work offline."""

from __future__ import annotations

import gradio as gr

from lora_demo.ui.common import dynamic, lang, on_language


def create_system_tab(lab) -> None:
    def system_markdown() -> str:
        """The System panel, freshly detected, in this browser session's language (the models usable here only)."""
        return lab.system_panels(lang())[0]

    def system_panels() -> tuple[str, str]:
        """The System panel and, apart, the hub models that need a download once."""
        return lab.system_panels(lang())

    panel, hub_panel = system_panels()
    info = dynamic(gr.Markdown(panel, elem_id="system-info"))  # rendered per language, not re-labelled
    with gr.Accordion("Hub models (need a download once)", open=False, elem_id="system-hub"):
        hub = dynamic(gr.Markdown(hub_panel, elem_id="system-hub-models"))
    refresh = gr.Button("Refresh", size="sm")
    refresh.click(system_markdown, outputs=info, api_name="system_info")
    refresh.click(lambda: system_panels()[1], outputs=hub, api_visibility="private")
    on_language(system_panels, None, [info, hub])  # the language switch re-renders the panels
