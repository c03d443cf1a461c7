"""Adapters that leave the app: a zip of the PEFT folder, a merged 16-bit model, GGUF (+ Ollama Modelfile) through
llama.cpp's converters, a parity report of all of them against the app, and a push to the Hugging Face Hub.

Every export carries the run's model card (README.md, Hugging Face layout) and its prompt format. Where each file
goes: `layout.py`. `archive.py` the zip, `merged.py` the merge, `prompt_format.py` the run's prompt as a chat
template and an Ollama template, `llamacpp.py` llama.cpp's converters, `gguf.py` the GGUFs, `modelfile.py` the
Modelfile, `parity.py` the report, `hub.py` the push, `run_exports.py` a run's exports as the UI and CLI ask for
them, `cli.py` is `python -m lora_demo export`.
"""

from lora_demo.export.archive import ZIP_FILES, export_zip
from lora_demo.export.gguf import export_gguf, export_lora_gguf
from lora_demo.export.llamacpp import converters_dir
from lora_demo.export.merged import export_merged, merged_card

__all__ = [
    "ZIP_FILES",
    "converters_dir",
    "export_gguf",
    "export_lora_gguf",
    "export_merged",
    "export_zip",
    "merged_card",
]
