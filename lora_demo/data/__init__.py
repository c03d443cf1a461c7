"""Instruction datasets: import formats, validation, the exact training view of a row, and saved datasets."""

from pathlib import Path

from lora_demo.data.formats import FIELDS, ImportResult, apply_mapping, import_file, read_records, to_rows, write_rows
from lora_demo.data.store import DatasetStore, clean_rows, split_rows
from lora_demo.data.templates import IGNORE, Example, build_example, masked_view, prompt_text
from lora_demo.data.validate import summary_markdown, validate_rows

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"  # lora_demo/examples/, shipped in the package


def example_names() -> list[str]:
    """The example datasets shipped in lora_demo/examples/ (persona, seed, ...)."""
    return sorted(p.stem for p in EXAMPLES_DIR.glob("*.jsonl"))


def load_example(name: str) -> list[dict]:
    from lora_demo.data.verbatim import verbatim
    from lora_demo.errors import InputError
    from lora_demo.i18n import msg

    if name not in example_names():
        raise InputError(msg("No example named {name!r}; the examples are {names}.", name=verbatim(name),
                             names=", ".join(example_names())))
    return import_file(EXAMPLES_DIR / f"{name}.jsonl").rows


__all__ = [
    "EXAMPLES_DIR", "FIELDS", "IGNORE", "DatasetStore", "Example", "ImportResult", "apply_mapping", "build_example",
    "clean_rows", "example_names", "import_file", "load_example", "masked_view", "prompt_text", "read_records",
    "split_rows", "summary_markdown", "to_rows", "validate_rows", "write_rows",
]
