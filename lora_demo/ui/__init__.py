"""The Gradio UI: lays out components and wires events to engine functions in lora_demo (no math, no I/O here)."""

from lora_demo.ui.app import AppSettings, build_app

__all__ = ["AppSettings", "build_app"]
