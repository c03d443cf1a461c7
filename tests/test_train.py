"""The training engine on CPU with qwen3-tiny: it learns, saves, stops, fails cleanly, and plans correctly."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from lora_demo.data import build_example, load_example
from lora_demo.errors import InputError
from lora_demo.models import cached_tokenizer
from lora_demo.train.plan import plan_run
from lora_demo.train.runner import Runner
from lora_demo.train.runs import list_runs, read_progress, read_status
from lora_demo.train.settings import TrainSettings

TINY = dict(
    model="qwen3-tiny",
    dataset="example:persona",
    max_seq_length=128,
    micro_batch_size=4,
    warmup=2,
    learning_rate=5e-3,
    logging_steps=1,
)


@pytest.fixture
def runner(tmp_path):
    r = Runner(tmp_path / "runs", tmp_path / "data")
    yield r
    r.kill()


def _wait_for_step(run_dir, step, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any(p.get("step", 0) >= step for p in read_progress(run_dir) if p.get("type") == "log"):
            return
        time.sleep(0.2)
    raise TimeoutError(f"no step {step} within {timeout} s: {read_status(run_dir)}")


def test_run_lowers_loss_saves_adapter_and_config(runner):
    from peft import PeftModel

    from lora_demo.models import load_model

    s = TrainSettings(**TINY, max_steps=40, val_fraction=0.1, eval_steps=20)
    run_dir = runner.start(s)
    st = runner.wait(300)
    assert st["status"] == "completed", st
    logs = [p for p in read_progress(run_dir) if p.get("type") == "log"]
    assert len(logs) == 40 and logs[-1]["step"] == 40
    first, last = sum(p["loss"] for p in logs[:3]) / 3, sum(p["loss"] for p in logs[-3:]) / 3
    assert last < first - 1.0, (first, last)
    assert logs[0]["lr"] == 0.0 and max(p["lr"] for p in logs) == pytest.approx(5e-3)  # warmup, then the peak
    assert st["eval_loss"] > 0 and any(p.get("type") == "eval" for p in read_progress(run_dir))
    # A plain PEFT load works, and the config reproduces the run.
    model = PeftModel.from_pretrained(load_model("qwen3-tiny").model, str(run_dir))
    assert model.peft_config["default"].r == 16
    assert TrainSettings.from_yaml(run_dir / "config.yaml") == s
    card = (run_dir / "README.md").read_text()
    assert card.startswith("---\nbase_model: qwen3-tiny") and "final training loss" in card
    assert json.loads((run_dir / "adapter_config.json").read_text())["base_model_name_or_path"] == "qwen3-tiny"
    (summary,) = list_runs(run_dir.parent)
    assert summary["status"] == "completed" and summary["final_loss"] == pytest.approx(logs[-1]["loss"])


def test_stop_mid_run_saves_adapter(runner):
    run_dir = runner.start(TrainSettings(**TINY, max_steps=2000))
    _wait_for_step(run_dir, 3)
    with pytest.raises(InputError, match="A training run is in progress: .* started at"):
        runner.start(TrainSettings(**TINY, max_steps=5))
    runner.stop()
    st = runner.wait(120)
    assert st["status"] == "stopped" and 3 <= st["step"] < 2000
    assert (run_dir / "adapter_model.safetensors").is_file()


def test_killed_worker_is_failed_and_runner_recovers(runner):
    run_dir = runner.start(TrainSettings(**TINY, max_steps=2000))
    _wait_for_step(run_dir, 2)
    runner.kill()
    assert runner.current() is None
    st = read_status(run_dir)
    assert st["status"] == "failed" and "killed (SIGKILL)" in st["error"]
    # The runner accepts a new run afterwards.
    run2 = runner.start(TrainSettings(**TINY, max_steps=2))
    assert runner.wait(120)["status"] == "completed" and run2 != run_dir


def test_dataset_errors_block_start(runner, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "", "output": "x"}\n')
    with pytest.raises(InputError, match="error\\(s\\), which block training: row 1: empty instruction"):
        runner.start(TrainSettings(**{**TINY, "dataset": str(bad)}))
    with pytest.raises(InputError, match="not found"):
        runner.start(TrainSettings(**{**TINY, "dataset": "no-such-dataset"}))


def test_seed_config_gets_zero_lr_warning():
    seed = TrainSettings(
        model="qwen3-tiny",
        dataset="example:seed",
        micro_batch_size=1,
        gradient_accumulation_steps=8,
        warmup=5,
        num_epochs=1,
        learning_rate=2e-4,
    )
    plan = plan_run(seed, load_example("seed"))
    assert plan["total_steps"] == 1 and plan["warmup_steps"] == 5
    text = " ".join(plan["warnings"])
    assert "never leaves ~0" in text and "Only 1 optimizer step" in text and "exceeds the 2 training rows" in text


def test_plan_qwen3_1_7b_matches_the_seed_offline():
    s = TrainSettings(model="unsloth/Qwen3-1.7B-unsloth-bnb-4bit", r=16, lora_alpha=16)
    plan = plan_run(s)
    assert plan["trainable_params"] == 17_432_576 and plan["total_params"] == 1_738_007_552


def test_plan_warnings_for_lr_truncation_and_bad_values():
    rows = [{"instruction": "word " * 200, "input": "", "output": "ok"}] * 3
    plan = plan_run(
        TrainSettings(**{**TINY, "learning_rate": 0.5, "max_seq_length": 64}), rows, cached_tokenizer("qwen3-tiny")
    )
    text = " ".join(plan["warnings"])
    assert "far outside the usual" in text and "3 row(s) exceed max_seq_length 64" in text
    with pytest.raises(InputError, match="r must be ≥ 1.*learning_rate must be > 0"):
        TrainSettings(r=0, learning_rate=0)
    with pytest.raises(InputError, match="Unknown setting"):
        TrainSettings.from_dict({"rank": 4})


def test_trainer_labels_equal_the_preview(tmp_path):
    """The Dataset tab's preview (build_example) is exactly what TRL's prepared dataset trains on."""
    from peft import LoraConfig, get_peft_model

    from lora_demo.device import detect
    from lora_demo.models import load_model
    from lora_demo.train.worker import build_dataset, sft_config, trainer_class

    s = TrainSettings(**{**TINY, "template": "chat", "max_seq_length": 48})
    rows = load_example("persona")[:6] + [{"instruction": "long " * 80, "input": "", "output": "cut"}]
    lm = load_model("qwen3-tiny")
    model = get_peft_model(lm.model, LoraConfig(r=4, target_modules=["q_proj"]))
    plan = detect(tokens_per_step=64)
    trainer = trainer_class(plan.backend)(
        model=model,
        args=sft_config(s, plan, tmp_path, False),
        train_dataset=build_dataset(rows, lm.tokenizer, s),
        processing_class=lm.tokenizer,
    )
    prepared = trainer.train_dataset
    previews = [build_example(r, lm.tokenizer, "chat", 48, True, False) for r in rows]
    kept = [p for p in previews if any(x != -100 for x in p.labels)]  # TRL drops fully masked rows
    assert prepared["labels"] == [p.labels for p in kept]
    assert prepared["input_ids"] == [p.input_ids for p in kept]


def _cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "lora_demo", *args], capture_output=True, text=True, timeout=timeout)


def test_cli_plan_json():
    out = _cli("plan", "--model", "unsloth/Qwen3-1.7B-unsloth-bnb-4bit", "--r", "16", "--json")
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["trainable_params"] == 17_432_576 and plan["total_params"] == 1_738_007_552
    assert plan["trainable_percent"] == pytest.approx(1.003, abs=1e-3)
    out = _cli(
        "plan", "--model", "qwen3-tiny", "--r", "8", "--targets", "q_proj,v_proj", "--dataset", "example:seed", "--json"
    )
    plan = json.loads(out.stdout)
    assert plan["trainable_params"] == 2 * 8 * ((64 + 64) + (64 + 32)) and plan["total_steps"] == 3


def test_cli_train_and_repeat_from_config(tmp_path):
    out = _cli(
        "train",
        "--runs-dir",
        str(tmp_path),
        "--model",
        "qwen3-tiny",
        "--dataset",
        "example:seed",
        "--max-steps",
        "3",
        "--warmup",
        "0",
        "--max-seq-length",
        "64",
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "completed: 3/3 steps" in out.stdout
    (run,) = [p for p in tmp_path.iterdir()]
    again = _cli("train", "--runs-dir", str(tmp_path), "--config", str(run / "config.yaml"))
    assert again.returncode == 0 and len(list(tmp_path.iterdir())) == 2  # a new run, the old one untouched
    bad = _cli("train", "--runs-dir", str(tmp_path), "--r", "0")
    assert bad.returncode == 2 and "r must be ≥ 1" in bad.stderr and "Traceback" not in bad.stderr


def test_failures_become_advice(tmp_path):
    from lora_demo.errors import ModelError
    from lora_demo.train.worker import explain_failure

    (tmp_path / "config.yaml").write_text(TrainSettings(**TINY).to_yaml())

    class OutOfMemoryError(RuntimeError):
        pass

    msg = explain_failure(OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), tmp_path)
    assert "Out of memory" in msg and "micro batch" in msg and "now micro batch 4, max length 128" in msg
    assert explain_failure(ModelError("'x/y' is gated (401): ..."), tmp_path).startswith("'x/y' is gated")
    other = explain_failure(ValueError("bad thing\nmore lines"), tmp_path)
    assert other == "Training failed (ValueError): bad thing. The full trace is in train.log of this run."


CJK = re.compile(r"[\u4e00-\u9fff]")


def test_the_plan_and_a_settings_error_render_in_chinese():
    """Issue 14: the engine's messages stay English for the CLI and render in Chinese for a zh session."""
    from lora_demo.i18n import render
    from lora_demo.train.plan import plan_markdown

    seed = TrainSettings(
        model="qwen3-tiny",
        dataset="example:seed",
        micro_batch_size=1,
        gradient_accumulation_steps=8,
        warmup=5,
        num_epochs=1,
    )
    plan = plan_run(seed, load_example("seed"))
    en, zh = plan_markdown(plan), plan_markdown(plan, "zh")
    assert "never leaves ~0" in en and "Trainable:" in en and not CJK.search(en)
    assert all(render(w, "zh") in zh for w in plan["warnings"]) and CJK.search(zh)
    assert "never leaves" not in zh and "Trainable" not in zh and "38,912" in zh  # numbers as they are
    with pytest.raises(InputError, match="r must be ≥ 1 .*; seed must be ≥ 0") as err:
        TrainSettings(**{**TINY, "r": 0, "seed": -1})
    zh = render(err.value.args[0], "zh")
    assert CJK.search(zh) and "must be" not in zh and "；" in zh and "(got" not in zh


