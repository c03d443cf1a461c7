"""Adapters that leave the app: a zip of the PEFT folder, a merged 16-bit model, and GGUF where llama.cpp is present.

Every export carries the run's model card (README.md, Hugging Face layout). Weights are written as safetensors.
`archive.py` makes the zip, `merged.py` the merged model, `gguf.py` the GGUF; `cli.py` is `python -m lora_demo export`.
"""

from lora_demo.export.archive import ZIP_FILES, export_zip
from lora_demo.export.gguf import export_gguf, gguf_converter
from lora_demo.export.merged import export_merged, merged_card

__all__ = ["ZIP_FILES", "export_gguf", "export_merged", "export_zip", "gguf_converter", "merged_card"]
