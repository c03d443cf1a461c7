"""The blind A/B votes the way a visitor meets them (issue 28), in Debian's Chromium against `python app.py`: the two
answers are labelled A and B; a new question clears the previous reveal, and in the rows loop the reveal is worded as
the last pair's. Issue 31: "against" pits the adapter against another one of the list, and the win rate is per pair."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from tests.browser_helpers import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, new_blind_pair, start_app
from tests.test_chat_adapters import _random_adapter

pytestmark = [pytest.mark.browser, pytest.mark.slow]

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError("CI must install Debian's chromium for the browser tests (.ci/run does)")
    pytest.skip("needs Debian's chromium at /usr/bin/chromium", allow_module_level=True)


@pytest.fixture(scope="module")
def page(tmp_path_factory, tiny_run):
    from playwright.sync_api import sync_playwright

    root = tmp_path_factory.mktemp("judge")
    shutil.copytree(tiny_run, root / "runs" / "judged", ignore=shutil.ignore_patterns("checkpoints", "votes.jsonl"))
    _random_adapter(root / "runs" / "sft-run", ["q_proj", "v_proj"], 2, seed=1)  # an opponent for "against"
    (root / "data").mkdir()
    proc, url = start_app(root)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            pg = browser.new_page(viewport={"width": 1400, "height": 1000}, locale="en-US")
            pg.set_default_timeout(120_000)
            pg.goto(url)
            pg.get_by_role("tab", name="System").wait_for()
            yield pg
            browser.close()
    finally:
        proc.terminate()
        proc.wait(20)


def _reveal(page) -> str:
    return page.locator("#blind-reveal").inner_text().strip()


def test_blind_answers_are_labelled_and_a_new_pair_clears_the_reveal(page, request):
    try:
        page.get_by_role("tab", name="Chat", exact=True).click()
        page.locator("#chat-adapter input").click()
        page.get_by_role("option", name=re.compile("judged")).first.click()
        page.get_by_text("Is the tuned model better? Blind A/B votes").click()

        # The two answers are labelled, each label above its own answer.
        for side in ("a", "b"):
            title, answer = page.locator(f"#blind-{side}-title"), page.locator(f"#blind-{side}")
            assert title.inner_text().strip() == f"Answer {side.upper()}"
            t, a = title.bounding_box(), answer.bounding_box()
            assert t["y"] + t["height"] <= a["y"] + 1 and abs(t["x"] - a["x"]) < 40, (t, a)
        assert page.locator("#blind-a-title").bounding_box()["x"] < page.locator("#blind-b-title").bounding_box()["x"]

        status = page.locator("#blind-status")
        page.locator("#blind-prompt textarea").fill("What is your name?")
        new_blind_pair(page)
        page.locator("#blind-vote-A").click()
        page.locator("#blind-reveal").get_by_text("was the tuned model").wait_for()

        # Ask again: the reveal goes at once, and the new pair comes without it.
        new_blind_pair(page)
        assert page.locator("#blind-a").inner_text().strip() and _reveal(page) == ""

        # The loop over the run's rows: after a vote, the next row's pair comes; the reveal stays, worded as the last
        # pair's (a fast model deals the next pair before anyone could read a reveal cleared with it).
        page.locator("#blind-vote-B").click()
        page.locator("#blind-reveal").get_by_text("was the tuned model").wait_for()
        page.locator("#blind-rows").click()
        page.wait_for_function("() => document.querySelector('#blind-reveal').innerText.trim() === ''", timeout=5000)
        status.get_by_text("rows left").wait_for()
        page.locator("#blind-vote-tie").click()
        page.locator("#blind-rate").get_by_text(re.compile(r"over 3 votes")).wait_for()
        status.get_by_text("rows left").wait_for()  # the next row's pair
        page.locator("#blind-a").get_by_text(re.compile(r"\S")).first.wait_for()
        assert _reveal(page).startswith("Last pair:"), _reveal(page)

        # The token view: tokens drawn green where the tuned model likes them more, red where less (the legend's
        # words), never Gradio's score-mode lavender.
        page.locator("#chat-input textarea").fill("What is your name?")
        page.locator("#chat-send").click()
        page.locator("#chat-tuned-stats").get_by_text("tok/s").wait_for()
        page.get_by_role("button", name="Colour the last tuned answer by what the adapter changed").click()
        page.locator("#blind-tokens").get_by_text("much likelier").first.wait_for()  # the legend
        colours = page.eval_on_selector_all(
            "#blind-tokens .textfield span", "els => els.map(e => getComputedStyle(e).backgroundColor)"
        )
        rgb = [tuple(int(x) for x in re.findall(r"\d+", c)[:3]) for c in colours if not c.endswith(", 0)")]
        assert rgb and all(g > r or r > g + 40 for r, g, b in rgb), colours  # green or red, nothing else
        assert not any((r, g, b) == (128, 90, 213) for r, g, b in rgb), colours
    except Exception:
        page.screenshot(path=str(ARTIFACTS / f"FAILED-{request.node.name}.png"), full_page=True)
        raise


def test_vote_against_another_adapter_and_see_the_win_rate_per_pair(page, request):
    try:
        page.get_by_role("tab", name="Chat", exact=True).click()
        page.locator("#chat-adapter input").click()
        page.get_by_role("option", name=re.compile("judged")).first.click()
        if not page.locator("#blind-opponent").is_visible():
            page.get_by_text("Is the tuned model better? Blind A/B votes").click()

        # "against": the base model by default, then the Chat tab's adapters but the one it shows.
        against = page.locator("#blind-opponent input")
        assert against.input_value() == "the base model"
        against.click()
        page.get_by_role("option", name=re.compile("sft-run")).first.wait_for()
        offered = [t.strip() for t in page.get_by_role("option").all_inner_texts()]
        assert offered[0].endswith("the base model") and not any("judged" in t for t in offered), offered
        page.get_by_role("option", name=re.compile("sft-run")).first.click()
        assert against.input_value().startswith("sft-run")

        page.locator("#blind-prompt textarea").fill("What is your name?")
        new_blind_pair(page)
        page.locator("#blind-vote-A").click()
        page.locator("#blind-reveal").get_by_text(re.compile(r"A was .*B was")).wait_for()
        reveal = _reveal(page)
        sides = re.search(
            r"A was (judged|sft-run), B was (judged|sft-run)\. Your vote \(A is better\): (\S+) wins", reveal
        )
        assert sides and {sides[1], sides[2]} == {"judged", "sft-run"} and sides[3] == sides[1], reveal
        rate = page.locator("#blind-rate")
        rate.get_by_text(re.compile(r"judged vs sft-run: wins \d, ties 0, losses \d .*over 1 vote")).wait_for()
        page.screenshot(path=str(ARTIFACTS / "judge-against-an-adapter.png"), full_page=True)

        # Back to the base model: the vote says which side was tuned, as before, and both pairs are listed.
        against.click()
        page.get_by_role("option", name="the base model").click()
        new_blind_pair(page)
        page.locator("#blind-vote-tie").click()
        page.locator("#blind-reveal").get_by_text("was the tuned model").wait_for()
        rate.get_by_text(re.compile(r"judged vs the base model: wins")).wait_for()
        assert re.search(r"judged vs sft-run: wins \d, ties 0, losses \d", rate.inner_text()), rate.inner_text()
    except Exception:
        page.screenshot(path=str(ARTIFACTS / f"FAILED-{request.node.name}.png"), full_page=True)
        raise
