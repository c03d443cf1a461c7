"""train.watch.look: the Train tab redraws only what changed, so an open page does not slow the training."""

from __future__ import annotations

import json
import re

import pytest

from lora_demo.train.runs import read_progress
from lora_demo.train.watch import CURVE_EVERY_S, LOG_EVERY_S, look
from lora_demo.ui.views.train import progress_html


def write_run(run_dir, status: str, step: int, logs: int, log_text: str = "") -> None:
    run_dir.mkdir(exist_ok=True)
    (run_dir / "status.json").write_text(json.dumps({"status": status, "step": step, "total_steps": 10}))
    lines = [json.dumps({"type": "log", "step": i + 1, "loss": 3.0 - i, "lr": 1e-3}) for i in range(logs)]
    (run_dir / "progress.jsonl").write_text("".join(x + "\n" for x in lines))
    (run_dir / "train.log").write_text(log_text)


def test_first_look_draws_everything_then_nothing_until_a_change(tmp_path):
    run = tmp_path / "r"
    write_run(run, "training", 1, 1, "step 1\n")
    first = look(run, None, now=100.0)
    assert first.status["step"] == 1 and first.curve and first.log == "step 1"
    again = look(run, first.seen, now=101.0)
    assert not again.changed and not again.curve  # nothing new: the UI sends nothing


def test_a_new_step_updates_the_bar_at_once_and_the_curve_at_most_every_few_seconds(tmp_path):
    run = tmp_path / "r"
    write_run(run, "training", 1, 1)
    seen = look(run, None, now=100.0).seen
    write_run(run, "training", 2, 2)
    soon = look(run, seen, now=101.0)
    assert soon.status["step"] == 2 and not soon.curve  # the bar moves, the figure waits
    later = look(run, soon.seen, now=100.0 + CURVE_EVERY_S)
    assert later.curve and later.status is None  # the pending points are drawn once due, without a new step
    assert len([p for p in later.progress if p["type"] == "log"]) == 2
    assert not look(run, later.seen, now=200.0).curve  # and only once


def test_the_end_of_a_run_is_drawn_at_once(tmp_path):
    run = tmp_path / "r"
    write_run(run, "training", 1, 1, "a\n")
    seen = look(run, None, now=100.0).seen
    write_run(run, "completed", 2, 2, "a\nb\n")
    end = look(run, seen, now=100.5)
    assert end.status["status"] == "completed" and end.curve and end.log == "a\nb"


def test_the_log_is_throttled_while_training(tmp_path):
    run = tmp_path / "r"
    write_run(run, "training", 1, 1, "a\n")
    seen = look(run, None, now=100.0).seen
    (run / "train.log").write_text("a\nb\n")
    assert look(run, seen, now=100.5).log is None
    assert look(run, seen, now=100.0 + LOG_EVERY_S).log == "a\nb"


def test_another_run_is_drawn_in_full(tmp_path):
    write_run(tmp_path / "one", "training", 1, 1)
    write_run(tmp_path / "two", "completed", 3, 3)
    seen = look(tmp_path / "one", None, now=100.0).seen
    other = look(tmp_path / "two", seen, now=100.1)
    assert other.curve and other.status["step"] == 3


def test_progress_html_escapes_the_error_and_names_the_run(tmp_path):
    html = progress_html({"status": "failed", "error": "<script>alert(1)</script>"}, [], tmp_path / "r<1>")
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert 'data-run="r&lt;1&gt;"' in html


