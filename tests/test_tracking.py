"""Tracking (issue 33): TensorBoard event files in every run folder, report_to for W&B/MLflow, and runs compared
(the Train tab's overlay, `python -m lora_demo runs --compare`)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import gradio as gr
import pytest

from lora_demo.errors import InputError
from lora_demo.train.runner import Runner
from lora_demo.train.runs import TENSORBOARD_DIR, read_progress
from lora_demo.train.settings import TrainSettings

# Six steps of qwen3-tiny, a validation loss every 3 steps, a checkpoint (with its probe answers) at step 3.
TINY = dict(
    model="qwen3-tiny",
    dataset="example:persona",
    max_seq_length=128,
    micro_batch_size=4,
    warmup=1,
    max_steps=6,
    logging_steps=1,
    val_fraction=0.1,
    eval_steps=3,
    save_steps=3,
    probe_rows=1,
    probe_tokens=6,
)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two short runs that differ only in their learning rate, in one runs folder."""
    root = tmp_path_factory.mktemp("tracking")
    runner = Runner(root / "runs", root / "data")
    dirs = []
    try:
        for lr, name in ((5e-3, "lr-5e-3"), (1e-3, "lr-1e-3")):
            dirs.append(runner.start(TrainSettings(**TINY, learning_rate=lr, run_name=name)))
            st = runner.wait(300)
            assert st["status"] == "completed", st
    finally:
        runner.kill()
    return root, dirs


def _events(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / TENSORBOARD_DIR), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_event_files_hold_the_logged_scalars_and_the_probe_answers(two_runs):
    _, (run_dir, _) = two_runs
    acc = _events(run_dir)
    scalars = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/learning_rate", "train/grad_norm", "train/tokens_per_second", "eval/loss"} <= scalars
    logs = [p for p in read_progress(run_dir) if p.get("type") == "log"]
    losses = {e.step: e.value for e in acc.Scalars("train/loss")}
    assert sorted(losses) == [p["step"] for p in logs] == list(range(1, 7))
    for p in logs:  # the same numbers as the Train tab's curve (progress.jsonl)
        assert losses[p["step"]] == pytest.approx(p["loss"], rel=1e-5)
    assert max(e.value for e in acc.Scalars("train/learning_rate")) == pytest.approx(5e-3)
    assert all(e.value > 0 for e in acc.Scalars("train/tokens_per_second"))
    evals = [p for p in read_progress(run_dir) if p.get("type") == "eval"]
    assert [e.step for e in acc.Scalars("eval/loss")] == [p["step"] for p in evals] and evals
    # The probe answers as text: step 0 (the base model's), the checkpoint at 3, the end (6).
    (tag,) = [t for t in acc.Tags()["tensors"] if t.startswith("probes/answers")]
    texts = {e.step: e.tensor_proto.string_val[0].decode() for e in acc.Tensors(tag)}
    assert sorted(texts) == [0, 3, 6], texts
    probe = json.loads((run_dir / "probes.jsonl").read_text().splitlines()[0])
    assert probe["prompts"][0]["instruction"] in texts[0] and "*start*" in texts[0]


def test_report_to_is_checked():
    assert TrainSettings(model="qwen3-tiny").report_to == []
    with pytest.raises(InputError, match="report_to: unknown tracker 'all'; the choices are wandb, mlflow"):
        TrainSettings(model="qwen3-tiny", report_to=["all"])
    with pytest.raises(InputError, match="report_to must be a list of tracker names"):
        TrainSettings(model="qwen3-tiny", report_to="wandb")
    try:
        import wandb  # noqa: F401
    except ImportError:
        # A saved config naming wandb still reads (a run made on another machine exports and continues here); the
        # start of a run, and its plan, refuse it with the install to run, before anything is made.
        s = TrainSettings(model="qwen3-tiny", dataset="example:persona", report_to=["wandb"], max_steps=1)
        from lora_demo.train.plan import plan_run
        from lora_demo.train.runner import Runner

        assert any("pip install wandb" in str(e) for e in plan_run(s)["errors"])
        runs = Path(tempfile.mkdtemp()) / "runs"
        with pytest.raises(InputError, match=r"pip install wandb \(W&B then reads WANDB_API_KEY"):
            Runner(runs).start(s)
        assert not list(runs.glob("*/status.json"))
    from lora_demo.train import tracking

    s = TrainSettings(model="qwen3-tiny")
    assert tracking.report_to(s) == ["tensorboard"]  # always TensorBoard, nothing sent anywhere without report_to
    s.report_to = ["mlflow", "mlflow"]
    assert tracking.report_to(s) == ["tensorboard", "mlflow"]
    assert "report_to: []" in TrainSettings(model="qwen3-tiny").to_yaml()  # config.yaml carries it


