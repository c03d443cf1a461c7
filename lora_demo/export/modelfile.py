"""Ollama's Modelfile for an exported GGUF: FROM the file, the run's exact prompt format, stop words, defaults."""

from __future__ import annotations

from pathlib import Path

from lora_demo.chat.request import GenSettings
from lora_demo.export.prompt_format import ollama_template, stop_words
from lora_demo.io import write_atomic


def modelfile_text(gguf_name: str, tokenizer, fmt: dict, run_name: str) -> str:
    """The Modelfile: `ollama create NAME -f Modelfile` gives the model the user chatted with in LoRA Lab."""
    g = GenSettings()  # the Chat tab's defaults
    template = ollama_template(tokenizer, fmt).replace('"""', '\\"\\"\\"')
    lines = [
        f"# Ollama recipe for the LoRA Lab run {run_name}: ollama create {run_name.lower()} -f Modelfile",
        f"# Prompt format as trained: {fmt['template']}"
        + (f" (thinking {'on' if fmt.get('enable_thinking') else 'off'})" if fmt["template"] == "chat" else ""),
        f"FROM ./{gguf_name}",
        f'TEMPLATE """{template}"""',
        *[f'PARAMETER stop "{w}"' for w in stop_words(tokenizer)],
        f"PARAMETER temperature {g.temperature}",
        f"PARAMETER top_p {g.top_p}",
        f"PARAMETER top_k {g.top_k}",
        f"PARAMETER repeat_penalty {g.repetition_penalty}",
    ]
    return "\n".join(lines) + "\n"


def write_modelfile(out_file: str | Path, gguf_name: str, tokenizer, fmt: dict, run_name: str) -> Path:
    return write_atomic(Path(out_file), modelfile_text(gguf_name, tokenizer, fmt, run_name).encode("utf-8"))
