"""The newcomer's demo, started exactly as README says, walked in Chromium the way a person would.

A copy of the repository is the working directory and `python app.py` gets no folder flags, so runs/ and data/
are the relative defaults (the suite's other fixtures use absolute temporary folders, which hid that nothing
trained in the UI could be chatted with or analysed from the lists). The journey: pick qwen3-tiny and train
with the tab's defaults -> "Chat with this run" -> both answers -> back, pick the same run from the Chat list
by hand, load, chat -> analyse it from the Low-rank list -> export a zip. Any error toast fails it. Each step's
time is written to test-artifacts/journey-times.json.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.browser_helpers import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, ROOT, answer, free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]
if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError("CI must install Debian's chromium for the browser journey (.ci/run does)")
    pytest.skip("needs Debian's chromium at /usr/bin/chromium", allow_module_level=True)
_EVERYWHERE = shutil.ignore_patterns("__pycache__", ".*_cache")


def _ignore(folder: str, names: list[str]) -> set[str]:
    """Not copied: the venv, git, and the top-level runs/ and data/ a developer may have (lora_demo/data is code)."""
    top = {".git", ".venv", "runs", "data", "test-artifacts"} if Path(folder) == ROOT else set()
    return set(_EVERYWHERE(folder, names)) | (top & set(names))


TIMES: dict[str, float] = {}


@pytest.fixture(scope="module")
def readme_app(tmp_path_factory):
    """`python app.py` in a fresh copy of the repo (a free port is the only flag: CI may have 7860 taken)."""
    repo = tmp_path_factory.mktemp("newcomer") / "lora-lab"
    shutil.copytree(ROOT, repo, ignore=_ignore)
    port = free_port()
    log = open(repo / "app.log", "w")  # noqa: SIM115
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "app.py", "--port", str(port)], cwd=repo, stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError((repo / "app.log").read_text()) from None
            time.sleep(0.5)
    TIMES["app start"] = round(time.perf_counter() - t0, 1)
    yield f"http://127.0.0.1:{port}", repo
    proc.terminate()
    proc.wait(20)
    (ARTIFACTS.parent / "journey-times.json").write_text(json.dumps(TIMES, indent=1))


@pytest.fixture(scope="module")
def page(readme_app):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000}, locale="en-US")
        pg.set_default_timeout(60_000)
        pg.goto(readme_app[0])
        pg.get_by_role("tab", name="System").wait_for()
        yield pg
        browser.close()


@pytest.fixture(autouse=True)
def no_error_toast(request, page):
    """Every step must end without an error toast; a failing step is screenshotted."""
    t0 = time.perf_counter()
    yield
    TIMES[request.node.name] = round(time.perf_counter() - t0, 1)
    errors = page.locator(".toast-body.error")
    rep = getattr(request.node, "rep_call", None)
    if (rep is not None and rep.failed) or errors.count():
        page.screenshot(path=str(ARTIFACTS / f"FAILED-{request.node.name}.png"), full_page=True)
    assert errors.count() == 0, f"error toast: {errors.first.inner_text()}"


def tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()
    page.get_by_role("tab", name=name, exact=True, selected=True).wait_for()


def pick(page, elem_id: str, option_regex: str) -> None:
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=re.compile(option_regex)).first.click()


def trained_run(repo: Path) -> str:
    runs = [p.parent.name for p in (repo / "runs").glob("*/adapter_config.json")]
    assert len(runs) == 1, runs
    return runs[0]


def chat_and_read(page) -> tuple[str, str]:
    page.locator("#chat-input textarea").fill("What is your name?")
    page.locator("#chat-send").click()
    page.locator("#chat-tuned-stats").get_by_text("tok/s").wait_for(timeout=120_000)
    page.locator("#chat-base-stats").get_by_text("tok/s").wait_for(timeout=120_000)
    return answer(page, "chat-base"), answer(page, "chat-tuned")


def test_1_train_with_the_tabs_defaults(page, readme_app):
    tab(page, "Train")
    pick(page, "train-model", r"^qwen3-tiny$")
    page.get_by_role("button", name="Start training", exact=True).click()
    page.locator("#train-message").get_by_text("Started").wait_for()
    page.locator("#train-progress[data-stage='completed']").wait_for(timeout=300_000)
    run = trained_run(readme_app[1])
    assert page.locator("#train-progress").get_attribute("data-run") == run
    assert (readme_app[1] / "runs" / run / "adapter_model.safetensors").is_file()  # relative runs/, in the copy
    # Beside the curve, the probe prompts' answers from step 0 through the checkpoints to the end.
    timeline = page.locator("#probe-timeline")
    assert int(timeline.get_attribute("data-points")) >= 3
    assert (
        timeline.get_by_text("step 0", exact=True).count() == 1
        and timeline.get_by_text(re.compile(r"^final \(step \d+\)$")).count() == 1
    )


def test_2_chat_with_this_run(page, readme_app):
    run = trained_run(readme_app[1])
    page.locator("#train-chat").click()
    page.get_by_role("tab", name="Chat", exact=True, selected=True).wait_for()
    loaded = re.compile(r"Loaded base qwen3-tiny with adapter .*" + re.escape(run))  # Markdown drops the backticks
    page.locator("#chat-status").get_by_text(loaded).wait_for(timeout=120_000)
    page.get_by_text("Prompt and generation settings").click()
    page.get_by_label("greedy (deterministic)").check()
    page.get_by_role("spinbutton", name="max new tokens").fill("12")
    page.get_by_role("spinbutton", name="max new tokens").press("Enter")
    base, tuned = chat_and_read(page)
    assert base and tuned and base != tuned


def test_3_pick_the_run_from_the_chat_list_by_hand(page, readme_app):
    run = trained_run(readme_app[1])
    tab(page, "Train")
    tab(page, "Chat")
    page.locator("#chat-clear").click()
    pick(page, "chat-adapter", "^" + re.escape(run))
    with page.expect_response(lambda r: "/queue/join" in r.url):
        page.locator("#chat-load").click()
    page.locator("#chat-status").get_by_text(re.compile(r"Loaded base .*" + re.escape(run))).wait_for(timeout=120_000)
    base, tuned = chat_and_read(page)
    assert base and tuned and base != tuned


def test_4_analyse_the_run_from_the_lowrank_list(page, readme_app):
    run = trained_run(readme_app[1])
    tab(page, "Low-rank lab")
    pick(page, "lowrank-adapter", "^" + re.escape(run))
    page.get_by_role("button", name="Analyze", exact=True).click()
    page.locator("#lowrank-summary").get_by_text("14 LoRA modules").wait_for()


def test_5_export_the_run_as_a_zip(page, readme_app):
    run = trained_run(readme_app[1])
    tab(page, "Train")
    assert page.locator("#train-view input").input_value() == run
    page.get_by_text("Export the shown run").click()
    page.get_by_role("button", name="Adapter as .zip", exact=True).click()
    page.locator("#export-message").get_by_text("Zipped").wait_for()
    zips = list((readme_app[1] / "runs" / run / "exports").glob("*.zip"))
    assert len(zips) == 1 and zips[0].stat().st_size > 10_000


def test_6_continue_training_and_compare_with_the_parent(page, readme_app):
    parent = trained_run(readme_app[1])
    tab(page, "Train")
    page.locator("#train-continue").click()
    page.locator("#train-message").get_by_text("The form now continues from").wait_for()
    page.get_by_role("spinbutton", name="epochs", exact=True).fill("1")
    page.get_by_role("button", name="Start training", exact=True).click()
    page.locator("#train-message").get_by_text("Started").wait_for()
    done = page.locator(f"#train-progress[data-stage='completed']:not([data-run='{parent}'])")
    done.wait_for(timeout=300_000)
    child = done.get_attribute("data-run")
    assert child != parent
    tab(page, "Low-rank lab")
    pick(page, "lowrank-adapter", "^" + re.escape(child) + " · completed")
    page.locator("#lowrank-compare").click()
    summary = page.locator("#lowrank-compare-summary")
    summary.get_by_text(f"Parent {parent} → child {child}: 14 shared modules").wait_for()


def test_7_stop_then_resume_from_the_button(page, readme_app):
    tab(page, "Train")
    page.get_by_role("spinbutton", name="max steps (-1: epochs)").fill("120")  # long enough to stop half-way
    page.get_by_role("button", name="Start training", exact=True).click()
    page.locator("#train-message").get_by_text("Started").wait_for()
    page.locator("#train-progress[data-stage='training']").wait_for(timeout=120_000)
    page.locator("#train-stop").click()
    page.locator("#train-progress[data-stage='stopped']").wait_for(timeout=120_000)
    run = page.locator("#train-progress").get_attribute("data-run")
    stopped_at = int(page.locator("#train-progress").get_attribute("data-step"))
    page.locator("#train-resume").click()
    page.locator("#train-message").get_by_text(f"Resuming {run} from checkpoint step {stopped_at}").wait_for()
    page.locator("#train-progress[data-stage='completed']").wait_for(timeout=300_000)
    assert page.locator("#train-progress").get_attribute("data-run") == run
    assert page.locator("#train-resume").is_hidden()


def test_8_a_checkpoint_is_the_tuned_side_in_chat(page, readme_app):
    tab(page, "Chat")
    page.locator("#chat-clear").click()
    pick(page, "chat-adapter", r" · checkpoint step \d+ of \d+")
    page.locator("#chat-load").click()
    # The base is loaded already: the checkpoint is attached to it ("Attached in"), or loaded with it ("Ready in").
    ready = re.compile(r"(Ready|Attached) in .*checkpoint-\d+")
    page.locator("#chat-status").get_by_text(ready).wait_for(timeout=120_000)
    base, tuned = chat_and_read(page)
    assert base and tuned