def test_compare_two_learning_rates(two_runs):
    from lora_demo.engine import AppSettings, LabEngine
    from lora_demo.ui.views.train import compare_figure

    root, dirs = two_runs
    lab = LabEngine(AppSettings(runs_dir=root / "runs", data_dir=root / "data"))
    result = lab.compare_runs([d.name for d in dirs])
    rows = result["runs"]
    assert [r["run"] for r in rows] == ["lr-5e-3", "lr-1e-3"]
    assert [r["learning_rate"] for r in rows] == [5e-3, 1e-3] and all(r["steps"] == 6 for r in rows)
    assert all(r["final_loss"] > 0 and r["min_eval_loss"] > 0 and r["effective_batch"] == 4 for r in rows)
    assert all(r["tokens_per_s"] > 0 and r["wall_s"] > 0 and r["status"] == "completed" for r in rows)
    assert list(result["differs"]) == ["learning_rate"]  # run_name differs too, but says nothing
    fig = compare_figure(result)
    train = [t for t in fig.data if t.line.dash is None]
    assert [t.legendgroup for t in train] == ["lr-5e-3", "lr-1e-3"] and all(len(t.x) == 6 for t in train)
    assert len([t for t in fig.data if t.line.dash == "dash"]) == 2  # each run's validation loss, dashed
    with pytest.raises(InputError, match="is not allowed"):  # never a folder outside the runs folder
        lab.compare_runs(["../" + dirs[0].name])
    with pytest.raises(InputError, match="Pick the runs to compare"):
        lab.compare_runs([])


def test_cli_runs_compare(two_runs, capsys):
    from lora_demo.cli import main

    root, dirs = two_runs
    assert main(["runs", "--runs-dir", str(root / "runs"), "--compare", dirs[0].name, str(dirs[1])]) == 0
    out = capsys.readouterr().out
    assert "lr-5e-3" in out and "lr-1e-3" in out and "final train loss" in out and "learning_rate" in out
    assert main(["runs", "--runs-dir", str(root / "runs"), "--compare", dirs[0].name, dirs[1].name, "--json"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    data = json.loads(line)
    assert [r["run"] for r in data["runs"]] == ["lr-5e-3", "lr-1e-3"] and set(data["curves"]) == {"lr-5e-3", "lr-1e-3"}
    assert main(["runs", "--runs-dir", str(root / "runs"), "--compare", "no-such-run"]) == 2


def test_train_tab_overlay(two_runs, monkeypatch):
    from lora_demo.engine import AppSettings, LabEngine
    from lora_demo.ui import common
    from lora_demo.ui.train_tab import TrainActions

    root, dirs = two_runs
    act = TrainActions(LabEngine(AppSettings(runs_dir=root / "runs", data_dir=root / "data")))
    fig, table, note = act.compare([d.name for d in dirs])
    assert {t.legendgroup for t in fig.data} == {"lr-5e-3", "lr-1e-3"}
    assert list(table.iloc[:, 0]) == ["lr-5e-3", "lr-1e-3"] and "learning_rate" in note
    fig, table, note = act.compare([])  # nothing picked: the empty state, not an error
    assert not fig.data and "Pick two or more runs" in fig.layout.annotations[0].text and table.empty
    monkeypatch.setattr(common, "session_key", lambda: "visitor-zh")  # a visitor who switched to Chinese
    common.SESSION_LANG.set("zh")
    try:
        fig, table, note = act.recompare([d.name for d in dirs])
        assert "最终训练损失" in list(table.columns) and "不同的设置" in note and "损失曲线" in fig.layout.title.text
        assert act.recompare(["no-such-run"]) == (gr.skip(),) * 3  # a run deleted meanwhile: left as shown
    finally:
        common.SESSION_LANG.set("en")
