"""Dataset tab: edit, import, validate, preview exactly what training sees, save.

Layout only: components are laid out here and wired to DatasetActions, which turns what the engine's dataset
actions (`lab.dataset`, lora_demo/data/actions.py) return into component updates. Each action can be called without
launching the app.

Every text the actions write (status lines, the validation report and its histogram, the preview's categories) is
rendered in the browser session's language, and kept as a function of the language (_Shown) so that the language
switch renders it again. The table's columns instruction / input / output are the Alpaca format and stay as they are.
"""

from __future__ import annotations

import inspect
import logging

import gradio as gr
import pandas as pd

from lora_demo.i18n import LANGS, Msg, msg, render
from lora_demo.ui.common import dynamic, friendly, lang, on_language, on_load, session_key, show, show_errors
from lora_demo.ui.sessions import SessionStore
from lora_demo.ui.views.data import length_histogram

log = logging.getLogger("lora_demo.ui")
# The preview's two kinds of tokens (masked_view's categories) and their colours. The preview shows them in the
# page's language: its colour map (the legend) is set at build and by the switch, the categories by the preview.
CATEGORIES = {"masked": (msg("masked"), "#d1d5db"), "trained": (msg("trained"), "#86efac")}


def _category(c, lang_: str) -> str:
    return str(render(CATEGORIES[c][0], lang_)) if c in CATEGORIES else c  # plain str: orjson wants str dict keys


def preview_colors(lang_: str) -> dict[str, str]:
    """The preview's colour map, its legend in `lang_`."""
    return {_category(c, lang_): colour for c, (_, colour) in CATEGORIES.items()}


def preview_value(view: list[tuple[str, str | None]], lang_: str) -> list[tuple[str, str | None]]:
    """masked_view's (token, category) pairs with the categories in `lang_`."""
    return [(piece, _category(c, lang_)) for piece, c in view]


class _Shown:
    """What each browser session's dataset panels show, as functions of the language: the switch renders them again
    (ui.common.on_language) without reading the file or validating again. Calls without a session keep nothing."""

    def __init__(self, size: int = 1024):
        self.by_session = SessionStore(size)

    def keep(self, slot: str, fn) -> None:
        key = session_key()
        if key is not None:
            self.by_session.update(key, lambda slots: {**slots, slot: fn}, {})

    def get(self, slot: str):
        key = session_key()
        return self.by_session.get(key, {}).get(slot) if key is not None else None


def _same(a, b) -> bool:
    """Whether a Markdown's value (as the browser sends it back: cleandoc'ed) is the text `a`."""
    return isinstance(a, str) and isinstance(b, str) and inspect.cleandoc(a).strip() == inspect.cleandoc(b).strip()


def no_mapping() -> tuple:
    """The column-mapping row hidden and emptied."""
    return gr.Row(visible=False), "", [], gr.skip(), gr.skip(), gr.skip()


