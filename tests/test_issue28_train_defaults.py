"""Issue 28, items 1, 2, 5 and 16: the default run holds rows out and says it will overfit, the evaluation tools
say plainly when a run has no validation rows, the Train tab takes the dataset this visitor saved, and the Train
form survives a reload in this browser."""

from __future__ import annotations

import json
from types import SimpleNamespace

import gradio as gr
import pandas as pd

from lora_demo.data import load_example
from lora_demo.engine import AppSettings, LabEngine
from lora_demo.i18n import render
from lora_demo.train.plan import plan_markdown, plan_run
from lora_demo.train.settings import TrainSettings, defaults_for
from lora_demo.ui.judge_section import JudgeActions
from lora_demo.ui.train_tab import FORM, TrainActions, form_values


def _lab(tmp_path) -> LabEngine:
    return LabEngine(AppSettings(runs_dir=tmp_path / "runs", data_dir=tmp_path / "data"))


def _notes(plan) -> str:
    return " ".join(render(n, "en") for n in plan.get("notes", []))


# --- item 1: the default run has held-out rows; too small a dataset keeps 0 and the plan says so ---
def test_default_run_holds_out_validation_rows():
    for device in ("cpu", "cuda"):
        assert defaults_for(device, "qwen3-tiny").val_fraction == 0.1
    plan = plan_run(defaults_for("cpu", "qwen3-tiny"), load_example("persona"))
    assert plan["val_rows"] == 4 and plan["train_rows"] == 40
    seed = plan_run(defaults_for("cpu", "qwen3-tiny"), load_example("seed"))  # 2 rows: too few to split
    assert seed["val_rows"] == 0 and seed["train_rows"] == 2
    assert "too few to hold any out" in _notes(seed) and "no validation rows" in _notes(seed)
    assert "too few to hold any out" in plan_markdown(seed)
    zero = plan_run(TrainSettings(model="qwen3-tiny", val_fraction=0), load_example("persona"))
    assert "Validation fraction 0: this run has no validation rows" in _notes(zero)


def _fake_run(lab, name, val_rows):
    """A run folder as the judging tools read it (its data snapshot, an adapter's config), with no weights."""
    run = lab.runs_dir / name
    (run / "data").mkdir(parents=True)
    (run / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "qwen3-tiny"}))
    (run / "config.yaml").write_text(TrainSettings(model="qwen3-tiny").to_yaml())
    rows = [{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(3)]
    (run / "data" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "data" / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:val_rows]))
    return run


def test_heldout_without_validation_rows_says_so_plainly(tmp_path):
    lab = _lab(tmp_path)
    adapter = _fake_run(lab, "no-val", 0)
    res = lab.heldout("auto", str(adapter))  # no failure, nothing loaded
    assert res["rows"] == 0 and "This run has no validation rows" in render(res["note"], "en")
    assert "validation fraction above 0" in render(res["note"], "en")
    table = JudgeActions(lab).heldout("auto", str(adapter))  # the page: the message in the table's place
    assert isinstance(table, pd.DataFrame) and "This run has no validation rows" in table.iloc[0, 1]


def test_vote_on_rows_uses_validation_rows_and_says_when_it_falls_back(tmp_path):
    lab = _lab(tmp_path)
    rows, split = lab.vote_rows(str(_fake_run(lab, "with-val", 2)))
    assert split == "val" and [r["instruction"] for r in rows] == ["q0", "q1"]
    rows, split = lab.vote_rows(str(_fake_run(lab, "no-val", 0)))
    assert split == "train" and len(rows) == 3

    dealt = []
    fake = SimpleNamespace(
        vote_rows=lambda adapter: lab.vote_rows(adapter),
        blind_round=lambda prompt, *a: dealt.append(prompt) or SimpleNamespace(a="A", b="B", id="x"),
    )
    judge = JudgeActions(fake)
    gen = [0.7, 0.9, 50, 1.0, 16, 0, 1.0, False]
    out = judge.start_rows("", *gen, "auto", str(lab.runs_dir / "no-val"))
    status, queue = out[4], out[5]
    assert "This run has no validation rows" in status and "memorised" in status
    assert "split" not in dealt[0]  # the model sees the row as trained, nothing more
    nxt = judge.advance(queue, "", *gen, "auto", str(lab.runs_dir / "no-val"))
    assert "memorised" in nxt[4]  # every pair of the loop says it
    out = judge.start_rows("", *gen, "auto", str(lab.runs_dir / "with-val"))
    assert "memorised" not in out[4]