class _Clock:
    """time.time for the progress callback: advanced by hand."""

    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def _drive(monkeypatch, tmp_path, durations, total, probe_s=0.0, tokens_per_step=100):
    """Run ProgressCallback (and its clock, last, as the worker adds it) through the Trainer's calls: step k takes
    durations[k-1] seconds; just before step 2 another callback (the step-0 probes) spends probe_s seconds."""
    from types import SimpleNamespace

    from lora_demo.train import callback as cb

    clock = _Clock()
    monkeypatch.setattr(cb.time, "time", clock)
    monkeypatch.setattr(cb, "stop_agreed", lambda run_dir, device: False)
    progress = cb.ProgressCallback(tmp_path)
    args, control = SimpleNamespace(device="cpu"), SimpleNamespace(should_training_stop=False, should_save=False)
    state = SimpleNamespace(global_step=0, max_steps=total, epoch=0.0, num_input_tokens_seen=0)
    progress.on_train_begin(args, state, control)
    clock.t += 30  # nothing else before step 1
    for k, seconds in enumerate(durations, start=1):
        progress.on_step_begin(args, state, control)
        if k == 2:
            clock.t += probe_s  # MilestoneCallback.on_step_begin: the base model's answers
        progress.clock.on_step_begin(args, state, control)
        clock.t += seconds
        state.num_input_tokens_seen += tokens_per_step
        state.global_step = k
        progress.on_step_end(args, state, control)
        progress.on_log(args, state, control, logs={"loss": 1.0, "learning_rate": 1e-3})
        clock.t += 0.5  # logging, a checkpoint now and then
    return progress, state, args, control


def _logs(tmp_path):
    return [p for p in read_progress(tmp_path) if p.get("type") == "log"]


def test_the_eta_comes_from_the_recent_steps_not_the_warm_up_or_the_probes(monkeypatch, tmp_path):
    """Issue 28: the ETA at step 2 counted the step-0 probes (and the whole run's average stayed slow long after a
    slow start). Now: the steps' own time, the recent ones only, the first step never."""
    # step 1 loads/compiles for 60 s, the probes before step 2 take 40 s, then every step takes 1 s
    _drive(monkeypatch, tmp_path, [60.0] + [1.0] * 3, total=100, probe_s=40.0)
    logs = _logs(tmp_path)
    assert "eta_s" not in logs[0] and logs[0]["tokens_per_s"] == pytest.approx(100 / 60, abs=0.05)  # step 1 alone
    assert logs[1]["eta_s"] == pytest.approx(98.0) and logs[1]["s_per_step"] == pytest.approx(1.0)
    assert logs[-1]["tokens_per_s"] == pytest.approx(100.0)

    # three slow steps (4 s) early, then 1 s steps: after RECENT_STEPS fast steps the slow ones no longer count
    from lora_demo.train.callback import RECENT_STEPS

    other = tmp_path / "other"
    other.mkdir()
    _drive(monkeypatch, other, [5.0, 4.0, 4.0, 4.0] + [1.0] * RECENT_STEPS, total=100)
    last = _logs(other)[-1]
    assert last["step"] == 4 + RECENT_STEPS and last["eta_s"] == pytest.approx(100 - last["step"])


def test_a_finished_run_shows_its_real_average_speed(monkeypatch, tmp_path):
    """Issue 28: a finished run showed its last log's "0 tok/s". It shows the run's average tokens/s instead."""
    progress, state, args, control = _drive(monkeypatch, tmp_path, [3.0] + [1.0] * 9, total=10)
    progress.on_train_end(args, state, control)
    records = read_progress(tmp_path)
    summary = next(p for p in records if p.get("type") == "summary")
    # 10 steps × 100 tokens over the whole time in training: 30 s before step 1, 3 + 9 × 1 s of steps, 10 × 0.5 s
    assert summary["tokens"] == 1000 and summary["train_s"] == pytest.approx(47.0)
    assert summary["tokens_per_s"] == pytest.approx(1000 / 47, abs=0.1)
    records = [{**p, "tokens_per_s": 0.0} if p.get("type") == "log" else p for p in records]  # a last log of 0
    done = progress_html({"status": "completed", "step": 10, "total_steps": 10}, records)
    assert not re.search(r"\b0 tok/s", done)
    assert f"{summary['tokens_per_s']:.0f} tok/s on average" in done and "ETA" not in done
    zh = progress_html({"status": "completed", "step": 10, "total_steps": 10}, records, lang="zh")
    assert f"平均 {summary['tokens_per_s']:.0f} tok/s" in zh
    live = progress_html({"status": "training", "step": 10, "total_steps": 10}, read_progress(tmp_path))
    assert "ETA 0 s" in live and "on average" not in live


