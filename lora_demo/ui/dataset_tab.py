"""Dataset tab: edit, import, validate, preview exactly what training sees, save.

Layout only: components are laid out here and wired to DatasetActions, whose methods call lora_demo.data through
the LabEngine's DatasetStore. Each action can be called without launching the app.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas as pd

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
from lora_demo.data.formats import MAX_UPLOAD_MB, read_records
from lora_demo.data.plots import length_histogram
from lora_demo.errors import InputError
from lora_demo.models import cached_tokenizer
from lora_demo.ui.common import friendly, show_errors

TEMPLATES = ["alpaca", "chat"]


def no_mapping() -> tuple:
    """The column-mapping row hidden and emptied."""
    return gr.Row(visible=False), "", [], gr.skip(), gr.skip(), gr.skip()


def _frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([{f: r.get(f, "") for f in FIELDS} for r in rows], columns=list(FIELDS))


class DatasetActions:
    """The Dataset tab's event handlers, over one LabEngine."""

    def __init__(self, lab):
        self.lab = lab
        self.store = lab.datasets

    @friendly
    def load_example(self, name):
        rows = load_example(name)
        self.store.autosave(rows)
        return _frame(rows), f"Loaded example **{name}**: {len(rows)} rows."

    @friendly
    def upload(self, path, how, current):
        if not path:
            return (gr.skip(), gr.skip(), *no_mapping())
        records = read_records(path)
        res = to_rows(records)
        if res.needs_mapping:
            cols, guess = res.columns, guess_mapping(res.columns)
            note = f"**{Path(path).name}**: columns {cols} are not Alpaca, ShareGPT or OpenAI messages. Map them:"
            return (gr.skip(), note, gr.Row(visible=True), note, records, gr.Dropdown(cols, value=guess["instruction"]),
                    gr.Dropdown([None, *cols], value=guess["input"]), gr.Dropdown(cols, value=guess["output"]))  # fmt: skip
        rows = (clean_rows(current) if how == "append" else []) + res.rows
        self.store.autosave(rows)
        msg = f"Imported {len(res.rows)} rows ({res.format}) from **{Path(path).name}**."
        if res.notes:
            msg += " Note: " + "; ".join(res.notes)
        return (_frame(rows), msg, *no_mapping())

    @friendly
    def map_columns(self, records, instruction, input_, output, how, current):
        if not records:
            raise InputError("Import a file first.")
        mapped = apply_mapping(records, {"instruction": instruction, "input": input_, "output": output})
        rows = (clean_rows(current) if how == "append" else []) + mapped
        self.store.autosave(rows)
        return _frame(rows), f"Imported {len(mapped)} rows with the column mapping.", gr.Row(visible=False), []

    def edit(self, op: str):
        """A handler applying one row edit (add, dup, del, clear) to the table and autosaving the result."""

        @friendly
        def handler(current, n):
            before = table_rows(current)
            if op == "clear":
                self.store.autosave(before)  # the last table stays in the autosave history before clearing
            rows = edit_rows(before, op, n)
            kept = self.store.autosave(rows)
            return _frame(rows), f"{len(rows)} rows ({kept} non-empty, autosaved)."

        return handler

    @friendly
    def autosave(self, current) -> str:
        return f"Autosaved {self.store.autosave(current)} rows."

    @friendly
    def validate(self, current, model_id, template, thinking, max_len):
        tok = cached_tokenizer(self.lab.policy.check_model(model_id))
        limit = int(max_len) if max_len else None
        rep = validate_rows(clean_rows(current), tok, limit, template, bool(thinking))
        return summary_markdown(rep), length_histogram(rep["lengths"], limit)

    @friendly
    def preview(self, current, n, model_id, template, thinking, max_len, responses_only):
        rows = clean_rows(current)
        row = rows[row_index(rows, n)]
        tok = cached_tokenizer(self.lab.policy.check_model(model_id))
        ex = build_example(row, tok, template, int(max_len) if max_len else None, bool(responses_only), bool(thinking))
        note = f"\n\n[truncated to {int(max_len)} tokens]" if ex.truncated else ""
        return masked_view(ex, tok), tok.decode(ex.input_ids) + note

    @friendly
    def save(self, current, name, val_fraction):
        path = self.store.save(name, current, float(val_fraction))
        train, val = split_rows(clean_rows(current), float(val_fraction))
        return (f"Saved **{path.stem}** ({len(train)} train / {len(val)} validation rows) to `{path}`. "
                "Earlier versions are kept in .history/.", gr.Dropdown(self.store.names(), value=path.stem))  # fmt: skip

    @friendly
    def load(self, name):
        rows = self.store.load(name)
        self.store.autosave(rows)
        return (
            _frame(rows),
            f"Loaded **{name}**: {len(rows)} rows.",
            name,
            self.store.meta(name).get("val_fraction", 0.1),
        )


def _import_row() -> dict:
    with gr.Row():
        names = example_names()
        c = {"example": gr.Dropdown(names, value="persona" if "persona" in names else None, label="example")}
        c["example_btn"] = gr.Button("Load example", variant="primary")
        c["upload"] = gr.File(
            label="import a file", file_types=[".json", ".jsonl", ".csv", ".parquet"], type="filepath"
        )
        c["mode"] = gr.Radio(["replace", "append"], value="replace", label="imported rows")
    with gr.Row(visible=False) as c["mapping_row"]:
        c["map_note"] = gr.Markdown()
        c["map_i"] = gr.Dropdown([], label="instruction column")
        c["map_in"] = gr.Dropdown([], label="input column (optional)")
        c["map_o"] = gr.Dropdown([], label="output column")
        c["map_btn"] = gr.Button("Apply mapping")
    c["pending"] = gr.State([])
    return c


