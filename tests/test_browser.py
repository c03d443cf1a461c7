"""The product the way a user meets it: Playwright drives Debian's Chromium (headless) against the real app.

Starts `python app.py --model qwen3-tiny` on a free port with fresh runs/ and data/ folders, then walks the
journey: example dataset -> validate -> preview masking -> train -> stop a second run -> chat base vs tuned
-> the adapter in the Low-rank lab -> export a zip, plus a page reload during training. A screenshot of each stage
goes to test-artifacts/browser/ with LORA_LAB_SCREENSHOTS=1 (README pictures come from there); a failing
stage is always captured there as FAILED-<test>.png.
"""

from __future__ import annotations

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


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    port = free_port()
    log = open(root / "app.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "app.py",
            "--port",
            str(port),
            "--model",
            "qwen3-tiny",
            "--runs-dir",
            str(root / "runs"),
            "--data-dir",
            str(root / "data"),
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError((root / "app.log").read_text()) from None
            time.sleep(0.5)
    yield f"http://127.0.0.1:{port}", root
    proc.terminate()
    proc.wait(20)


@pytest.fixture(scope="module")
def page(app_url):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000}, locale="en-US")
        pg.set_default_timeout(60_000)
        pg.goto(app_url[0])
        pg.get_by_role("tab", name="System").wait_for()
        yield pg
        browser.close()


@pytest.fixture(autouse=True)
def screenshot_on_failure(request, page):
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        page.screenshot(path=str(ARTIFACTS / f"FAILED-{request.node.name}.png"), full_page=True)


def shot(page, name: str) -> None:
    """Stage screenshots on request (LORA_LAB_SCREENSHOTS=1, for the README); failures are always captured."""
    if os.environ.get("LORA_LAB_SCREENSHOTS"):
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()
    page.wait_for_timeout(500)


def click(page, name: str) -> None:
    page.get_by_role("button", name=name, exact=True).click()


def pick(page, elem_id: str, option_regex: str) -> None:
    """Open a Gradio dropdown and click the first option matching a regex."""
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=re.compile(option_regex)).first.click()


def wait_stage(page, stage: str, timeout_s: float = 240) -> dict:
    """Wait until the progress box shows `stage`; returns what it shows (run, step) at that moment."""
    box = page.locator(f"#train-progress[data-stage='{stage}']")
    box.wait_for(timeout=timeout_s * 1000)
    return {"run": box.get_attribute("data-run"), "step": int(box.get_attribute("data-step"))}


def test_1_dataset_example_validate_preview(page):
    tab(page, "Dataset")
    click(page, "Load example")
    page.locator("#dataset-status").get_by_text("Loaded example").wait_for()
    click(page, "Validate")
    page.locator("#validation-report").get_by_text("0 error(s)").wait_for()
    from playwright.sync_api import expect

    click(page, "Preview row")
    expect(page.locator("#preview-tokens")).to_contain_text("What is your name?")  # the masked prompt
    expect(page.locator("#preview-tokens")).to_contain_text("My name is Lumi")  # the trained response
    shot(page, "1-dataset")


def test_2_train_with_live_progress_and_reload(page, app_url):
    tab(page, "Train")
    click(page, "Start training")
    page.locator("#train-message").get_by_text("Started").wait_for()
    run = wait_stage(page, "training")["run"]
    steps = set()
    deadline = time.time() + 60
    while len(steps) < 3 and time.time() < deadline:  # the bar moves
        steps.add(int(page.locator("#train-progress").get_attribute("data-step")))
        page.wait_for_timeout(400)
    assert len(steps) >= 3
    page.reload()  # a reload re-attaches to the running job: the same run, at or past the last step seen
    page.get_by_role("tab", name="Train", exact=True).click()
    box = page.locator("#train-progress:not([data-run=''])")  # the first tick after the reload fills it in
    box.wait_for()
    assert box.get_attribute("data-run") == run
    assert int(box.get_attribute("data-step")) >= max(steps)
    done = wait_stage(page, "completed")
    assert done["run"] == run and done["step"] > max(steps)
    assert page.locator("#train-curve .js-plotly-plot").count() == 1
    shot(page, "2-train")


def test_3_stop_a_second_run(page):
    page.get_by_label("max steps (-1: epochs)").fill("3000")
    click(page, "Start training")
    page.locator("#train-message").get_by_text("Started").wait_for()
    run = wait_stage(page, "training")["run"]
    page.wait_for_timeout(1500)
    click(page, "Stop")
    stopped = wait_stage(page, "stopped", 120)
    assert stopped["run"] == run and 0 < stopped["step"] < 3000
    shot(page, "3-stopped")


def completed_run(app_url) -> str:
    from lora_demo.train.runs import list_runs

    return next(r["name"] for r in list_runs(app_url[1] / "runs") if r["status"] == "completed")


