"""The Gradio UI: lays out components and wires events to LabEngine methods (no math, no I/O here)."""

from lora_demo.engine import AppSettings, LabEngine
from lora_demo.ui.app import build_app

__all__ = ["AppSettings", "LabEngine", "build_app"]
