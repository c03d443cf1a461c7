"""train.watch.look: the Train tab redraws only what changed, so an open page does not slow the training."""

from __future__ import annotations

import json

from lora_demo.train.plots import progress_html
from lora_demo.train.watch import CURVE_EVERY_S, LOG_EVERY_S, look


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