def test_3b_chat_with_an_older_run_keeps_that_run(page, app_url):
    """With a newer (stopped) run in the list, "Chat with this run" on the older one must load and show that one:
    opening the Chat tab refreshes its list, which must not jump to the newest."""
    run = completed_run(app_url)
    pick(page, "train-view", "^" + re.escape(run) + "$")
    page.locator("#train-chat").click()
    page.get_by_role("tab", name="Chat", exact=True, selected=True).wait_for()
    page.locator("#chat-status").get_by_text(re.compile(r"Loaded base .*" + re.escape(run))).wait_for(timeout=120_000)
    page.wait_for_timeout(1000)  # let the tab's list refresh land
    assert page.locator("#chat-adapter input").input_value().startswith(run)


def test_4_chat_base_vs_tuned(page, app_url):
    tab(page, "Chat")
    # An error stays visible in the tab's status line after its toast has gone (toasts last 10 s).
    page.locator("#chat-input textarea").fill("   ")
    click(page, "Send")
    page.locator("#chat-status .lab-error").get_by_text("Type a message first").wait_for()
    page.locator(".toast-body.error").first.wait_for(state="hidden", timeout=20_000)
    assert "Type a message first" in page.locator("#chat-status").inner_text()
    pick(page, "chat-adapter", "^" + re.escape(completed_run(app_url)) + " ")
    click(page, "Load")
    page.locator("#chat-status").get_by_text("Loaded base").wait_for(timeout=120_000)
    page.get_by_text("Prompt and generation settings").click()
    page.get_by_label("greedy (deterministic)").check()
    page.get_by_role("spinbutton", name="max new tokens").fill("12")
    page.get_by_role("spinbutton", name="max new tokens").press("Enter")
    page.locator("#chat-input textarea").fill("What is your name?")
    click(page, "Send")
    page.locator("#chat-tuned-stats").get_by_text("tok/s").wait_for(timeout=120_000)
    page.locator("#chat-base-stats").get_by_text("tok/s").wait_for(timeout=120_000)
    base, tuned = answer(page, "chat-base"), answer(page, "chat-tuned")
    assert base and tuned and base != tuned
    shot(page, "4-chat")


def test_4b_blind_votes_and_the_win_rate(page, app_url):
    """Three blind votes over the run's own rows; the page never says which side is tuned before a vote."""
    page.get_by_text("Is the tuned model better? Blind A/B votes").click()
    page.locator("#blind-rows").click()
    for n, choice in enumerate(["A", "B", "tie"], 1):
        page.locator("#blind-status").get_by_text("Which answer is better?").wait_for(timeout=120_000)
        assert "tuned" not in page.locator("#blind-a").inner_text() + page.locator("#blind-b").inner_text()
        page.locator(f"#blind-vote-{choice}").click()
        page.locator("#blind-rate").get_by_text(re.compile(rf"over {n} votes?")).wait_for(timeout=60_000)
        assert "was the tuned model" in page.locator("#blind-reveal").inner_text()
    rate = page.locator("#blind-rate").inner_text()
    assert re.search(r"win rate \d+%", rate), rate
    shot(page, "4b-votes")


def test_5_adapter_in_the_lowrank_lab(page, app_url):
    tab(page, "Low-rank lab")
    pick(page, "lowrank-adapter", "^" + re.escape(completed_run(app_url)) + " ")
    click(page, "Analyze")
    page.locator("#lowrank-summary").get_by_text("14 LoRA modules").wait_for()
    shot(page, "5-lowrank")


def test_6_export_zip(page, app_url):
    tab(page, "Train")
    page.get_by_text("Export the shown run").click()
    click(page, "Adapter as .zip")
    page.locator("#export-message").get_by_text("Zipped").wait_for()
    zips = list((app_url[1] / "runs").glob("*/exports/*.zip"))
    assert len(zips) == 1 and zips[0].stat().st_size > 10_000
    # GGUF with its Modelfile, then the parity report of app vs merged vs GGUF, from the same panel.
    pick(page, "export-gguf-type", "^f16$")
    click(page, "GGUF + Ollama Modelfile")
    page.locator("#export-message").get_by_text("GGUF written").wait_for(timeout=180_000)
    exports = zips[0].parent
    assert list(exports.glob("*-f16.gguf")) and "FROM ./" in (exports / "Modelfile").read_text()
    click(page, "Check parity: app vs merged vs GGUF")
    report = page.locator("#parity-report")
    report.wait_for(timeout=240_000)
    text = report.inner_text()
    assert "GGUF f16 (llama.cpp)" in text and "the same tokens on every path" in text, text[:500]
    assert report.locator("table.parity").count() >= 3
    assert page.locator(".toast-body.error").count() == 0  # no error toast over the page
    shot(page, "6-export")


def teardown_module():
    shutil.rmtree(ARTIFACTS / "tmp", ignore_errors=True)
