"""The Dataset tab's named endpoints through gradio_client."""

from __future__ import annotations

import gradio as gr
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError

from lora_demo.data import load_example


def _table(rows):
    return {
        "headers": ["instruction", "input", "output"],
        "data": [[r["instruction"], r["input"], r["output"]] for r in rows],
    }


def test_load_validate_preview_save(app_client, app_dirs):
    table, status = app_client.predict("persona", api_name="/dataset_load_example")
    assert len(table["data"]) == len(load_example("persona")) and "44 rows" in status
    report, _hist = app_client.predict(
        table, "smollm2-135m-instruct", "alpaca", False, 512, api_name="/dataset_validate"
    )
    assert "0 error(s), 0 warning(s)" in report
    tokens, text = app_client.predict(
        table, 1, "smollm2-135m-instruct", "alpaca", False, 512, True, api_name="/dataset_preview"
    )
    cats = {t["class_or_confidence"] for t in tokens} if isinstance(tokens, list) else {t[1] for t in tokens["value"]}
    assert cats == {"masked", "trained"} and "### Response:" in text and text.endswith("<|im_end|>")
    msg, saved = app_client.predict(table, "persona-copy", 0.1, api_name="/dataset_save")
    assert (app_dirs / "data" / "persona-copy.jsonl").is_file() and "validation" in msg
    table2, *_ = app_client.predict("persona-copy", api_name="/dataset_load")
    assert table2["data"] == table["data"]


def test_row_operations_and_autosave(app_client, app_dirs):
    rows = load_example("seed")
    table, _ = app_client.predict(_table(rows), 1, api_name="/dataset_duplicate_row")
    assert len(table["data"]) == 3 and table["data"][0] == table["data"][1]
    table, _ = app_client.predict(table, 1, api_name="/dataset_delete_row")
    assert len(table["data"]) == 2
    table, _ = app_client.predict(table, 1, api_name="/dataset_add_row")
    assert len(table["data"]) == 3 and table["data"][-1] == ["", "", ""]
    status = app_client.predict(_table(rows), api_name="/dataset_autosave")
    assert "Autosaved 2 rows" in status
    assert (app_dirs / "data" / ".autosave.jsonl").read_text(encoding="utf-8").count("\n") == 2
    with pytest.raises(AppError, match="Row number must be from 1 to 2"):
        app_client.predict(_table(rows), 9, api_name="/dataset_delete_row")


def test_import_with_column_mapping(app_client, tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text("question,answer\nWhat is 2+2?,4\nCapital of France?,Paris\n")
    out = app_client.predict(handle_file(str(path)), "replace", _table([]), api_name="/dataset_import")
    assert "Map them" in out[1]
    # The mapping step holds the records in session state, which a stateless API call cannot reuse;
    # the engine's apply_mapping is tested directly in test_data.py.


@pytest.mark.parametrize(
    "content, message",
    [(b'[{"instruction": "a", "outp', "not valid JSON"), (b"", "is empty"), (bytes(range(256)) * 4, "not a text file")],
)
def test_bad_uploads(app_client, tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(AppError, match=message):
        app_client.predict(handle_file(str(path)), "replace", _table([]), api_name="/dataset_import")


def test_bad_names_refused(app_client):
    for name in ["../../etc/passwd", "/etc/passwd", ".."]:
        with pytest.raises(AppError, match="not allowed"):
            app_client.predict(_table(load_example("seed")), name, 0.1, api_name="/dataset_save")


def test_a_chinese_session_gets_the_dataset_tab_in_chinese(app_client):
    """Issue 14: a visitor who switched to 简体中文 gets the status lines, the validation report, the preview's
    categories and the errors in Chinese, with the dataset's columns and names as they are; the other stays English."""
    from gradio_client import Client

    zh = Client(app_client.src, verbose=False)  # a session of its own
    zh.predict("zh", api_name="/set_language")
    table, status = zh.predict("seed", api_name="/dataset_load_example")
    assert status == "已加载示例 **seed**：2 行。", status
    report, _hist = zh.predict(table, "smollm2-135m-instruct", "alpaca", False, 16, api_name="/dataset_validate")
    assert report.startswith("**共 2 行：0 个错误，2 个警告。**") and "超过最大序列长度 16" in report, report
    tokens, text = zh.predict(table, 1, "smollm2-135m-instruct", "alpaca", False, 16, True, api_name="/dataset_preview")
    cats = {t["class_or_confidence"] for t in tokens} if isinstance(tokens, list) else {t[1] for t in tokens["value"]}
    assert cats == {"掩码"} and text.endswith("[已截断为 16 个词元]"), (cats, text)
    with pytest.raises(AppError, match="行号必须在 1 到 2 之间；收到的是 9。"):
        zh.predict(table, 9, api_name="/dataset_delete_row")
    with pytest.raises(AppError, match="没有可保存的内容"):
        zh.predict(_table([]), "empty", 0.1, api_name="/dataset_save")
    _table2, status = app_client.predict("seed", api_name="/dataset_load_example")
    assert status == "Loaded example **seed**: 2 rows."


def test_the_language_switch_renders_the_panels_again(tmp_path):
    """The switch (ui.common.on_language) re-renders what the Dataset actions showed, in the session's new
    language, and leaves a panel alone when it shows something else now (an error written there)."""
    import types

    from gradio.context import LocalContext

    from lora_demo.engine import AppSettings, LabEngine
    from lora_demo.ui import common
    from lora_demo.ui.dataset_tab import DatasetActions

    act = DatasetActions(LabEngine(AppSettings(runs_dir=tmp_path / "runs", data_dir=tmp_path / "data")))
    token = LocalContext.request.set(types.SimpleNamespace(session_hash="dataset-switch"))
    try:
        common.SESSION_LANG.set("zh")
        table, status = act.load_example("seed")
        report, _ = act.validate(table, "smollm2-135m-instruct", "alpaca", False, 512)
        act.preview(table, 1, "smollm2-135m-instruct", "alpaca", False, 512, True)
        assert status.startswith("已加载示例") and report.startswith("**共 2 行")
        common.SESSION_LANG.set("en")
        assert act.again("status")(status) == "Loaded example **seed**: 2 rows."
        assert act.again("report")(report).startswith("**2 rows: 0 error(s), 0 warning(s).** Ready to train.")
        assert act.again("report")("⚠️ an error shown here since") == gr.skip()
        assert act.redo("hist")().layout.title.text == "Tokens per example (prompt + response)"
        preview, text = act.repreview()
        assert {t["class_or_confidence"] for t in preview.value} == set(preview.color_map) == {"masked", "trained"}
        assert text.startswith("Below is an instruction")
        assert act.again("save")("") == gr.skip()  # nothing saved in this session yet
    finally:
        LocalContext.request.reset(token)
