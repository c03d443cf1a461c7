"""Issue 27, items 4 and 5: a user's file with bad bytes or shapes, and a torn or foreign adapter, end in one clear
line naming the file and the fix (never "Unexpected error (...)"), through the doors a user uses: the app's
endpoints (gradio_client), the CLI, files planted in the runs and data folders."""

from __future__ import annotations

import json
import shutil

import httpx
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError

from lora_demo.cli import main as cli

EMPTY = {"headers": ["instruction", "input", "output"], "data": []}


def _clear(info, *parts) -> str:
    """The error text: one clear line holding each of `parts`, no "Unexpected error", no traceback."""
    text = str(info.value)
    assert "Unexpected error" not in text and "Traceback" not in text, text
    for part in parts:
        assert part in text, text
    return text


def _import(client, path, encoding=None):
    args = [handle_file(str(path)), "replace", EMPTY] + ([encoding] if encoding else [])
    return client.predict(*args, api_name="/dataset_import")


# --- item 4: bad bytes and shapes -------------------------------------------------------------------------------


def test_a_windows_1252_csv_is_named_then_imports_as_cp1252(app_client, app_dirs, tmp_path):
    path = tmp_path / "rows.csv"
    path.write_bytes("instruction,output\nSay hi,Hello\nOrder a coffee,Un café noir\n".encode("cp1252"))
    with pytest.raises(AppError) as info:
        _import(app_client, path)  # the default: UTF-8
    _clear(info, "rows.csv line 3 has bytes that are not UTF-8 (0xE9 at column 22)", "Windows-1252")
    table, status, *_ = _import(app_client, path, "cp1252")
    assert table["data"] == [["Say hi", "", "Hello"], ["Order a coffee", "", "Un café noir"]], table
    assert "Imported 2 rows" in status
    autosave = (app_dirs / "data" / ".autosave.jsonl").read_bytes().decode("utf-8")  # strict: proper UTF-8
    assert [json.loads(line)["output"] for line in autosave.splitlines()] == ["Hello", "Un café noir"]


def test_a_latin_1_jsonl_imports_as_latin_1_and_a_bad_cp1252_byte_is_named(app_client, app_dirs, tmp_path):
    path = tmp_path / "greet.jsonl"
    path.write_bytes(json.dumps({"instruction": "Grüße", "output": "Hallo"}, ensure_ascii=False).encode("latin-1"))
    with pytest.raises(AppError) as info:
        _import(app_client, path, "utf-8")
    _clear(info, "greet.jsonl line 1 has bytes that are not UTF-8 (0xFC at column 20)")
    table, *_ = _import(app_client, path, "latin-1")
    assert table["data"] == [["Grüße", "", "Hallo"]]
    assert "Grüße" in (app_dirs / "data" / ".autosave.jsonl").read_bytes().decode("utf-8")
    undefined = tmp_path / "undefined.csv"
    undefined.write_bytes(b"instruction,output\nx\x81y,z\n")  # 0x81 is no character in Windows-1252
    with pytest.raises(AppError) as info:
        _import(app_client, undefined, "cp1252")
    _clear(info, "undefined.csv line 2 has bytes that are not Windows-1252 (0x81 at column 2)", "Latin-1")


def test_an_escape_that_is_half_a_character_is_named_and_never_reaches_the_autosave(app_client, app_dirs, tmp_path):
    path = tmp_path / "half.jsonl"
    path.write_text('{"instruction": "ok", "output": "fine"}\n{"instruction": "bad \\udcff", "output": "x"}\n')
    with pytest.raises(AppError) as info:
        _import(app_client, path)
    _clear(info, "half.jsonl: row 2 holds the escape \\udcff")
    # An HTTP client can send half a pair as the JSON escape "\udcff" (gradio_client itself refuses to encode it);
    # the Chat tab's "add this exchange" writes it to a dataset as U+FFFD, the file stays UTF-8.
    hist = [
        {"role": "user", "content": [{"type": "text", "text": "half \udcff pair"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "answer"}]},
    ]
    url = app_client.src.rstrip("/") + "/gradio_api/call/chat_add_to_dataset"
    sent = httpx.post(
        url, content=json.dumps({"data": ["halfpair", hist, None]}), headers={"Content-Type": "application/json"}
    )
    answer = httpx.get(f"{url}/{sent.json()['event_id']}", timeout=60).text
    assert "Added the last exchange to **halfpair** (1 rows)" in answer, answer
    saved = (app_dirs / "data" / "halfpair.jsonl").read_bytes().decode("utf-8")
    assert json.loads(saved)["instruction"] == "half \ufffd pair"
    (app_dirs / "data" / "halfpair.jsonl").unlink()


