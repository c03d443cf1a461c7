"""Checkpoints on CPU with qwen3-tiny: resume after SIGKILL gives the uninterrupted run's adapter, broken checkpoints
are set aside for the previous one, old ones are pruned, a restarted app resumes, Continue records its parent and
starts from its weights, and the probe prompts are answered at step 0, each checkpoint and the end."""

from __future__ import annotations

import json
import time

import pytest
import torch
from safetensors.torch import load_file, save_file

from lora_demo.errors import InputError
from lora_demo.train import checkpoints, probes
from lora_demo.train.checkpoints import MARKER, problem, step_of
from lora_demo.train.lineage import continue_settings
from lora_demo.train.runner import Runner
from lora_demo.train.runs import read_progress, read_status
from lora_demo.train.settings import TrainSettings
from lora_demo.ui.views.train import timeline_html

TINY = dict(
    model="qwen3-tiny",
    dataset="example:persona",
    max_seq_length=128,
    micro_batch_size=4,
    warmup=2,
    learning_rate=5e-3,
    logging_steps=1,
    max_steps=24,
    save_steps=4,
    keep_checkpoints=2,
    probe_tokens=4,
)


@pytest.fixture
def runner(tmp_path):
    r = Runner(tmp_path / "runs", tmp_path / "data")
    yield r
    r.kill()


def _kill_after_checkpoint(runner, run_dir, step, timeout=180):
    """SIGKILL the worker as soon as the checkpoint at `step` is complete (not a polite stop)."""
    deadline = time.time() + timeout
    while not (run_dir / "checkpoints" / f"checkpoint-{step}" / MARKER).is_file():
        assert time.time() < deadline, read_status(run_dir)
        assert read_status(run_dir).get("status") not in ("completed", "failed"), read_status(run_dir)
        time.sleep(0.02)
    runner.kill()
    st = read_status(run_dir)
    assert st["status"] == "failed" and "SIGKILL" in st["error"], st
    assert st.get("step", 0) < TINY["max_steps"]


def _weights(folder):
    return load_file(str(folder / "adapter_model.safetensors"))


