"""The Dataset tab's work, engine side: read, edit, import, validate, preview and save rows, with no gradio here.

LabEngine owns one as `lab.dataset` (beside `lab.datasets`, the DatasetStore it works on). Each method takes what
the tab's components hold (a table, a row number, a model name) and returns plain rows, reports and `Msg` values;
ui/dataset_tab.py turns them into component updates and renders the messages in the session's language. The
constants the tab's components need (encodings, upload limit, file types, templates, examples) are read here too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lora_demo.data import (
    FIELDS,
    apply_mapping,
    build_example,
    clean_rows,
    example_names,
    load_example,
    masked_view,
    split_rows,
    summary_markdown,
    to_rows,
    validate_rows,
)
from lora_demo.data.edit import edit_rows, guess_mapping, row_index, table_rows
from lora_demo.data.formats import ENCODINGS, MAX_UPLOAD_MB, SUFFIXES, read_records
from lora_demo.data.preferences import is_pairs_file
from lora_demo.data.store import DatasetStore
from lora_demo.data.verbatim import verbatim
from lora_demo.errors import InputError
from lora_demo.i18n import Msg, joined, msg
from lora_demo.models.loader import cached_tokenizer
from lora_demo.models.registry import check_model
from lora_demo.paths import PathPolicy


@dataclass
class Imported:
    """What importing a file gave. rows: the table's new rows (None: the table stays as it is, e.g. preference
    pairs saved apart). columns: set when the file's columns need a mapping (records wait for it, guess is the
    mapping proposed)."""

    message: Msg
    rows: list[dict] | None = None
    records: list[dict] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    guess: dict[str, str | None] = field(default_factory=dict)

    @property
    def needs_mapping(self) -> bool:
        return bool(self.columns)


class DatasetActions:
    """The Dataset tab's actions over one DatasetStore: each returns plain data and Msg values."""

    FIELDS = FIELDS  # the table's columns (Alpaca)
    ENCODINGS = ENCODINGS  # code -> label of the text encodings an import may name
    MAX_UPLOAD_MB = MAX_UPLOAD_MB
    FILE_TYPES = list(SUFFIXES)  # the files an import reads
    TEMPLATES = ["alpaca", "chat"]  # the prompt templates validation and preview apply
    DEFAULT_EXAMPLE = "persona"

    def __init__(self, store: DatasetStore, policy: PathPolicy, import_preferences: Callable[[list, str], tuple]):
        self.store, self.policy = store, policy
        self.import_preferences = import_preferences  # LabEngine.import_preferences: (pairs, name) -> (value, n)

    # --- what the components list ---
    def examples(self) -> tuple[list[str], str | None]:
        """(the shipped examples' names, the one picked at first)."""
        names = example_names()
        return names, self.DEFAULT_EXAMPLE if self.DEFAULT_EXAMPLE in names else None

    def names(self) -> list[str]:
        """The saved datasets' names."""
        return self.store.names()

    def restore_autosave(self) -> list[dict]:
        """The table as last autosaved (a reload loses nothing)."""
        return self.store.restore_autosave()

    def tokenizer(self, model_id):
        """The tokenizer of a model the policy lets the page name (cached)."""
        return cached_tokenizer(check_model(self.policy, model_id))

    # --- filling the table ---
    def load_example(self, name) -> tuple[list[dict], Msg]:
        rows = load_example(name)
        self.store.autosave(rows)
        return rows, msg("Loaded example **{name}**: {n} rows.", name=verbatim(name), n=len(rows))

    def upload(self, path, how, current, encoding="utf-8") -> Imported:
        """Import a file: preference pairs are saved apart (the table unchanged); rows in a known format replace or
        are appended to the table (`how`); other columns ask for a mapping (see map_columns)."""
        records = read_records(path, encoding=encoding or "utf-8")
        if is_pairs_file(records):  # preference pairs for DPO: checked and saved apart, the table left as it is
            value, n = self.import_preferences(records, Path(path).stem)
            m = msg(
                "**{file}** holds {n} preference pairs (prompt, chosen, rejected): checked and saved as `{value}`. "
                "Train on them with the DPO method (Train tab: training method DPO, then pick `{value}` as the "
                "dataset). The table is unchanged.",
                file=verbatim(Path(path).name),
                n=n,
                value=verbatim(value),
            )
            return Imported(m)
        res = to_rows(records)
        if res.needs_mapping:
            m = msg(
                "**{file}**: columns {columns} are not Alpaca, ShareGPT or OpenAI messages. Map them:",
                file=verbatim(Path(path).name),
                columns=res.columns,
            )
            return Imported(m, records=records, columns=res.columns, guess=guess_mapping(res.columns))
        rows = (clean_rows(current) if how == "append" else []) + res.rows
        self.store.autosave(rows)
        said = {"n": len(res.rows), "format": verbatim(res.format), "file": verbatim(Path(path).name)}
        if res.notes:
            m = msg("Imported {n} rows ({format}) from **{file}**. Note: {notes}", notes=joined(res.notes), **said)
        else:
            m = msg("Imported {n} rows ({format}) from **{file}**.", **said)
        return Imported(m, rows=rows)

    def map_columns(self, records, instruction, input_, output, how, current) -> tuple[list[dict], Msg]:
        if not records:
            raise InputError(msg("Import a file first."))
        mapped = apply_mapping(records, {"instruction": instruction, "input": input_, "output": output})
        rows = (clean_rows(current) if how == "append" else []) + mapped
        self.store.autosave(rows)
        return rows, msg("Imported {n} rows with the column mapping.", n=len(mapped))

    def edit(self, op: str, current, n) -> tuple[list[dict], Msg]:
        """One row edit (add, dup, del, clear) applied to the table, the result autosaved."""
        before = table_rows(current)
        if op == "clear":
            self.store.autosave(before)  # the last table stays in the autosave history before clearing
        rows = edit_rows(before, op, n)
        kept = self.store.autosave(rows)
        return rows, msg("{n} rows ({kept} non-empty, autosaved).", n=len(rows), kept=kept)

    def autosave(self, current) -> Msg:
        return msg("Autosaved {n} rows.", n=self.store.autosave(current))

    # --- what training will see ---
    def validate(self, current, model_id, template, thinking, max_len) -> tuple[dict, int | None]:
        """(the validation report of the table's rows, the max sequence length it checked against)."""
        tok = self.tokenizer(model_id)
        limit = int(max_len) if max_len else None
        return validate_rows(clean_rows(current), tok, limit, template, bool(thinking)), limit

    def report_markdown(self, report: dict, lang: str = "en") -> str:
        """The validation report as the tab (and the CLI's `validate`) shows it, in `lang`."""
        return summary_markdown(report, lang=lang)

    def preview(self, current, n, model_id, template, thinking, max_len, responses_only):
        """Row n as training sees it: ((token, "masked" | "trained") pairs, the decoded text, a truncation note
        or None)."""
        rows = clean_rows(current)
        row = rows[row_index(rows, n)]
        tok = self.tokenizer(model_id)
        ex = build_example(row, tok, template, int(max_len) if max_len else None, bool(responses_only), bool(thinking))
        note = msg("[truncated to {n} tokens]", n=int(max_len)) if ex.truncated else None
        return masked_view(ex, tok), tok.decode(ex.input_ids), note

    # --- saved datasets ---
    def save(self, current, name, val_fraction) -> tuple[Msg, str]:
        """Save the table under a name (its validation fraction beside it): (the message, the saved name)."""
        path = self.store.save(name, current, float(val_fraction))
        train, val = split_rows(clean_rows(current), float(val_fraction))
        m = msg(
            "Saved **{name}** ({train} train / {val} validation rows) to `{path}`. Earlier versions are kept in "
            ".history/.",
            name=verbatim(path.stem),
            train=len(train),
            val=len(val),
            path=verbatim(path),
        )
        return m, path.stem

    def load(self, name) -> tuple[list[dict], Msg, float]:
        """A saved dataset's rows (autosaved as the table), the message, its validation fraction."""
        rows = self.store.load(name)
        self.store.autosave(rows)
        m = msg("Loaded **{name}**: {n} rows.", name=verbatim(name), n=len(rows))
        return rows, m, self.store.meta(name).get("val_fraction", 0.1)