# What the worker's train.log holds while it loads and trains: tqdm redraws with "\r", clears with spaces, and moves
# up a line for the evaluation bar with "\x1b[A".
WIPE = "\r" + " " * 46 + "\r"  # tqdm clears its bar with spaces before printing a line
TQDM_LOG = "".join(
    [
        "Failed to load CPU gemm_4bit_forward from kernels-community\n",
        "\rLoading weights:   0%|          | 0/25 [00:00<?, ?it/s]",
        "\rLoading weights: 100%|██████████| 25/25 [00:00<00:00]\n",
        "Batching: padding-free, micro batch 4\n",
        "\r  0%|          | 0/40 [00:00<?, ?it/s]\r  2%|▎         | 1/40 [00:00<00:22,  1.76it/s]",
        WIPE + "{'loss': '13.17', 'epoch': '0.1'}\n",
        "\r  0%|          | 0/1 [00:00<?, ?it/s]\x1b[A" + WIPE + "\n",
        WIPE + "\x1b[A{'eval_loss': '10.69', 'epoch': '1'}\n",
        "\x1b[32mgreen\x1b[0m text\r\n",
        "\r  2%|▎         | 1/40 [00:00<00:22,  1.76it/s]\r  5%|▌         | 2/40 [00:07<02:47,  4.41s/it]",
    ]
)


def test_the_log_tail_is_what_a_terminal_shows(tmp_path):
    """Issue 28: the tail showed raw escapes ("\\x1b[A") and one line per tqdm refresh. Now escapes are gone and
    each line shows its latest state; the unfinished bar at the end is the last line."""
    from lora_demo.train.runs import log_tail

    (tmp_path / "train.log").write_text(TQDM_LOG, encoding="utf-8")
    assert log_tail(tmp_path).splitlines() == [
        "Failed to load CPU gemm_4bit_forward from kernels-community",
        "Loading weights: 100%|██████████| 25/25 [00:00<00:00]",
        "Batching: padding-free, micro batch 4",
        "{'loss': '13.17', 'epoch': '0.1'}",
        "{'eval_loss': '10.69', 'epoch': '1'}",
        "green text",
        "  5%|▌         | 2/40 [00:07<02:47,  4.41s/it]",
    ]


def test_the_log_tail_is_the_last_lines_and_fits_its_box(tmp_path):
    """Issue 28: while loading, the box showed the first lines of the tail (30 lines in a box of 14, each tqdm
    refresh a line). The tail is the last lines, and the Train tab's box shows all of them without scrolling."""
    import gradio as gr

    from lora_demo.train.runs import LOG_TAIL_LINES, log_tail
    from lora_demo.ui import AppSettings, build_app

    lines = [f"line {i}" for i in range(200)]
    refreshes = "".join(f"\rLoading weights: {k:3d}%" for k in range(0, 101))  # one line, redrawn 101 times
    (tmp_path / "train.log").write_text("\n".join(lines) + "\n" + refreshes, encoding="utf-8")
    tail = log_tail(tmp_path).splitlines()
    assert tail == [*lines[-(LOG_TAIL_LINES - 1) :], "Loading weights: 100%"]
    # a log longer than what is read of it (64 KiB) starts at a whole line
    (tmp_path / "train.log").write_text("".join(f"{'x' * 99}{i}\n" for i in range(2000)), encoding="utf-8")
    assert log_tail(tmp_path).splitlines()[-1] == "x" * 99 + "1999"

    (tmp_path / "runs").mkdir()
    (tmp_path / "data").mkdir()
    demo = build_app(AppSettings(runs_dir=tmp_path / "runs", data_dir=tmp_path / "data"))
    (box,) = [b for b in demo.blocks.values() if isinstance(b, gr.Code) and b.elem_id == "train-log"]
    assert box.max_lines > LOG_TAIL_LINES and not box.wrap_lines  # every tail line is a row of the box, in view
