"""Instruction datasets: import formats, validation, the exact training view of a row, and saved datasets."""

from pathlib import Path

from lora_demo.data.formats import FIELDS, ImportResult, apply_mapping, import_file, read_records, to_rows, write_rows
from lora_demo.data.store import DatasetStore, clean_rows, split_rows
from lora_demo.data.templates import IGNORE, Example, build_example, masked_view, prompt_text
from lora_demo.data.validate import summary_markdown, validate_rows
from lora_demo.data.verbatim import verbatim
from lora_demo.errors import InputError
from lora_demo.i18n import msg

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"  # lora_demo/examples/, shipped in the package


def example_names() -> list[str]:
    """The example datasets shipped in lora_demo/examples/ (persona, seed, ...)."""
    return sorted(p.stem for p in EXAMPLES_DIR.glob("*.jsonl"))


def load_example(name: str) -> list[dict]:
    if name not in example_names():
        raise InputError(
            msg(
                "No example named {name!r}; the examples are {names}.",
                name=verbatim(name),
                names=", ".join(example_names()),
            )
        )
    return import_file(EXAMPLES_DIR / f"{name}.jsonl").rows


__all__ = [
    "resolve_rows",
    "EXAMPLES_DIR",
    "FIELDS",
    "IGNORE",
    "DatasetStore",
    "Example",
    "ImportResult",
    "apply_mapping",
    "build_example",
    "clean_rows",
    "example_names",
    "import_file",
    "load_example",
    "masked_view",
    "prompt_text",
    "read_records",
    "split_rows",
    "summary_markdown",
    "to_rows",
    "validate_rows",
    "write_rows",
]


def resolve_rows(dataset: str, data_dir: str | Path) -> list[dict]:
    """Rows of a dataset reference: 'example:<name>', a saved dataset name, or a file path."""
    if dataset.startswith("example:"):
        return load_example(dataset.split(":", 1)[1])
    store = DatasetStore(data_dir)
    if dataset in store.names():
        return store.load(dataset)
    path = Path(dataset)
    if path.suffix.lower() in (".json", ".jsonl", ".csv", ".parquet") and path.is_file():
        res = import_file(path)
        if res.needs_mapping:
            raise InputError(
                msg(
                    "{file}: its columns {columns} need mapping: import it in the Dataset tab first.",
                    file=path.name,
                    columns=res.columns,
                )
            )
        return res.rows
    saved = ", ".join(store.names()) or msg("none saved yet")
    raise InputError(
        msg(
            "Dataset {dataset!r} not found: use a saved dataset name ({saved}), 'example:persona', or the "
            "path of a .json/.jsonl/.csv/.parquet file.",
            dataset=dataset,
            saved=saved,
        )
    )