@pytest.mark.parametrize(
    "name, content, line",
    [
        ("deep.json", b"[\n" + b"[" * 100_000 + b"]" * 100_000 + b"\n]", 2),
        (
            "deep.jsonl",
            b'{"instruction": "a", "output": "b"}\n{"instruction": '
            + b"[" * 100_000
            + b"]" * 100_000
            + b', "output": "b"}\n',
            2,
        ),
    ],
)
def test_json_nested_100k_deep_is_named_with_its_line(app_client, tmp_path, name, content, line):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(AppError) as info:
        _import(app_client, path)
    _clear(info, f"{name} is nested too deeply (line {line})")


def test_cli_validate_names_the_bytes_and_reads_cp1252(tmp_path, capsys):
    path = tmp_path / "rows.csv"
    path.write_bytes("instruction,output\nOrder a coffee,Un café noir\n".encode("cp1252"))
    assert cli(["validate", str(path), "--model", "qwen3-tiny"]) == 2
    assert "rows.csv line 2 has bytes that are not UTF-8 (0xE9 at column 22)" in capsys.readouterr().err
    assert cli(["validate", str(path), "--model", "qwen3-tiny", "--encoding", "cp1252", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 1
    assert cli(["validate", str(path), "--encoding", "utf-16"]) == 2
    assert "Unknown file encoding 'utf-16'" in capsys.readouterr().err


def test_names_over_255_bytes_say_the_limit(app_client):
    from tests.test_export_share import _form

    long = "a" * 300
    table = {"headers": EMPTY["headers"], "data": [["a", "", "b"]]}
    calls = [
        ("/chat_load", ("auto", f"runs/{long}")),
        ("/chat_load", (f"/models/{long}", None)),
        ("/lowrank_analyze", (None, f"runs/{long}", "fro_norm")),
        ("/lowrank_truncate", (None, f"runs/{long}", 2, "copy")),
        ("/dataset_validate", (table, f"/models/{long}", "alpaca", False, 64)),
        ("/train_plan", _form(dataset=f"{long}.jsonl")),
        ("/train_plan", _form(dataset=("x/" * 2100) + "d.jsonl")),
    ]
    for api, args in calls:
        with pytest.raises(AppError) as info:
            app_client.predict(*args, api_name=api)
        _clear(info, "limited to")
    with pytest.raises(AppError) as info:
        app_client.predict(table, "数" * 90, 0.1, api_name="/dataset_save")
    _clear(info, "is not allowed")


# --- item 5: corrupt artifacts ----------------------------------------------------------------------------------


def _rename_modules(folder, old, new):
    from safetensors.torch import load_file, save_file

    weights = folder / "adapter_model.safetensors"
    tensors = load_file(str(weights))
    save_file({k.replace(old, new): t for k, t in tensors.items()}, str(weights), metadata={"format": "pt"})


def _set_config(**values):
    def change(folder):
        cfg = folder / "adapter_config.json"
        cfg.write_text(json.dumps({**json.loads(cfg.read_text()), **values}))

    return change


BROKEN = {  # run name -> (what is done to a good adapter, what the message must say)
    "bad-torn": (
        lambda f: (f / "adapter_model.safetensors").write_bytes((f / "adapter_model.safetensors").read_bytes()[:1000]),
        "adapter_model.safetensors in {run} is torn or empty (1000 bytes)",
    ),
    "bad-empty": (
        lambda f: (f / "adapter_model.safetensors").write_bytes(b""),
        "adapter_model.safetensors in {run} is torn or empty (0 bytes)",
    ),
    "bad-config": (
        lambda f: (f / "adapter_config.json").write_text('{"r": 8, "lora_alpha"'),
        "adapter_config.json in {run} is not valid JSON",
    ),
    "bad-r0": (_set_config(r=0), "has r = 0: the LoRA rank must be a whole number of at least 1"),
    "bad-r-half": (_set_config(r=2.5), "has r = 2.5: the LoRA rank must be a whole number of at least 1"),
    "bad-rank": (_set_config(r=4), "does not match its adapter_config.json: model.layers.0.mlp.down_proj has rank 8"),
}
FOREIGN = "bad-other-base"  # layers the 2-layer qwen3-tiny does not have


@pytest.fixture(scope="module")
def broken_runs(app_dirs, tmp_path_factory):
    """Runs in the app's runs folder holding a good qwen3-tiny adapter spoiled one way each (removed afterwards)."""
    from tests.test_lowrank import make_adapter

    good = make_adapter(tmp_path_factory.mktemp("good") / "good")
    (good / "status.json").write_text(json.dumps({"status": "completed"}))  # a run, as the Train tab lists them
    made = {}
    for name, (spoil, _) in BROKEN.items():
        made[name] = shutil.copytree(good, app_dirs / "runs" / name)
        spoil(made[name])
    made[FOREIGN] = shutil.copytree(good, app_dirs / "runs" / FOREIGN)
    _rename_modules(made[FOREIGN], ".layers.1.", ".layers.7.")
    made["good"] = good
    yield made
    for name in [*BROKEN, FOREIGN]:
        shutil.rmtree(app_dirs / "runs" / name, ignore_errors=True)


@pytest.mark.parametrize("name", list(BROKEN))
def test_a_corrupt_adapter_is_one_clear_message_everywhere(app_client, app_dirs, broken_runs, name):
    run = broken_runs[name]
    expected = BROKEN[name][1].format(run=run)
    app_client.predict(api_name="/train_runs")  # the runs list (which the export and Continue buttons name) now
    calls = [
        ("/chat_load", ("auto", str(run))),
        ("/lowrank_analyze", (None, str(run), "fro_norm")),
        ("/lowrank_truncate", (None, str(run), 2, f"{name}-k2")),
        ("/train_continue", (name,)),
        ("/export_zip", (name,)),
        ("/export_merged", (name,)),
    ]
    for api, args in calls:
        with pytest.raises(AppError) as info:
            app_client.predict(*args, api_name=api)
        _clear(info, expected)
    assert not (run / "exports").exists() and not (run / "merged").exists()  # no zip of an adapter that does not load
    assert not (app_dirs / "runs" / f"{name}-k2").exists()


def test_an_adapter_of_another_base_says_pick_that_base(app_client, broken_runs, tmp_path, capsys):
    run = broken_runs[FOREIGN]
    expected = "The adapter targets modules the model qwen3-tiny does not have (model.layers.7."
    app_client.predict(api_name="/train_runs")
    for api, args in [
        ("/chat_load", ("auto", str(run))),
        ("/chat_load", ("qwen3-tiny", str(run))),
        ("/train_continue", (FOREIGN,)),
        ("/export_zip", (FOREIGN,)),
        ("/export_merged", (FOREIGN,)),
    ]:
        with pytest.raises(AppError) as info:
            app_client.predict(*args, api_name=api)
        _clear(info, expected, "pick that base")
    assert not (run / "exports").exists() and not (run / "merged").exists()
    # Continue from the CLI: the plan refuses it before any worker starts
    config = tmp_path / "child.yaml"
    from lora_demo.train.settings import TrainSettings

    cfg = json.loads((run / "adapter_config.json").read_text())
    child = TrainSettings(
        model="qwen3-tiny",
        dataset="example:seed",
        r=cfg["r"],
        lora_alpha=cfg["lora_alpha"],
        target_modules=sorted(cfg["target_modules"]),
        init_adapter=str(run),
    )
    config.write_text(child.to_yaml(), encoding="utf-8")
    assert cli(["plan", "--config", str(config)]) == 1
    assert expected in capsys.readouterr().out


def test_the_cli_names_a_torn_adapter_and_writes_no_zip(broken_runs, tmp_path, capsys):
    run = broken_runs["bad-torn"]
    out = tmp_path / "a.zip"
    assert cli(["export", str(run), "--zip", str(out)]) == 2
    assert "is torn or empty (1000 bytes)" in capsys.readouterr().err and not out.exists()
    assert cli(["analyze", str(broken_runs["bad-r0"])]) == 2
    assert "has r = 0" in capsys.readouterr().err
    assert cli(["export", str(broken_runs["good"]), "--zip", str(out)]) == 0 and out.is_file()


def test_a_run_named_with_80_cjk_characters_exports_its_zip(app_client, app_dirs, broken_runs):
    name = "微" * 80  # 240 bytes: the zip's temporary file must still fit in 255
    run = shutil.copytree(broken_runs["good"], app_dirs / "runs" / name)
    app_client.predict(api_name="/train_runs")
    try:
        path, message = app_client.predict(name, api_name="/export_zip")
        assert path and "Zipped the adapter" in message
        assert (run / "exports" / f"{name}.zip").is_file()
    finally:
        shutil.rmtree(run)