class DatasetActions:
    """The Dataset tab's event handlers, over one LabEngine: its dataset actions (`lab.dataset`) do the work; these
    turn the rows and messages they return into component updates in the session's language."""

    def __init__(self, lab):
        self.lab = lab
        self.work = lab.dataset
        self.shown = _Shown()

    def frame(self, rows: list[dict]) -> pd.DataFrame:
        """Rows as the table shows them (the Alpaca columns)."""
        fields = list(self.work.FIELDS)
        return pd.DataFrame([{f: r.get(f, "") for f in fields} for r in rows], columns=fields)

    def _say(self, slot: str, m: Msg) -> str:
        """m in this session's language, kept so that the language switch can render it again."""
        self.shown.keep(slot, lambda lang_: render(m, lang_))
        return show(m)

    def again(self, slot: str):
        """The switch's re-render of a Markdown `slot`: (current value) -> the same text in the new language, or
        skip when the Markdown shows something else now (an error written by show_errors, an emptied note)."""

        def refresh(current):
            try:
                fn = self.shown.get(slot)
                if fn is None or not any(_same(fn(code), current) for code in LANGS):
                    return gr.skip()
                return fn(lang())
            except Exception:  # noqa: BLE001 - the switch must never fail over one panel
                log.exception("re-rendering the dataset %s failed", slot)
                return gr.skip()

        return refresh

    def redo(self, slot: str):
        """The switch's re-render of a panel only its action writes (the histogram): as kept, or skip."""

        def refresh():
            try:
                fn = self.shown.get(slot)
                return gr.skip() if fn is None else fn(lang())
            except Exception:  # noqa: BLE001 - the switch must never fail over one panel
                log.exception("re-rendering the dataset %s failed", slot)
                return gr.skip()

        return refresh

    def repreview(self):
        """The switch's re-render of the preview: its legend always, the tokens' categories and the truncation note
        when this session previewed a row."""
        try:
            fn = self.shown.get("preview")
            if fn is not None:
                value, text = fn(lang())
                return gr.HighlightedText(value=value, color_map=preview_colors(lang())), text
        except Exception:  # noqa: BLE001 - the switch must never fail over one panel
            log.exception("re-rendering the dataset preview failed")
        return gr.HighlightedText(color_map=preview_colors(lang())), gr.skip()

    @friendly
    def load_example(self, name):
        rows, m = self.work.load_example(name)
        return self.frame(rows), self._say("status", m)

    @friendly
    def upload(self, path, how, current, encoding="utf-8"):
        if not path:
            return (gr.skip(), gr.skip(), *no_mapping())
        got = self.work.upload(path, how, current, encoding)
        if got.needs_mapping:
            return (
                gr.skip(),
                self._say("status", got.message),
                gr.Row(visible=True),
                self._say("map_note", got.message),
                got.records,
                gr.Dropdown(got.columns, value=got.guess["instruction"]),
                gr.Dropdown([None, *got.columns], value=got.guess["input"]),
                gr.Dropdown(got.columns, value=got.guess["output"]),
            )
        table = gr.skip() if got.rows is None else self.frame(got.rows)  # None: preference pairs, saved apart
        return (table, self._say("status", got.message), *no_mapping())

    @friendly
    def map_columns(self, records, instruction, input_, output, how, current):
        rows, m = self.work.map_columns(records, instruction, input_, output, how, current)
        return self.frame(rows), self._say("status", m), gr.Row(visible=False), []

    def edit(self, op: str):
        """A handler applying one row edit (add, dup, del, clear) to the table and autosaving the result."""

        @friendly
        def handler(current, n):
            rows, m = self.work.edit(op, current, n)
            return self.frame(rows), self._say("status", m)

        return handler

    @friendly
    def autosave(self, current) -> str:
        return self._say("status", self.work.autosave(current))

    @friendly
    def validate(self, current, model_id, template, thinking, max_len):
        rep, limit = self.work.validate(current, model_id, template, thinking, max_len)
        self.shown.keep("report", lambda lang_: self.work.report_markdown(rep, lang_))
        self.shown.keep("hist", lambda lang_: length_histogram(rep["lengths"], limit, lang_))
        return self.work.report_markdown(rep, lang()), length_histogram(rep["lengths"], limit, lang())

    @friendly
    def preview(self, current, n, model_id, template, thinking, max_len, responses_only):
        view, text, note = self.work.preview(current, n, model_id, template, thinking, max_len, responses_only)

        def shown(lang_):
            return preview_value(view, lang_), text if note is None else f"{text}\n\n{render(note, lang_)}"

        self.shown.keep("preview", shown)
        return shown(lang())

    @friendly
    def save(self, current, name, val_fraction):
        m, saved = self.work.save(current, name, val_fraction)
        return self._say("save", m), gr.Dropdown(self.work.names(), value=saved)

    @friendly
    def load(self, name):
        rows, m, val_fraction = self.work.load(name)
        return self.frame(rows), self._say("save", m), name, val_fraction


def _import_row(work) -> dict:
    with gr.Row():
        names, first = work.examples()
        c = {"example": dynamic(gr.Dropdown(names, value=first, label="example"))}
        c["example_btn"] = gr.Button("Load example")
        c["upload"] = gr.File(label="import a file", file_types=list(work.FILE_TYPES), type="filepath")
        c["mode"] = gr.Radio(["replace", "append"], value="replace", label="imported rows")
        c["encoding"] = gr.Dropdown(
            [(label, code) for code, label in work.ENCODINGS.items()],
            value="utf-8",
            label="file encoding",
            min_width=120,
            elem_id="dataset-encoding",
        )
    with gr.Row(visible=False) as c["mapping_row"]:
        c["map_note"] = dynamic(gr.Markdown())
        c["map_i"] = dynamic(gr.Dropdown([], label="instruction column"))
        c["map_in"] = dynamic(gr.Dropdown([], label="input column (optional)"))
        c["map_o"] = dynamic(gr.Dropdown([], label="output column"))
        c["map_btn"] = gr.Button("Apply mapping")
    c["pending"] = gr.State([])
    return c


def _validate_box(default_model: str, templates: list[str]) -> dict:
    with gr.Accordion("Validate and preview", open=True):
        with gr.Row():
            c = {"model": gr.Textbox(value=default_model, label="model (its tokenizer counts the tokens)")}
            c["template"] = gr.Radio(templates, value="alpaca", label="template")
            c["thinking"] = gr.Checkbox(value=False, label="Qwen3 thinking on")
            c["max_len"] = gr.Number(value=512, precision=0, label="max sequence length")
            c["responses_only"] = gr.Checkbox(value=True, label="train on responses only")
        c["validate_btn"] = gr.Button("Validate")
        c["report"] = dynamic(gr.Markdown(elem_id="validation-report"))
        c["hist"] = gr.Plot(label="token lengths")
        with gr.Row():
            c["preview_row"] = gr.Number(value=1, precision=0, label="preview row #")
            c["preview_btn"] = gr.Button("Preview row")
        c["preview"] = gr.HighlightedText(
            label="exactly what training sees (masked = prompt, no loss; trained = response)",
            color_map=preview_colors(lang()),
            combine_adjacent=True,
            show_legend=True,  # lang(): the build's
            elem_id="preview-tokens",
        )
        c["preview_text"] = gr.Code(label="the text, as the model reads it", language=None, lines=8)
    return c