def test_a_failure_reason_survives_status_json_in_either_language(tmp_path):
    """The worker (or the Runner) writes why a run failed; another process (the app) shows it in the page's
    language. Older run folders hold plain English strings: shown as they are."""
    from lora_demo.i18n import render
    from lora_demo.train.runner import exit_reason
    from lora_demo.train.runs import GONE, error_fields, error_of, settled, update_status
    from lora_demo.ui.views.train import progress_html

    reason = exit_reason(-9)
    update_status(tmp_path, status="failed", **error_fields(reason))
    st = read_status(tmp_path)
    assert st["error"] == "The training process was killed (SIGKILL): most likely out of memory."  # CLI, scripts
    zh = render(error_of(st), "zh")
    assert CJK.search(zh) and "SIGKILL" in zh and zh in progress_html(st, [], tmp_path, "zh")
    assert st["error"] in progress_html(st, [], tmp_path) and not CJK.search(progress_html(st, [], tmp_path))
    old = {"status": "failed", "error": "an older run's reason"}
    assert error_of(old) == "an older run's reason"
    assert "an older run&#x27;s reason" in progress_html(old, [], None, "zh")
    stale = {**st, "error": "written later as plain text"}  # a message that no longer matches its text is not used
    assert error_of(stale) == "written later as plain text"
    gone = settled(tmp_path, {"status": "training", "pid": 0})  # its worker vanished
    assert gone["status"] == "failed" and render(error_of(gone), "zh") == render(GONE, "zh") != GONE
