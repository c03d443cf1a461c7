"""Close the loop from the browser (issue 31), in Debian's Chromium against `python app.py --model qwen3-tiny`: train
SFT → vote on blind pairs → "Train DPO from these votes" → the DPO round with its reward curves → base / SFT / DPO
side by side → a blind vote DPO against SFT with its own win-rate line; then a reward-tuned (GRPO) run with a format
reward picked in the form. Every hand-off is a click or a pick from a list, as a visitor does it."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.browser_helpers import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, answer, new_blind_pair, start_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError("CI must install Debian's chromium for the browser tests (.ci/run does)")
    pytest.skip("needs Debian's chromium at /usr/bin/chromium", allow_module_level=True)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from playwright.sync_api import sync_playwright

    root = tmp_path_factory.mktemp("prefs")
    proc, url = start_app(root)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            pg = browser.new_page(viewport={"width": 1440, "height": 1000}, locale="en-US")
            pg.set_default_timeout(120_000)
            pg.goto(url)
            pg.get_by_role("tab", name="System").wait_for()
            yield pg, root
            browser.close()
    finally:
        proc.terminate()
        proc.wait(20)


@pytest.fixture(autouse=True)
def screenshot_on_failure(request, app):
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        app[0].screenshot(path=str(ARTIFACTS / f"FAILED-{request.node.name}.png"), full_page=True)


def _tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()
    page.get_by_role("tab", name=name, exact=True, selected=True).wait_for()


def _pick(page, elem_id: str, option_regex: str) -> None:
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=re.compile(option_regex)).first.click()


def _train(page, steps: int) -> str:
    """Start the form's run with `steps` steps and wait for it to complete; its name."""
    page.get_by_label("max steps (-1: epochs)").fill(str(steps))
    page.get_by_role("button", name="Start training", exact=True).click()
    started = page.locator("#train-message").get_by_text("Started")
    started.wait_for()
    run = re.search(r"Started (\S+)\.", started.inner_text()).group(1)
    page.locator(f"#train-progress[data-stage='completed'][data-run='{run}']").wait_for(timeout=300_000)
    return run


def _short_greedy_answers(page) -> None:
    page.get_by_text("Prompt and generation settings").click()
    page.get_by_label("greedy (deterministic)").check()
    page.get_by_role("spinbutton", name="max new tokens").fill("10")
    page.get_by_role("spinbutton", name="max new tokens").press("Enter")


def test_sft_then_votes_then_dpo_from_the_votes_then_compare_and_vote_dpo_against_sft(app):
    page, root = app
    _tab(page, "Train")
    assert page.locator("#train-method input[value='sft']").is_checked()
    sft = _train(page, 8)

    # Vote on the SFT run's own rows, blind: four decided votes are four preference pairs.
    _tab(page, "Chat")
    _pick(page, "chat-adapter", "^" + re.escape(sft) + " ")
    _short_greedy_answers(page)
    page.get_by_text("Is the tuned model better? Blind A/B votes").click()
    page.locator("#blind-rows").click()
    for n, choice in enumerate(["A", "B", "A", "B"], 1):
        page.locator("#blind-status").get_by_text("Which answer is better?").wait_for()
        page.locator(f"#blind-vote-{choice}").click()
        page.locator("#blind-rate").get_by_text(re.compile(rf"over {n} votes?")).wait_for()

    # The hand-off: the Train tab opens with a DPO round on those votes, continuing from the voted run.
    page.locator("#blind-train-dpo").click()
    page.get_by_role("tab", name="Train", exact=True, selected=True).wait_for()
    page.locator("#train-message").get_by_text("The form now trains DPO").wait_for()
    assert page.locator("#train-method input[value='dpo']").is_checked()
    assert page.locator("#train-dpo-beta").is_visible()
    assert page.locator("#train-parent input").input_value().startswith(sft)
    page.get_by_role("button", name="Check plan", exact=True).click()
    plan = page.locator("#train-plan")
    plan.get_by_text(re.compile(r"DPO on 4 preference pairs")).wait_for()
    assert "Reference model" in plan.inner_text() and "Only 4 preference pair" in plan.inner_text()
    dpo = _train(page, 4)
    assert dpo != sft
    # The live chart shows DPO's own curves: the reward margin and accuracy beside the loss.
    legend = page.locator("#train-curve").inner_text()
    assert "reward margin" in legend and "reward accuracy" in legend, legend
    if os.environ.get("LORA_LAB_SCREENSHOTS"):
        page.screenshot(path=str(ARTIFACTS / "dpo-train.png"), full_page=True)

    # Base, SFT and DPO side by side from one prompt.
    _tab(page, "Chat")
    _pick(page, "chat-adapter", "^" + re.escape(dpo) + " ")
    page.get_by_text("Compare with more adapters (one batch)").click()
    page.locator("#chat-compare input").click()
    page.get_by_role("option", name=re.compile("^" + re.escape(sft) + " ")).first.click()
    page.keyboard.press("Escape")
    page.locator("#chat-input textarea").fill("What is your name?")
    page.locator("#chat-send").click()
    for side in ("tuned", "extra0"):
        page.locator(f"#chat-{side}-stats").get_by_text("tok/s").wait_for()
    panes = [answer(page, "chat-base"), answer(page, "chat-tuned"), answer(page, "chat-extra0")]
    assert all(panes), panes

    # A blind pair DPO against SFT: its vote gets its own win-rate line.
    _pick(page, "blind-opponent", "^" + re.escape(sft))
    page.locator("#blind-prompt textarea").fill("Who made you?")
    new_blind_pair(page)
    page.locator("#blind-vote-A").click()
    rate = page.locator("#blind-rate")
    rate.get_by_text(re.compile(re.escape(dpo) + r" vs " + re.escape(sft))).wait_for()
    if os.environ.get("LORA_LAB_SCREENSHOTS"):
        page.screenshot(path=str(ARTIFACTS / "dpo-vote.png"), full_page=True)
    votes = (root / "runs" / dpo / "votes.jsonl").read_text()
    assert sft in votes  # the vote records the other side


def test_a_reward_tuned_run_with_a_format_reward_picked_in_the_form(app):
    page, root = app
    _tab(page, "Train")
    page.locator("#train-method").get_by_text("GRPO", exact=True).click()
    page.locator("#train-grpo").wait_for()
    assert not page.locator("#train-dpo-beta").is_visible()
    page.locator("#train-rewards input").click()
    page.get_by_role("option", name="format:<answer>", exact=True).click()
    page.keyboard.press("Escape")
    page.get_by_role("spinbutton", name="answers per prompt", exact=True).fill("2")
    page.get_by_role("spinbutton", name="answer tokens", exact=True).fill("8")
    page.get_by_role("button", name="Check plan", exact=True).click()
    page.locator("#train-plan").get_by_text(re.compile(r"GRPO on \d+ prompts")).wait_for()
    run = _train(page, 2)
    import yaml

    cfg = yaml.safe_load((root / "runs" / run / "config.yaml").read_text())
    assert cfg["method"] == "grpo" and cfg["rewards"] == ["format:<answer>"] and cfg["grpo_generations"] == 2
    legend = page.locator("#train-curve").inner_text()
    assert "mean reward" in legend and "reward: format" in legend, legend
    if os.environ.get("LORA_LAB_SCREENSHOTS"):
        page.screenshot(path=str(ARTIFACTS / "grpo-train.png"), full_page=True)