# --- item 5: the default recipe on the persona example says it will overfit, and how to see it ---
def test_plan_says_the_default_persona_run_will_overfit():
    notes = _notes(plan_run(defaults_for("cpu", "qwen3-tiny"), load_example("persona")))
    assert "Expect overfitting" in notes and "validation loss rising" in notes and "off-topic" in notes
    big = [{"instruction": f"q{i}", "input": "", "output": "a"} for i in range(400)]
    assert "Expect overfitting" not in _notes(plan_run(defaults_for("cpu", "qwen3-tiny"), big))


# --- item 2: the dataset this visitor saved is the Train tab's dataset (its page only) ---
def test_train_tab_adopts_the_dataset_this_visitor_saved(tmp_path):
    lab = _lab(tmp_path)
    lab.datasets.save("persona-lumi", load_example("persona"))
    picked = TrainActions(lab).adopt_dataset("persona-lumi")
    assert picked.value == "persona-lumi" and "persona-lumi" in [c[0] for c in picked.choices]
    assert TrainActions(lab).adopt_dataset("") == gr.skip()  # a failed save changes nothing


def _dependency(demo, name):
    return [d for d in demo.fns.values() if getattr(d.fn, "__name__", "") == name]


def test_the_dataset_save_is_wired_to_the_train_dataset(tmp_path):
    from lora_demo.ui import build_app

    demo = build_app(AppSettings(runs_dir=tmp_path / "runs", data_dir=tmp_path / "data"))
    (adopt,) = _dependency(demo, "adopt_dataset")
    save = [d for d in demo.fns.values() if d.api_name == "dataset_save"][0]
    assert adopt.trigger_after == save._id and adopt.trigger_only_on_success
    assert [c.label for c in adopt.outputs] == ["dataset"]
    assert not any(isinstance(c, gr.State) for c in adopt.inputs + adopt.outputs)  # nothing app-wide


# --- item 16: the Train form survives a reload in this browser ---
def test_train_form_is_remembered_and_restored(tmp_path):
    lab = _lab(tmp_path)
    act = TrainActions(lab)
    s = TrainSettings(
        model="qwen3-tiny",
        dataset="example:seed",
        r=4,
        lora_alpha=8,
        learning_rate=5e-4,
        num_epochs=7,
        val_fraction=0.2,
        run_name="mine",
        probe_prompts=["hi"],
    )
    values = [v.value if isinstance(v, gr.Dropdown) else v for v in form_values(s, act.parents())]
    stored = json.loads(json.dumps(act.remember(*values)))  # as the browser keeps it
    assert stored["r"] == 4 and stored["dataset"] == "example:seed"
    restored = act.restore(stored)
    got = {k: (v.value if isinstance(v, gr.Dropdown) else v) for k, v in zip(FORM, restored, strict=True)}
    assert got["dataset"] == "example:seed" and got["r"] == 4 and got["num_epochs"] == 7 and got["run_name"] == "mine"
    assert got["val_fraction"] == 0.2 and got["probe_prompts"] == "hi"
    assert all(v == gr.skip() for v in act.restore(None))  # a new browser: the defaults stay
    gone = act.restore({**stored, "init_adapter": str(tmp_path / "runs" / "deleted")})
    assert gone[FORM.index("init_adapter")] == gr.skip()  # a parent that is gone is not restored


def test_the_train_form_lives_in_browser_state(tmp_path):
    from lora_demo.ui import build_app

    demo = build_app(AppSettings(runs_dir=tmp_path / "runs", data_dir=tmp_path / "data"))
    memory = [b for b in demo.blocks.values() if isinstance(b, gr.BrowserState)]
    assert [m.storage_key for m in memory] == ["lora-lab-train-form"]
    # Restored at page load and when the BrowserState mounts with the stored values (its change), once per page.
    restores = _dependency(demo, "restore_once")
    assert len(restores) == 2 and all(r.inputs[0] == memory[0] and len(r.outputs) == len(FORM) + 1 for r in restores)
    (remember,) = [d for d in _dependency(demo, "remember") if len(d.targets) > 1]
    assert remember.outputs == memory and len(remember.targets) >= len(FORM)
