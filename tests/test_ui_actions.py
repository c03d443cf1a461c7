"""Each tab's handlers called directly on a LabEngine, without launching the app (they are plain methods)."""

from __future__ import annotations

import gradio as gr
import pandas as pd
import pytest

from lora_demo.data import load_example
from lora_demo.data.edit import edit_rows, guess_mapping, table_rows
from lora_demo.engine import AppSettings, LabEngine
from lora_demo.errors import InputError
from lora_demo.train.settings import TrainSettings


@pytest.fixture
def lab(tmp_path):
    return LabEngine(AppSettings(model="qwen3-tiny", runs_dir=tmp_path / "runs", data_dir=tmp_path / "data"))


def form(**over):
    from lora_demo.ui.train_tab import FORM

    values = {**TrainSettings(model="qwen3-tiny", max_seq_length=128, micro_batch_size=4, warmup=2).to_dict(), **over}
    return [values[k] for k in FORM]


def test_engine_owns_one_of_each_and_frees_the_gpu_before_training(lab):
    assert lab.runner.runs_dir == lab.runs_dir and lab.datasets.root == lab.data_dir
    assert lab.chat.release_for_training in lab.runner.before_start  # registered whether or not a Chat tab exists
    assert LabEngine(lab.settings).chat is not lab.chat  # no module-level state shared between apps


def test_row_edits_keep_blank_rows_and_say_which_numbers_exist():
    rows = table_rows(pd.DataFrame([["a", None, "x"], ["", "", ""]], columns=["instruction", "input", "output"]))
    assert rows == [{"instruction": "a", "input": "", "output": "x"}, {"instruction": "", "input": "", "output": ""}]
    assert len(edit_rows(rows, "add")) == 3 and len(rows) == 2  # a new list; the input is untouched
    assert edit_rows(rows, "dup", 1)[:2] == [rows[0], rows[0]]
    assert edit_rows(rows, "del", 2) == rows[:1]
    with pytest.raises(InputError, match="from 1 to 2; got 3"):
        edit_rows(rows, "del", 3)
    assert guess_mapping(["Instruction text", "context input", "model_output"]) == {
        "instruction": "Instruction text",
        "input": "context input",
        "output": "model_output",
    }


def test_dataset_actions_autosave_every_edit(lab):
    from lora_demo.ui.dataset_tab import DatasetActions

    act = DatasetActions(lab)
    table, status = act.load_example("seed")
    assert len(table) == len(load_example("seed")) and "Loaded example" in status
    table, status = act.edit("add")(table, None)
    assert len(table) == len(load_example("seed")) + 1
    assert lab.datasets.restore_autosave() == load_example("seed")  # blank rows are not saved
    with pytest.raises(gr.Error, match="Row number must be"):
        act.edit("dup")(table, "x")


def test_train_actions_plan_and_refuse_outside_paths(lab):
    from lora_demo.ui.train_tab import TrainActions

    act = TrainActions(lab)
    assert "Trainable:" in act.plan(*form(dataset="example:persona"))
    with pytest.raises(gr.Error, match="outside the folders"):
        act.plan(*form(dataset="/etc/passwd.jsonl"))
    assert act.stop() == "No training is running."


def test_export_actions_name_a_missing_run(lab):
    from lora_demo.ui.export_panel import ExportActions

    with pytest.raises(gr.Error, match="No run named"):
        ExportActions(lab).zip("no-such-run")


def test_chat_with_a_run_that_has_no_adapter_yet_says_so(lab):
    (lab.runs_dir / "r1").mkdir()
    (lab.runs_dir / "r1" / "status.json").write_text('{"status": "training"}')
    with pytest.raises(InputError, match="no adapter yet \\(status: training\\)"):
        lab.adapter_for_chat("r1")
    with pytest.raises(InputError, match="Pick a run"):
        lab.adapter_for_chat(None)


def test_chat_actions_explain_what_to_do_first(lab):
    from lora_demo.ui.chat_tab import ChatActions

    act = ChatActions(lab)
    with pytest.raises(gr.Error, match="Type a message first"):
        list(act.send("  ", [], [], "", False, 0.7, 0.9, 50, 1.1, 8, 0, 1.0, True))
    with pytest.raises(gr.Error, match="Load a model first"):
        list(act.send("hi", [], [], "", False, 0.7, 0.9, 50, 1.1, 8, 0, 1.0, True))
    with pytest.raises(gr.Error, match="Chat first"):
        act.add_to_dataset("x", [])


def test_the_thinking_switch_is_offered_only_where_the_chat_template_reads_it(lab, tmp_path):
    """Issue 28: 'Qwen3 thinking' was offered for SmolLM2, whose chat template has no enable_thinking, where it did
    nothing. The engine reads the model's chat template; both tabs show the switch only when it is there."""
    from lora_demo.data.templates import uses_thinking
    from lora_demo.models import cached_tokenizer, thinking_switch
    from lora_demo.ui.chat_tab import ChatActions
    from lora_demo.ui.train_tab import TrainActions

    assert uses_thinking(cached_tokenizer("qwen3-tiny"))
    assert not uses_thinking(cached_tokenizer("smollm2-135m-instruct"))  # its template never reads the switch
    assert thinking_switch("qwen3-tiny") and not thinking_switch("smollm2-135m-instruct")
    assert thinking_switch("Qwen/Qwen3-8B")  # not downloaded: the Qwen3 family's templates read it
    run = tmp_path / "runs" / "tiny-run"  # 'auto' with an adapter: its base
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("model: qwen3-tiny\n")
    assert lab.thinking_offered("auto", str(run)) and not lab.thinking_offered("smollm2-135m-instruct")
    assert not lab.thinking_offered("../../etc", None)  # a name the app may not read: nothing offered

    smol, tiny = TrainActions(lab).thinking("smollm2-135m-instruct"), TrainActions(lab).thinking("qwen3-tiny")
    assert (smol.visible, smol.value, tiny.visible) == (False, False, True)
    smol, tiny = ChatActions(lab).thinking("smollm2-135m-instruct", None), ChatActions(lab).thinking("auto", str(run))
    assert (smol.visible, smol.value, tiny.visible) == (False, False, True)