def _validate_box(default_model: str) -> dict:
    with gr.Accordion("Validate and preview", open=True):
        with gr.Row():
            c = {"model": gr.Textbox(value=default_model, label="model (its tokenizer counts the tokens)")}
            c["template"] = gr.Radio(TEMPLATES, value="alpaca", label="template")
            c["thinking"] = gr.Checkbox(value=False, label="Qwen3 thinking on")
            c["max_len"] = gr.Number(value=512, precision=0, label="max sequence length")
            c["responses_only"] = gr.Checkbox(value=True, label="train on responses only")
        c["validate_btn"] = gr.Button("Validate", variant="primary")
        c["report"] = gr.Markdown(elem_id="validation-report")
        c["hist"] = gr.Plot(label="token lengths")
        with gr.Row():
            c["preview_row"] = gr.Number(value=1, precision=0, label="preview row #")
            c["preview_btn"] = gr.Button("Preview row")
        c["preview"] = gr.HighlightedText(
            label="exactly what training sees (masked = prompt, no loss; trained = response)",
            color_map={"masked": "#d1d5db", "trained": "#86efac"}, combine_adjacent=True, show_legend=True,
            elem_id="preview-tokens",
        )  # fmt: skip
        c["preview_text"] = gr.Code(label="the text, as the model reads it", language=None, lines=8)
    return c


def _save_box(names: list[str]) -> dict:
    with gr.Accordion("Save and load", open=True):
        with gr.Row():
            c = {"name": gr.Textbox(label="dataset name", placeholder="my-dataset")}
            c["val_frac"] = gr.Slider(0, 0.5, value=0.1, step=0.05, label="validation fraction")
            c["save_btn"] = gr.Button("Save", variant="primary")
        with gr.Row():
            c["saved"] = gr.Dropdown(names, label="saved datasets", allow_custom_value=False)
            c["load_btn"] = gr.Button("Load")
        c["status"] = gr.Markdown(elem_id="dataset-save-status")
    return c


def create_dataset_tab(lab) -> None:
    act = DatasetActions(lab)
    gr.Markdown(
        "Alpaca-style rows: **instruction** (the task), optional **input** (context), **output** (the answer to "
        "learn). Edits autosave; a reload loses nothing. Import JSON, JSONL, CSV or Parquet in Alpaca, ShareGPT or "
        f"OpenAI-messages form (up to {MAX_UPLOAD_MB:g} MB)."
    )
    imp = _import_row()
    table = gr.Dataframe(
        value=lambda: _frame(act.store.restore_autosave()), headers=list(FIELDS), column_count=3,
        interactive=True, wrap=True, max_height=420, label="rows", elem_id="dataset-table",
    )  # fmt: skip
    with gr.Row():
        row_no = gr.Number(value=1, precision=0, label="row #", min_width=80)
        buttons = {op: gr.Button(label, size="sm", **kw) for op, label, kw in (
            ("add", "Add row", {}), ("dup", "Duplicate row #", {}), ("del", "Delete row #", {}),
            ("clear", "Clear table", {"variant": "stop"}))}  # fmt: skip
    status = gr.Markdown(elem_id="dataset-status")
    val = _validate_box(lab.default_model)
    sav = _save_box(act.store.names())
    _wire(act, imp, table, row_no, buttons, status, val, sav)


def _wire(act: DatasetActions, imp, table, row_no, buttons, status, val, sav) -> None:
    mapping = [imp["mapping_row"], imp["map_note"], imp["pending"], imp["map_i"], imp["map_in"], imp["map_o"]]
    show_errors(imp["example_btn"].click(act.load_example, imp["example"], [table, status],
                                         api_name="dataset_load_example"), status)  # fmt: skip
    show_errors(imp["upload"].upload(act.upload, [imp["upload"], imp["mode"], table], [table, status, *mapping],
                                     api_name="dataset_import"), status)  # fmt: skip
    show_errors(imp["map_btn"].click(act.map_columns, [imp["pending"], imp["map_i"], imp["map_in"], imp["map_o"],
                                                       imp["mode"], table],
                                     [table, status, imp["mapping_row"], imp["pending"]],
                                     api_name="dataset_map_columns"), status)  # fmt: skip
    apis = {
        "add": "dataset_add_row",
        "dup": "dataset_duplicate_row",
        "del": "dataset_delete_row",
        "clear": "dataset_clear",
    }
    for op, button in buttons.items():
        show_errors(button.click(act.edit(op), [table, row_no], [table, status], api_name=apis[op]), status)
    show_errors(table.input(act.autosave, table, status, api_name="dataset_autosave", show_progress="hidden"), status)
    settings = [val["model"], val["template"], val["thinking"], val["max_len"]]
    show_errors(val["validate_btn"].click(act.validate, [table, *settings], [val["report"], val["hist"]],
                                          api_name="dataset_validate"), val["report"])  # fmt: skip
    show_errors(val["preview_btn"].click(act.preview, [table, val["preview_row"], *settings, val["responses_only"]],
                                         [val["preview"], val["preview_text"]], api_name="dataset_preview"),
                val["report"])  # fmt: skip
    show_errors(sav["save_btn"].click(act.save, [table, sav["name"], sav["val_frac"]], [sav["status"], sav["saved"]],
                                      api_name="dataset_save"), sav["status"])  # fmt: skip
    show_errors(sav["load_btn"].click(act.load, sav["saved"], [table, sav["status"], sav["name"], sav["val_frac"]],
                                      api_name="dataset_load"), sav["status"])  # fmt: skip