def _assert_same_adapter(a, b):
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-4, atol=1e-5, msg=key)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reference: the same run, never interrupted."""
    r = Runner(tmp_path_factory.mktemp("ref") / "runs", tmp_path_factory.mktemp("ref-data"))
    run_dir = r.start(TrainSettings(**TINY))
    st = r.wait(300)
    assert st["status"] == "completed", st
    return run_dir


def test_resume_after_sigkill_gives_the_uninterrupted_adapter(runner, uninterrupted):
    run_dir = runner.start(TrainSettings(**TINY))
    _kill_after_checkpoint(runner, run_dir, 8)
    ckpt, skipped = runner.resume(run_dir)
    assert step_of(ckpt) >= 8 and skipped == []
    st = runner.wait(300)
    assert st["status"] == "completed" and st["step"] == 24, st
    _assert_same_adapter(run_dir, uninterrupted)
    # One curve: each step logged once, in order, with the resume marked where it happened.
    logs = [p["step"] for p in read_progress(run_dir) if p.get("type") == "log"]
    assert logs == list(range(1, 25))
    marks = [p for p in read_progress(run_dir) if p.get("stage") == "resumed"]
    assert [m["step"] for m in marks] == [step_of(ckpt)] == [r["step"] for r in st["resumes"]]
    assert "Resumed from checkpoint(s) at step" in (run_dir / "README.md").read_text()
    assert "resumed at" in (run_dir / "train.log").read_text()  # the log was appended to, not replaced


def test_pruning_keeps_the_newest_and_slims_a_completed_run(uninterrupted):
    kept = checkpoints.checkpoints(uninterrupted)
    assert [step_of(c) for c in kept] == [20, 24]  # keep_checkpoints=2 of 4, 8, ..., 24
    for c in kept:  # completed: nothing resumes it, so only the adapters stay (Chat can load them)
        assert problem(c, for_resume=False) is None and not (c / "optimizer.pt").exists()
        assert (c / "config.yaml").is_file()
        assert json.loads((c / "adapter_config.json").read_text())["base_model_name_or_path"] == "qwen3-tiny"


def test_probes_at_step_0_each_checkpoint_and_the_end(uninterrupted):
    points = probes.read(uninterrupted)
    assert [p["step"] for p in points] == [0, 4, 8, 12, 16, 20, 24]
    assert points[0]["kind"] == "start" and points[-1]["kind"] == "final"
    assert all(len(p["answers"]) == 3 and all(isinstance(a, str) for a in p["answers"]) for p in points)
    first_rows = json.loads((uninterrupted / "data" / "train.jsonl").read_text().splitlines()[0])
    assert points[0]["prompts"][0]["instruction"] == first_rows["instruction"]  # no val split: the first train rows
    assert points[0]["answers"] != points[-1]["answers"]  # the model changed its answers as it learned
    html = timeline_html(points)
    assert "step 0" in html and "final (step 24)" in html and "data-points='7'" in html


def test_step_0_answers_are_the_base_model_s_taken_after_step_1(uninterrupted):
    """The step-0 answers no longer hold up the first step: they are taken after step 1's log, with the adapter
    disabled, and are exactly what the base model answers (a new adapter starts with B = 0)."""
    from lora_demo.models import load_model

    start = probes.read(uninterrupted)[0]
    first_log = next(p for p in read_progress(uninterrupted) if p.get("type") == "log")
    assert first_log["step"] == 1 and first_log["time"] <= start["time"], (first_log, start)
    lm = load_model("qwen3-tiny", dtype="fp32")
    base = probes.answer(lm.model, lm.tokenizer, start["prompts"], TrainSettings(**TINY), TINY["probe_tokens"])
    assert start["answers"] == base


def test_deferred_step_0_answers_disable_the_adapter(tmp_path):
    """The callback itself: after a step has changed the adapter (here B set far from 0), the step-0 answers it
    records are the base model's, not the changed model's; a continued run (init_adapter) answers at step 0."""
    from types import SimpleNamespace

    from peft import get_peft_model

    from lora_demo.models import load_model
    from lora_demo.train.lora_config import lora_config
    from lora_demo.train.milestones import MilestoneCallback

    s = TrainSettings(**{**TINY, "probe_tokens": 8})
    lm = load_model("qwen3-tiny", dtype="fp32")
    rows = [{"instruction": "Who are you?", "input": "", "output": ""}]
    base = probes.answer(lm.model, lm.tokenizer, rows, s, 8)
    model = get_peft_model(lm.model, lora_config(s))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    tuned = probes.answer(model, lm.tokenizer, rows, s, 8)
    assert tuned != base  # (else this test could not tell the two apart)
    (tmp_path / "config.yaml").write_text("model: qwen3-tiny\n")
    cb = MilestoneCallback(tmp_path, s, model, lm.tokenizer, rows)
    cb.on_train_begin(None, SimpleNamespace(global_step=0), None)
    assert probes.read(tmp_path) == []  # nothing before the first step
    cb.on_step_begin(None, SimpleNamespace(global_step=1), None)
    (point,) = probes.read(tmp_path)
    assert point["step"] == 0 and point["kind"] == "start" and point["answers"] == base
    assert probes.answer(model, lm.tokenizer, rows, s, 8) == tuned  # the adapter is back on afterwards
    cont = tmp_path / "continued"
    cont.mkdir()
    (cont / "config.yaml").write_text("model: qwen3-tiny\n")
    cb = MilestoneCallback(
        cont, TrainSettings(**{**TINY, "probe_tokens": 8, "init_adapter": "parent"}), model, lm.tokenizer, rows
    )
    cb.on_train_begin(None, SimpleNamespace(global_step=0), None)
    assert [(p["step"], p["answers"]) for p in probes.read(cont)] == [(0, tuned)]


def test_broken_checkpoint_is_set_aside_and_a_restarted_app_resumes(tmp_path, uninterrupted):
    first = Runner(tmp_path / "runs", tmp_path / "data")
    run_dir = first.start(TrainSettings(**TINY))
    _kill_after_checkpoint(first, run_dir, 12)
    newest = checkpoints.checkpoints(run_dir)[-1]
    with open(newest / "optimizer.pt", "r+b") as f:  # a torn write: the file cut in half
        f.truncate(f.seek(0, 2) // 2)
    # The app restarts: a new Runner reads the runs back from disk.
    again = Runner(tmp_path / "runs", tmp_path / "data")
    ckpt, skipped = again.resume(run_dir)
    assert step_of(ckpt) == step_of(newest) - 4
    assert skipped == [f"Skipped {newest.name}: optimizer.pt is unreadable (BadZipFile)."]
    aside = run_dir / "checkpoints" / f"corrupt-{newest.name}"
    assert aside.is_dir() and "optimizer.pt" in (aside / "WHY.txt").read_text()
    st = again.wait(300)
    assert st["status"] == "completed", st
    assert read_status(run_dir)["resumed_from"] == step_of(ckpt)
    _assert_same_adapter(run_dir, uninterrupted)


def test_resume_refuses_clearly(runner, uninterrupted, tmp_path):
    with pytest.raises(InputError, match="completed: nothing to resume.*Continue training"):
        runner.resume(uninterrupted)
    run_dir = runner.start(TrainSettings(**{**TINY, "save_steps": -1, "max_steps": 200}))
    deadline = time.time() + 120
    while read_status(run_dir).get("status") != "training":
        assert time.time() < deadline
        time.sleep(0.1)
    with pytest.raises(InputError, match="in progress"):
        runner.resume(run_dir)
    runner.kill()
    with pytest.raises(InputError, match="no whole checkpoint.*checkpoints were off"):
        runner.resume(run_dir)


def test_problem_names_what_is_wrong(tmp_path):
    ckpt = tmp_path / "checkpoint-6"
    ckpt.mkdir()
    assert problem(ckpt) == "its save was cut off (it was never finished)"
    (ckpt / MARKER).write_text("{}")
    assert (
        problem(ckpt, for_resume=False) == "adapter_config.json, adapter_model.safetensors, trainer_state.json missing"
    )
    (ckpt / "adapter_config.json").write_text("{}")
    save_file({"w": torch.ones(4, 4)}, str(ckpt / "adapter_model.safetensors"))
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": 5}))
    assert problem(ckpt, for_resume=False) == "trainer_state.json says step 5, not 6"
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": 6}))
    assert problem(ckpt, for_resume=False) is None
    assert problem(ckpt) == "optimizer.pt, scheduler.pt, rng_state.pth missing"
    for name in (*checkpoints.STATE_FILES, "rng_state.pth"):
        torch.save({"x": torch.arange(1000)}, ckpt / name)
    assert problem(ckpt) is None
    (ckpt / "config.yaml").write_text("num_processes: 2\n")  # DDP: one RNG state per rank
    assert problem(ckpt) == "rng_state_0.pth, rng_state_1.pth missing"
    (ckpt / "config.yaml").unlink()
    data = bytearray((ckpt / "scheduler.pt").read_bytes())
    data[len(data) // 3] ^= 0xFF  # one flipped byte inside the tensor data
    (ckpt / "scheduler.pt").write_bytes(bytes(data))
    assert "scheduler.pt is damaged" in problem(ckpt)
    weights = (ckpt / "adapter_model.safetensors").read_bytes()
    (ckpt / "adapter_model.safetensors").write_bytes(weights[:-8])
    assert "adapter_model.safetensors is unreadable" in problem(ckpt, for_resume=False)


def test_continue_training_starts_from_the_parent_and_records_it(runner, uninterrupted):
    child = continue_settings(uninterrupted)
    assert child.init_adapter == str(uninterrupted) and child.r == 16
    child.max_steps, child.save_steps, child.probe_tokens = 4, -1, 0
    run_dir = runner.start(child)
    st = runner.wait(300)
    assert st["status"] == "completed" and st["parent"] == str(uninterrupted), st
    parent_logs = [p["loss"] for p in read_progress(uninterrupted) if p.get("type") == "log"]
    child_logs = [p["loss"] for p in read_progress(run_dir) if p.get("type") == "log"]
    # It starts where the parent ended, not from new factors (whose first loss is the parent's first).
    assert child_logs[0] < parent_logs[0] - 1.0 and child_logs[0] < sum(parent_logs[-3:]) / 3 + 0.5
    assert TrainSettings.from_yaml(run_dir / "config.yaml").init_adapter == str(uninterrupted)
    assert f"Continued from the adapter `{uninterrupted}`" in (run_dir / "README.md").read_text()
    # The Low-rank lab finds the parent from the child's config and compares their ΔW per module.
    from lora_demo.lowrank.compare import compare_adapters
    from lora_demo.train.lineage import parent_of

    assert parent_of(run_dir) == str(uninterrupted)
    res = compare_adapters(parent_of(run_dir), run_dir)
    assert len(res["modules"]) == 2 * 7 and not res["only_parent"] and not res["only_child"]
    assert all(0 < m["rel_change"] < 1 and m["cosine"] > 0.5 for m in res["modules"]), res["modules"][:2]
    with pytest.raises(InputError, match="was not continued from another adapter"):
        parent_of(uninterrupted)
    wrong = continue_settings(uninterrupted)
    wrong.r = 8
    with pytest.raises(InputError, match="r must equal the parent's when continuing.*16"):
        runner.start(wrong)


def test_a_reused_pid_does_not_keep_a_dead_run_active(tmp_path):
    """After a reboot another process may have the worker's pid: the recorded start time tells them apart."""
    import os

    from lora_demo.train.runs import process_start, settled

    mine = process_start(os.getpid())
    alive = {"status": "training", "pid": os.getpid(), "pid_start": mine}
    assert settled(tmp_path, alive) is alive
    reused = {**alive, "pid_start": "another-boot:12345"}
    assert settled(tmp_path, reused)["status"] == "failed"


