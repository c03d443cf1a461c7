"""LoRA Lab: a hands-on LoRA fine-tuning workbench (engine; the Gradio UI lives in lora_demo.ui)."""

__version__ = "0.1.0"
