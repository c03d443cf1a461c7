"""Dataset engine: formats round-trip, every validation rule fires, masking, bad files, saving."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lora_demo.data import (
    IGNORE,
    DatasetStore,
    apply_mapping,
    build_example,
    import_file,
    load_example,
    masked_view,
    split_rows,
    validate_rows,
    write_rows,
)
from lora_demo.errors import InputError
from lora_demo.models import cached_tokenizer

ROWS = [
    {"instruction": "Translate to French", "input": "Good morning", "output": "Bonjour"},
    {"instruction": "解释什么是人工智能", "input": "", "output": "人工智能是让机器模拟人类智能的技术。"},
    {"instruction": 'Quote "this", please', "input": "a,b;c\nnew line", "output": "ok\ttab"},
]


@pytest.fixture(scope="module")
def smol():
    return cached_tokenizer("smollm2-135m-instruct")


@pytest.fixture(scope="module")
def qwen():
    return cached_tokenizer("qwen3-tiny")


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv", ".parquet"])
def test_alpaca_round_trips(tmp_path, suffix):
    path = write_rows(ROWS, tmp_path / f"d{suffix}")
    res = import_file(path)
    assert res.format == "alpaca" and res.rows == ROWS


def _sharegpt(rows):
    return [
        {
            "conversations": [
                {"from": "system", "value": r["input"]},
                {"from": "human", "value": r["instruction"]},
                {"from": "gpt", "value": r["output"]},
            ]
        }
        for r in rows
    ]


def _messages(rows):
    return [
        {
            "messages": [
                {"role": "system", "content": r["input"]},
                {"role": "user", "content": r["instruction"]},
                {"role": "assistant", "content": r["output"]},
            ]
        }
        for r in rows
    ]


@pytest.mark.parametrize("make, fmt", [(_sharegpt, "sharegpt"), (_messages, "messages")])
@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".parquet"])
def test_chat_formats_import(tmp_path, make, fmt, suffix):
    import pandas as pd

    records = make(ROWS)
    path = tmp_path / f"d{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(records, ensure_ascii=False))
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    else:
        pd.DataFrame(records).to_parquet(path)
    res = import_file(path)
    assert res.format == fmt and res.rows == ROWS


def test_column_mapping(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text("question,context,answer\nWhat is 2+2?,,4\nCapital of France?,Europe,Paris\n")
    res = import_file(path)
    assert res.needs_mapping and res.columns == ["question", "context", "answer"]
    rows = apply_mapping(res.records, {"instruction": "question", "input": "context", "output": "answer"})
    assert rows[1] == {"instruction": "Capital of France?", "input": "Europe", "output": "Paris"}
    with pytest.raises(InputError, match="Pick the column that holds the output"):
        apply_mapping(res.records, {"instruction": "question", "input": None, "output": None})
    with pytest.raises(InputError, match="not in the file"):
        apply_mapping(res.records, {"instruction": "nope", "output": "answer"})


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("cut.json", b'[{"instruction": "a", "output": "b"}, {"instruction": "c", "out', "not valid JSON.*cut off"),
        ("bad.jsonl", b'{"instruction": "a", "output": "b"}\n{"instruction": \n', "line 2 is not valid JSON"),
        ("garbage.json", bytes(range(256)) * 10, "not a text file"),
        ("garbage.parquet", b"PAR1" + bytes(range(200)), "not a readable Parquet file"),
        ("empty.jsonl", b"", "is empty"),
        ("blank.json", b"   \n  ", "is empty"),
        ("obj.json", b'{"instruction": "a"}', "holds a JSON object"),
        ("nums.json", b"[1, 2, 3]", "row 1 is a int"),
        ("data.txt", b"hello", "unsupported file type"),
        ("latin1.csv", "instruction,output\ncafé,x\n".encode("latin-1") * 1 + b"\xff\xfe\xfd" * 500, "not UTF-8"),
    ],
)
def test_bad_files_get_clear_messages(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        import_file(path)


def test_file_over_the_limit(tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps({"instruction": "x" * 1000, "output": "y"}) + "\n" * 1)
    with pytest.raises(InputError, match="the limit is 0.0001 MB"):
        import_file(path, max_mb=0.0001)


def test_wrong_chat_structure(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps([{"conversations": [{"from": "gpt", "value": "hi"}]}]))
    with pytest.raises(InputError, match="no user turn followed by an assistant turn"):
        import_file(path)


def test_every_validation_rule_fires(smol):
    rows = [
        {"instruction": "", "input": "", "output": "x"},  # 1: empty instruction
        {"instruction": "q", "input": "", "output": "  "},  # 2: empty output
        {"instruction": "same", "input": "", "output": "same"},  # 3
        {"instruction": "same", "input": "", "output": "same"},  # 4: duplicate of 3
        {"instruction": "long " * 300, "input": "", "output": "ok"},  # 5: too long
        {"instruction": "bad \udcff byte", "input": "", "output": "ok"},  # 6: not UTF-8
        {"instruction": "fine", "input": "", "output": 3},  # 7: not text
    ]
    rep = validate_rows(rows, smol, max_seq_length=128)
    errors = {(e["row"], e["field"]): e["message"] for e in rep["errors"]}
    warnings = {w["row"]: w["message"] for w in rep["warnings"]}
    assert errors[(1, "instruction")] == "empty instruction"
    assert errors[(2, "output")] == "empty output"
    assert "not valid UTF-8" in errors[(6, "instruction")]
    assert "not text" in errors[(7, "output")]
    assert warnings[4] == "duplicate of row 3"
    assert "longer than the max sequence length 128" in warnings[5]
    assert rep["rows"] == 7 and len(rep["lengths"]) == 5
    assert validate_rows([], smol)["errors"][0]["message"].startswith("The dataset has no rows")


def test_examples_are_clean(smol):
    persona = load_example("persona")
    assert 30 <= len(persona) <= 100 and any("你" in r["instruction"] for r in persona)
    rep = validate_rows(persona, smol, 512)
    assert rep["errors"] == [] and rep["warnings"] == []
    assert len(load_example("seed")) == 2


@pytest.mark.parametrize("template", ["alpaca", "chat"])
@pytest.mark.parametrize("thinking", [False, True])
def test_masking_splits_prompt_and_response(qwen, template, thinking):
    row = ROWS[0]
    ex = build_example(row, qwen, template, None, True, thinking)
    n_prompt = ex.n_prompt
    assert ex.labels[:n_prompt] == [IGNORE] * n_prompt
    assert ex.labels[n_prompt:] == ex.input_ids[n_prompt:]
    trained = qwen.decode(ex.input_ids[n_prompt:])
    assert trained.startswith(("Bonjour", "<think>")) and "Bonjour" in trained
    assert trained.rstrip("\n").endswith("<|im_end|>")
    view = masked_view(ex, qwen)
    assert [c for _, c in view] == ["masked"] * n_prompt + ["trained"] * (len(ex.input_ids) - n_prompt)
    if template == "chat" and not thinking:
        assert "<think>\n\n</think>\n\n" in qwen.decode(ex.input_ids[:n_prompt])
    full = build_example(row, qwen, template, None, False, thinking)
    assert full.labels == full.input_ids


def test_truncation(qwen):
    ex = build_example({"instruction": "word " * 50, "input": "", "output": "yes"}, qwen, "alpaca", 20)
    assert ex.truncated and len(ex.input_ids) == 20


def test_store_saves_versions_and_autosaves(tmp_path):
    store = DatasetStore(tmp_path)
    store.save("mine", ROWS[:1], 0.2)
    store.save("mine", ROWS)
    assert store.load("mine") == ROWS and store.names() == ["mine"]
    (old,) = store.history("mine")
    assert import_file(old).rows == ROWS[:1]  # the earlier version was kept, not overwritten
    assert store.meta("mine") == {"val_fraction": 0.2}
    assert store.autosave([*ROWS, {"instruction": "", "input": "", "output": ""}]) == 3
    assert store.restore_autosave() == ROWS
    assert store.add_exchange("chatlog", "Hi?", "Hello!") == 1
    assert store.load("chatlog") == [{"instruction": "Hi?", "input": "", "output": "Hello!"}]
    for bad in ["../evil", "/etc/passwd", "", ".hidden", "a/b"]:
        with pytest.raises(InputError):
            store.save(bad, ROWS)


def test_save_failure_is_a_message_and_keeps_data(tmp_path, monkeypatch):
    import errno
    import os

    store = DatasetStore(tmp_path)
    store.save("keep", ROWS[:1])

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(InputError, match="No space left on device.*disk full"):
        store.save("keep", ROWS)
    monkeypatch.undo()
    # The failed save left the previous version readable and no stray temporary files.
    assert store.load("keep") == ROWS[:1] and store.history("keep") == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".keep.jsonl.")]


def test_split():
    rows = [{"instruction": str(i), "input": "", "output": "x"} for i in range(10)]
    train, val = split_rows(rows, 0.2)
    assert len(train) == 8 and len(val) == 2 and not {r["instruction"] for r in train} & {r["instruction"] for r in val}
    assert split_rows(rows, 0.2) == (train, val)
    assert split_rows(rows[:1], 0.5) == (rows[:1], [])
    with pytest.raises(InputError):
        split_rows(rows, 1.0)


def _validate_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "lora_demo", "validate", *args, "--json"], capture_output=True, text=True, timeout=120
    )


def test_validate_cli_exit_codes(tmp_path):
    from lora_demo.data import EXAMPLES_DIR

    persona = EXAMPLES_DIR / "persona.jsonl"
    ok = _validate_cli(str(persona))
    assert ok.returncode == 0, ok.stderr
    rows = sum(1 for line in persona.read_text(encoding="utf-8").splitlines() if line.strip())
    assert json.loads(ok.stdout) == {"rows": rows, "errors": [], "warnings": [], "format": "alpaca"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "", "output": "x"}\n')
    res = _validate_cli(str(bad))
    assert res.returncode == 1
    assert json.loads(res.stdout)["errors"] == [{"row": 1, "field": "instruction", "message": "empty instruction"}]
    cut = tmp_path / "cut.json"
    cut.write_text('[{"instruction": "a"')
    res = _validate_cli(str(cut))
    assert res.returncode == 2 and "not valid JSON" in res.stderr and "Traceback" not in res.stderr


def test_problems_and_the_report_render_in_chinese(smol):
    """Issue 14: every validation problem is a message the UI renders in Chinese; the Alpaca field names stay."""
    from lora_demo.data import summary_markdown
    from lora_demo.i18n import Msg, render

    rows = [
        {"instruction": "", "input": "", "output": "x"},
        {"instruction": "same", "input": "", "output": "same"},
        {"instruction": "same", "input": "", "output": "same"},
        {"instruction": "long " * 300, "input": "", "output": "ok"},
        {"instruction": "fine", "input": "", "output": 3},
    ]
    rep = validate_rows(rows, smol, max_seq_length=128)
    zh = summary_markdown(rep, lang="zh")
    assert zh.startswith("**共 5 行：2 个错误，2 个警告。**") and "\n错误：\n" in zh and "\n警告：\n" in zh, zh
    assert "- 第 1 行 · instruction：instruction 为空" in zh and "- 第 5 行 · output：output 是 int，不是文本" in zh
    assert "- 第 3 行：与第 2 行重复" in zh and "超过最大序列长度 128：将被截断" in zh
    assert summary_markdown(rep).startswith("**5 rows: 2 error(s), 2 warning(s).**")  # English stays the default
    assert render(validate_rows([], smol)["errors"][0]["message"], "zh") == "数据集中没有数据行：请添加或导入一些。"
    # A problem survives the JSON a worker writes (status.json) and comes back translatable.
    back = Msg.from_json(json.loads(json.dumps(rep["errors"][0]["message"].to_json())))
    assert back == "empty instruction" and render(back, "zh") == "instruction 为空"


def test_import_errors_and_names_in_chinese(tmp_path):
    """Import errors render in Chinese; a user's name stays as typed even when a table has that word ("example")."""
    from lora_demo.i18n import render, table
    from lora_demo.ui.views.data import length_histogram

    assert table("zh")["example"] == "示例"
    cut = tmp_path / "cut.json"
    cut.write_bytes(b'[{"instruction": "a", "output": "b"}, {"instruction": "c", "out')
    with pytest.raises(InputError) as info:
        import_file(cut)
    zh = render(info.value.args[0], "zh")
    assert zh.startswith("cut.json 不是有效的 JSON：") and "文件似乎不完整（被截断）" in zh, zh
    with pytest.raises(InputError) as info:
        DatasetStore(tmp_path).load("example")
    assert render(info.value.args[0], "zh") == "没有名为 'example' 的已保存数据集：请从列表中选择。"
    assert str(info.value) == "No saved dataset named 'example': pick one from the list."
    with pytest.raises(InputError) as info:
        apply_mapping([{"q": "x"}], {"instruction": "q", "output": None})
    assert render(info.value.args[0], "zh") == "请选择存放 output 的列。"
    fig = length_histogram([10, 20], 16, "zh")
    assert fig.layout.title.text == "每个样本的词元数（提示词 + 回答）" and fig.layout.xaxis.title.text == "词元数"
