"""Dataset tab: edit, import, validate, preview exactly what training sees, save."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas as pd

from lora_demo.data import (
    FIELDS,
    DatasetStore,
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
from lora_demo.data.formats import MAX_UPLOAD_MB, read_records
from lora_demo.data.plots import length_histogram
from lora_demo.errors import InputError
from lora_demo.models import cached_tokenizer, resolve_model
from lora_demo.ui.common import friendly, show_errors

TEMPLATES = ["alpaca", "chat"]


def _frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([{f: r.get(f, "") for f in FIELDS} for r in rows], columns=list(FIELDS))


def _row_index(rows: list[dict], n) -> int:
    if not rows:
        raise InputError("The table is empty: add or import rows first.")
    try:
        i = int(n)
    except (TypeError, ValueError):
        raise InputError(f"Row number must be a whole number from 1 to {len(rows)}.") from None
    if not 1 <= i <= len(rows):
        raise InputError(f"Row number must be from 1 to {len(rows)}; got {n}.")
    return i - 1


def create_dataset_tab(settings) -> None:
    store = DatasetStore(settings.data_dir)
    policy = settings.policy()
    default_model = resolve_model(settings.model)
    gr.Markdown(
        "Alpaca-style rows: **instruction** (the task), optional **input** (context), **output** (the answer to "
        "learn). Edits autosave; a reload loses nothing. Import JSON, JSONL, CSV or Parquet in Alpaca, ShareGPT or "
        f"OpenAI-messages form (up to {MAX_UPLOAD_MB:g} MB)."
    )
    with gr.Row():
        example = gr.Dropdown(
            example_names(), value="persona" if "persona" in example_names() else None, label="example"
        )
        example_btn = gr.Button("Load example", variant="primary")
        upload = gr.File(label="import a file", file_types=[".json", ".jsonl", ".csv", ".parquet"], type="filepath")
        mode = gr.Radio(["replace", "append"], value="replace", label="imported rows")
    with gr.Row(visible=False) as mapping_row:
        map_note = gr.Markdown()
        map_i = gr.Dropdown([], label="instruction column")
        map_in = gr.Dropdown([], label="input column (optional)")
        map_o = gr.Dropdown([], label="output column")
        map_btn = gr.Button("Apply mapping")
    pending = gr.State([])
    table = gr.Dataframe(
        value=lambda: _frame(store.restore_autosave()), headers=list(FIELDS), column_count=3,
        interactive=True, wrap=True, max_height=420, label="rows", elem_id="dataset-table",
    )  # fmt: skip
    with gr.Row():
        row_no = gr.Number(value=1, precision=0, label="row #", min_width=80)
        add_btn = gr.Button("Add row", size="sm")
        dup_btn = gr.Button("Duplicate row #", size="sm")
        del_btn = gr.Button("Delete row #", size="sm")
        clear_btn = gr.Button("Clear table", size="sm", variant="stop")
    status = gr.Markdown(elem_id="dataset-status")

    with gr.Accordion("Validate and preview", open=True):
        with gr.Row():
            model = gr.Textbox(value=default_model, label="model (its tokenizer counts the tokens)")
            template = gr.Radio(TEMPLATES, value="alpaca", label="template")
            thinking = gr.Checkbox(value=False, label="Qwen3 thinking on")
            max_len = gr.Number(value=512, precision=0, label="max sequence length")
            responses_only = gr.Checkbox(value=True, label="train on responses only")
        validate_btn = gr.Button("Validate", variant="primary")
        report = gr.Markdown(elem_id="validation-report")
        hist = gr.Plot(label="token lengths")
        with gr.Row():
            preview_row = gr.Number(value=1, precision=0, label="preview row #")
            preview_btn = gr.Button("Preview row")
        preview = gr.HighlightedText(
            label="exactly what training sees (masked = prompt, no loss; trained = response)",
            color_map={"masked": "#d1d5db", "trained": "#86efac"}, combine_adjacent=True, show_legend=True,
            elem_id="preview-tokens",
        )  # fmt: skip
        preview_text = gr.Code(label="the text, as the model reads it", language=None, lines=8)

    with gr.Accordion("Save and load", open=True):
        with gr.Row():
            name = gr.Textbox(label="dataset name", placeholder="my-dataset")
            val_frac = gr.Slider(0, 0.5, value=0.1, step=0.05, label="validation fraction")
            save_btn = gr.Button("Save", variant="primary")
        with gr.Row():
            saved = gr.Dropdown(store.names(), label="saved datasets", allow_custom_value=False)
            load_btn = gr.Button("Load")
        save_status = gr.Markdown(elem_id="dataset-save-status")

    # ---- handlers: thin wrappers over lora_demo.data ----
    @friendly
    def on_example(ex):
        rows = load_example(ex)
        store.autosave(rows)
        return _frame(rows), f"Loaded example **{ex}**: {len(rows)} rows."

    @friendly
    def on_upload(path, how, current):
        if not path:
            return gr.skip(), gr.skip(), gr.Row(visible=False), "", [], gr.skip(), gr.skip(), gr.skip()
        records = read_records(path)
        res = to_rows(records)
        if res.needs_mapping:
            cols = res.columns
            guess = {f: next((c for c in cols if f in c.lower()), None) for f in FIELDS}
            note = (f"**{Path(path).name}**: columns {cols} are not Alpaca, ShareGPT or OpenAI messages. "
                    "Map them:")  # fmt: skip
            return (gr.skip(), note, gr.Row(visible=True), note, records, gr.Dropdown(cols, value=guess["instruction"]),
                    gr.Dropdown([None, *cols], value=guess["input"]), gr.Dropdown(cols, value=guess["output"]))  # fmt: skip
        rows = (clean_rows(current) if how == "append" else []) + res.rows
        store.autosave(rows)
        msg = f"Imported {len(res.rows)} rows ({res.format}) from **{Path(path).name}**."
        if res.notes:
            msg += " Note: " + "; ".join(res.notes)
        return _frame(rows), msg, gr.Row(visible=False), "", [], gr.skip(), gr.skip(), gr.skip()

    @friendly
    def on_mapping(records, mi, min_, mo, how, current):
        if not records:
            raise InputError("Import a file first.")
        mapped = apply_mapping(records, {"instruction": mi, "input": min_, "output": mo})
        rows = (clean_rows(current) if how == "append" else []) + mapped
        store.autosave(rows)
        return _frame(rows), f"Imported {len(mapped)} rows with the column mapping.", gr.Row(visible=False), []

    def edit(op):
        @friendly
        def handler(current, n):
            rows = [{f: "" if r.get(f) is None else str(r.get(f)) for f in FIELDS} for r in _frame_rows(current)]
            if op == "add":
                rows.append({f: "" for f in FIELDS})
            elif op == "dup":
                i = _row_index(rows, n)
                rows.insert(i + 1, dict(rows[i]))
            elif op == "del":
                rows.pop(_row_index(rows, n))
            elif op == "clear":
                store.autosave(rows)  # keep the last table in .autosave history before clearing
                rows = []
            kept = store.autosave(rows)
            return _frame(rows), f"{len(rows)} rows ({kept} non-empty, autosaved)."

        return handler

    @friendly
    def on_edit(current):
        kept = store.autosave(current)
        return f"Autosaved {kept} rows."

    @friendly
    def on_validate(current, model_id, tmpl, think, ml):
        tok = cached_tokenizer(policy.check_model(model_id))
        rep = validate_rows(clean_rows(current), tok, int(ml) if ml else None, tmpl, bool(think))
        return summary_markdown(rep), length_histogram(rep["lengths"], int(ml) if ml else None)

    @friendly
    def on_preview(current, n, model_id, tmpl, think, ml, resp_only):
        rows = clean_rows(current)
        row = rows[_row_index(rows, n)]
        tok = cached_tokenizer(policy.check_model(model_id))
        ex = build_example(row, tok, tmpl, int(ml) if ml else None, bool(resp_only), bool(think))
        text = tok.decode(ex.input_ids)
        note = f"\n\n[truncated to {int(ml)} tokens]" if ex.truncated else ""
        return masked_view(ex, tok), text + note

    @friendly
    def on_save(current, nm, frac):
        path = store.save(nm, current, float(frac))
        train, val = split_rows(clean_rows(current), float(frac))
        return (f"Saved **{path.stem}** ({len(train)} train / {len(val)} validation rows) to `{path}`. "
                "Earlier versions are kept in .history/.", gr.Dropdown(store.names(), value=path.stem))  # fmt: skip

    @friendly
    def on_load(nm):
        rows = store.load(nm)
        store.autosave(rows)
        frac = store.meta(nm).get("val_fraction", 0.1)
        return _frame(rows), f"Loaded **{nm}**: {len(rows)} rows.", nm, frac

    show_errors(example_btn.click(on_example, example, [table, status], api_name="dataset_load_example"), status)
    show_errors(upload.upload(on_upload, [upload, mode, table], [table, status, mapping_row, map_note, pending, map_i,
                                                                 map_in, map_o], api_name="dataset_import"), status)  # fmt: skip
    show_errors(map_btn.click(on_mapping, [pending, map_i, map_in, map_o, mode, table], [table, status, mapping_row,
                                                                                         pending],
                              api_name="dataset_map_columns"), status)  # fmt: skip
    for button, op, api in ((add_btn, "add", "dataset_add_row"), (dup_btn, "dup", "dataset_duplicate_row"),
                            (del_btn, "del", "dataset_delete_row"), (clear_btn, "clear", "dataset_clear")):  # fmt: skip
        show_errors(button.click(edit(op), [table, row_no], [table, status], api_name=api), status)
    show_errors(table.input(on_edit, table, status, api_name="dataset_autosave", show_progress="hidden"), status)
    show_errors(validate_btn.click(on_validate, [table, model, template, thinking, max_len], [report, hist],
                                   api_name="dataset_validate"), report)  # fmt: skip
    show_errors(preview_btn.click(on_preview, [table, preview_row, model, template, thinking, max_len, responses_only],
                                  [preview, preview_text], api_name="dataset_preview"), report)  # fmt: skip
    show_errors(
        save_btn.click(on_save, [table, name, val_frac], [save_status, saved], api_name="dataset_save"), save_status
    )
    show_errors(
        load_btn.click(on_load, saved, [table, save_status, name, val_frac], api_name="dataset_load"), save_status
    )


def _frame_rows(current) -> list[dict]:
    """All rows of the editor, blank ones included (adding a row must keep earlier blank rows)."""
    if current is None:
        return []
    if hasattr(current, "to_dict"):
        return current.fillna("").to_dict("records")
    return [dict(zip(FIELDS, r, strict=False)) if isinstance(r, (list, tuple)) else r for r in current]