def _save_box() -> dict:
    with gr.Accordion("Save and load", open=True):
        with gr.Row():
            c = {"name": gr.Textbox(label="dataset name", placeholder="my-dataset")}
            c["val_frac"] = gr.Slider(0, 0.5, value=0.1, step=0.05, label="validation fraction")
            c["save_btn"] = gr.Button("Save", variant="primary")
        with gr.Row():
            # Filled per session when asked (page load, focus): no name is in the built page, and a dataset saved
            # after the app started can be named by any session (the store checks the name).
            c["saved"] = dynamic(
                gr.Dropdown([], label="saved datasets", allow_custom_value=True, elem_id="dataset-saved")
            )
            c["load_btn"] = gr.Button("Load")
        c["status"] = dynamic(gr.Markdown(elem_id="dataset-save-status"))
    return c


def create_dataset_tab(lab) -> tuple:
    """Returns (the Save event, the saved-datasets list): the Train tab picks up what this visitor saves."""
    act = DatasetActions(lab)
    intro = msg(
        "Alpaca-style rows: **instruction** (the task), optional **input** (context), **output** (the answer "
        "to learn). Edits autosave; a reload loses nothing. Import JSON, JSONL, CSV or Parquet in Alpaca, "
        "ShareGPT or OpenAI-messages form (up to {mb:g} MB).",
        mb=act.work.MAX_UPLOAD_MB,
    )
    gr.Markdown(intro).value = intro  # gr.Markdown keeps a plain str; the switch translates the Msg (its limit kept)
    imp = _import_row(act.work)
    table = gr.Dataframe(
        value=lambda: act.frame(act.work.restore_autosave()),
        headers=list(act.work.FIELDS),
        column_count=3,
        interactive=True,
        wrap=True,
        max_height=420,
        label="rows",
        elem_id="dataset-table",
    )
    with gr.Row():
        row_no = gr.Number(value=1, precision=0, label="row #", min_width=80)
        buttons = {
            op: gr.Button(label, size="sm", **kw)
            for op, label, kw in (
                ("add", "Add row", {}),
                ("dup", "Duplicate row #", {}),
                ("del", "Delete row #", {}),
                ("clear", "Clear table", {"variant": "stop"}),
            )
        }
    status = dynamic(gr.Markdown(elem_id="dataset-status"))
    val = _validate_box(lab.default_model, list(act.work.TEMPLATES))
    sav = _save_box()
    saved = _wire(act, imp, table, row_no, buttons, status, val, sav)
    for slot, md in (
        ("status", status),
        ("map_note", imp["map_note"]),
        ("report", val["report"]),
        ("save", sav["status"]),
    ):
        on_language(act.again(slot), md, md)
    on_language(act.redo("hist"), None, val["hist"])
    on_language(act.repreview, None, [val["preview"], val["preview_text"]])
    return saved, sav["saved"]


def _wire(act: DatasetActions, imp, table, row_no, buttons, status, val, sav):
    mapping = [imp["mapping_row"], imp["map_note"], imp["pending"], imp["map_i"], imp["map_in"], imp["map_o"]]
    show_errors(
        imp["example_btn"].click(act.load_example, imp["example"], [table, status], api_name="dataset_load_example"),
        status,
    )
    show_errors(
        imp["upload"].upload(
            act.upload,
            [imp["upload"], imp["mode"], table, imp["encoding"]],
            [table, status, *mapping],
            api_name="dataset_import",
        ),
        status,
    )
    show_errors(
        imp["map_btn"].click(
            act.map_columns,
            [imp["pending"], imp["map_i"], imp["map_in"], imp["map_o"], imp["mode"], table],
            [table, status, imp["mapping_row"], imp["pending"]],
            api_name="dataset_map_columns",
        ),
        status,
    )
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
    show_errors(
        val["validate_btn"].click(
            act.validate, [table, *settings], [val["report"], val["hist"]], api_name="dataset_validate"
        ),
        val["report"],
    )
    show_errors(
        val["preview_btn"].click(
            act.preview,
            [table, val["preview_row"], *settings, val["responses_only"]],
            [val["preview"], val["preview_text"]],
            api_name="dataset_preview",
        ),
        val["report"],
    )
    saved = sav["save_btn"].click(
        act.save, [table, sav["name"], sav["val_frac"]], [sav["status"], sav["saved"]], api_name="dataset_save"
    )
    show_errors(saved, sav["status"])
    saved_list = dict(
        fn=lambda: gr.Dropdown(choices=act.work.names()),
        inputs=None,
        outputs=sav["saved"],
        api_visibility="private",
        show_progress="hidden",
    )
    sav["saved"].focus(**saved_list)
    on_load(**saved_list)
    show_errors(
        sav["load_btn"].click(
            act.load, sav["saved"], [table, sav["status"], sav["name"], sav["val_frac"]], api_name="dataset_load"
        ),
        sav["status"],
    )
    return saved
