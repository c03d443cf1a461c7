"""The Train tab's endpoints: plan, start, a second start refused with why, stop, runs list."""

from __future__ import annotations

import re
import time

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from lora_demo.i18n import msg, render
from lora_demo.train.runs import read_status
from lora_demo.train.settings import TrainSettings
from lora_demo.ui.train_tab import FORM


def form(**over):
    values = {**TrainSettings(model="qwen3-tiny", max_seq_length=128, micro_batch_size=4, warmup=2).to_dict(), **over}
    return [values[k] for k in FORM]


def test_plan_endpoint_warns_for_the_seed_recipe(app_client):
    text = app_client.predict(
        *form(dataset="example:seed", micro_batch_size=1, gradient_accumulation_steps=8, warmup=5, num_epochs=1),
        api_name="/train_plan",
    )
    assert "never leaves ~0" in text and "Trainable:" in text


def test_bad_settings_are_a_message(app_client):
    with pytest.raises(AppError, match="r must be ≥ 1"):
        app_client.predict(*form(r=0), api_name="/train_plan")
    with pytest.raises(AppError, match="learning rate is empty"):
        app_client.predict(*form(learning_rate=None), api_name="/train_start")


def test_start_second_session_refused_stop(app_client, app_dirs):
    msg, _plan, _view = app_client.predict(*form(max_steps=3000), api_name="/train_start")
    assert "Started" in msg
    other = Client(app_client.src, verbose=False)  # a second browser session
    with pytest.raises(AppError, match="A training run is in progress: .* started at"):
        other.predict(*form(max_steps=5), api_name="/train_start")
    run = app_dirs / "runs" / msg.split("**")[1]
    deadline = time.time() + 120
    while not read_status(run).get("step") and time.time() < deadline:  # let it train a few steps
        time.sleep(0.3)
    assert "Stopping" in app_client.predict(api_name="/train_stop")
    while read_status(run).get("status") not in ("stopped", "failed", "completed") and time.time() < deadline:
        time.sleep(0.3)
    assert read_status(run)["status"] == "stopped" and (run / "adapter_model.safetensors").is_file()
    table, _ = app_client.predict(api_name="/train_runs")
    assert [r[1] for r in table["data"] if r[0] == run.name] == ["stopped"]


def test_a_chinese_session_gets_the_plan_and_errors_in_chinese(app_client):
    """Issue 14: one visitor switches to 简体中文; the plan, an error and the runs table come in it, while another
    session (app_client) keeps English."""
    zh = Client(app_client.src, verbose=False)
    zh.predict("zh", api_name="/set_language")
    text = zh.predict(
        *form(dataset="example:seed", micro_batch_size=1, gradient_accumulation_steps=8, warmup=5, num_epochs=1),
        api_name="/train_plan",
    )
    warmup = msg(
        "Warmup ({warm} steps) ≥ total steps ({total}): the learning rate never leaves ~0, so nothing is "
        "learned (for example: 2 rows, batch 1 × accumulation 8 = 1 step, warmup 5, lr 0.0). "
        "Lower warmup, add rows, or raise epochs.",
        warm=5,
        total=1,
    )
    assert render(warmup, "zh") in text and "Trainable" not in text, text
    empty = render(msg("{name} is empty: fill it in.", name=msg("learning rate")), "zh")
    with pytest.raises(AppError, match=re.escape(empty)):
        zh.predict(*form(learning_rate=None), api_name="/train_start")
    table, _ = zh.predict(api_name="/train_runs")
    assert table["headers"][:2] == [render("run", "zh"), render("status", "zh")] != ["run", "status"]
    assert "never leaves ~0" in app_client.predict(
        *form(dataset="example:seed", micro_batch_size=1, gradient_accumulation_steps=8, warmup=5, num_epochs=1),
        api_name="/train_plan",
    )


def test_handlers_that_change_nothing_pass_gradio_s_output_check(tmp_path):
    """A fresh browser's page load (nothing stored) and "— new LoRA factors —" in "continue from" change no field.
    Their handlers once returned {}, which Gradio refuses ("didn't return enough output values"): an Error pill on
    every form field at each page load. Run them through Gradio's own processing, as the page does."""
    import asyncio

    from gradio.state_holder import SessionState

    from lora_demo.ui import AppSettings, build_app

    demo = build_app(AppSettings(runs_dir=tmp_path / "runs", data_dir=tmp_path / "data"))
    calls = {"restore_once": [[{}, False], [{"r": 8}, True], [{"r": 8}, False]], "adopt_parent": [[""], [None]]}
    seen = set()
    for block_fn in demo.fns.values():
        name = getattr(block_fn.fn, "__name__", "")
        for inputs in calls.get(name, []):
            out = asyncio.run(demo.process_api(block_fn=block_fn, inputs=inputs, state=SessionState(demo)))
            assert len(out["data"]) == len(block_fn.outputs)
            seen.add(name)
    assert seen == set(calls)