def test_stop_saves_a_checkpoint_and_resume_right_after_continues_from_it(runner):
    """Stop saves a checkpoint at that (off-schedule) step; Resume pressed as soon as the run says 'stopped' waits
    for the old process to exit, so its exit can never be recorded over the resumed run."""
    run_dir = runner.start(TrainSettings(**{**TINY, "max_steps": 60, "save_steps": 50, "probe_tokens": 0}))
    deadline = time.time() + 120
    while (read_status(run_dir).get("step") or 0) < 7:
        assert time.time() < deadline, read_status(run_dir)
        time.sleep(0.05)
    runner.stop()
    while read_status(run_dir).get("status") != "stopped":
        assert time.time() < deadline + 60, read_status(run_dir)
        time.sleep(0.02)
    stopped_at = read_status(run_dir)["step"]
    ckpt, _ = runner.resume(run_dir)
    assert step_of(ckpt) == stopped_at and stopped_at % 50 != 0
    st = runner.wait(300)
    assert st["status"] == "completed" and st["step"] == 60, st
    assert [p["step"] for p in read_progress(run_dir) if p.get("type") == "log"] == list(range(1, 61))


def test_probes_leave_training_unchanged(tmp_path):
    """Answering probes between steps (eval mode, generate) must not change what is learned: with LoRA dropout on,
    a probe that left the model in eval mode, or drew from the training RNG, would change the adapter."""
    settings = {**TINY, "max_steps": 8, "save_steps": 2, "lora_dropout": 0.1}
    done = []
    for probe_tokens in (0, 6):
        r = Runner(tmp_path / f"runs-{probe_tokens}", tmp_path / "data")
        run_dir = r.start(TrainSettings(**{**settings, "probe_tokens": probe_tokens}))
        assert r.wait(300)["status"] == "completed"
        done.append(run_dir)
    assert probes.read(done[0]) == [] and len(probes.read(done[1])) == 5
    _assert_same_adapter(done[0], done[1])
