"""A shared, logged-in app the way its visitors meet it (issue 27), in Debian's Chromium against `python app.py --auth`.

- A visitor without the password sees the login form and nothing that names the user's work.
- A run and a dataset made after the app started are offered by the lists of a freshly loaded page (picked from
  the lists, not typed), and two visitors at once each get them.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.browser_helpers import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, start_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError("CI must install Debian's chromium for the browser tests (.ci/run does)")
    pytest.skip("needs Debian's chromium at /usr/bin/chromium", allow_module_level=True)


@pytest.fixture(scope="module")
def shared_app(tmp_path_factory):
    root = tmp_path_factory.mktemp("shared")
    proc, url = start_app(root, "--auth", "ana:s3cret")
    yield url, root
    proc.terminate()
    proc.wait(20)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _visitor(browser, url: str, login: bool = True):
    page = browser.new_context(viewport={"width": 1440, "height": 1000}, locale="en-US").new_page()
    page.set_default_timeout(60_000)
    page.goto(url)
    if login:
        page.get_by_label("username").fill("ana")
        page.get_by_label("password").fill("s3cret")
        page.get_by_role("button", name="Login").click()
        page.get_by_role("tab", name="System").wait_for()
    return page


def _options(page, elem_id: str) -> list[str]:
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option").first.wait_for()
    names = [t.replace("✓", "").strip() for t in page.get_by_role("option").all_inner_texts()]  # ✓: the selected one
    page.keyboard.press("Escape")
    return names


def test_late_runs_and_datasets_are_in_a_fresh_page_s_lists_and_nothing_before_login(shared_app, browser, tiny_run):
    url, root = shared_app
    (root / "data").mkdir(exist_ok=True)
    run = root / "runs" / "made-after-start"
    run.mkdir(parents=True)
    for f in tiny_run.iterdir():
        if f.is_file():
            shutil.copy2(f, run / f.name)
    (root / "data" / "rows-after-start.jsonl").write_text(
        json.dumps({"instruction": "late q", "input": "", "output": "late a"}) + "\n"
    )

    stranger = _visitor(browser, url, login=False)
    stranger.get_by_role("button", name="Login").wait_for()
    html = stranger.content()
    assert "made-after-start" not in html and "rows-after-start" not in html and "/train_start" not in html

    a, b = _visitor(browser, url), _visitor(browser, url)  # two colleagues at once
    for page in (a, b):
        page.get_by_role("tab", name="Dataset", exact=True).click()
        assert "rows-after-start" in _options(page, "dataset-saved"), "the saved-datasets list misses a late dataset"
        page.get_by_role("tab", name="Train", exact=True).click()
        assert "made-after-start" in _options(page, "train-view")
    # A picks the late dataset from the list and loads it; B's table is not touched by that.
    a.get_by_role("tab", name="Dataset", exact=True).click()
    saved = a.locator("#dataset-saved input")
    saved.click()
    a.get_by_role("option", name="rows-after-start").click()
    a.get_by_role("button", name="Load", exact=True).click()
    a.locator("#dataset-save-status").get_by_text("rows-after-start").wait_for()
    assert "late q" in a.locator("#dataset-table").text_content()
    a.screenshot(path=str(ARTIFACTS / "sharing-late-dataset.png"), full_page=False)
    b.get_by_role("tab", name="Dataset", exact=True).click()
    assert "late q" not in b.locator("#dataset-table").text_content()


def _chat_settings(page, tokens: int = 10) -> None:
    page.get_by_text("Prompt and generation settings").click()
    page.get_by_label("greedy (deterministic)").check()
    page.get_by_role("spinbutton", name="max new tokens").fill(str(tokens))
    page.get_by_role("spinbutton", name="max new tokens").press("Enter")


def _pick(page, elem_id: str, option_regex: str) -> None:
    import re

    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=re.compile(option_regex)).first.click()
    page.keyboard.press("Escape")


def _send(page, text: str) -> None:
    page.locator("#chat-input textarea").fill(text)
    page.get_by_role("button", name="Send", exact=True).click()
    page.locator("#chat-tuned-stats").get_by_text("tok/s").wait_for(timeout=180_000)


def test_two_visitors_chat_with_their_own_adapters_and_one_compares_three_at_once(shared_app, browser, tiny_run):
    """Issue 26 in the browser: A picks run 1 from the Chat list, B picks another adapter, neither presses Load;
    each Send answers with the adapter its own page shows (the status line shows the attach stage), and A's
    three-way compare (base, run 1 and B's adapter in one batch) puts B's answer in the extra pane."""
    from tests.browser_helpers import answer
    from tests.test_chat_adapters import _random_adapter

    url, root = shared_app
    if not (root / "runs" / "made-after-start").exists():
        pytest.skip("needs the run of the test above")
    _random_adapter(root / "runs" / "qv-random", ["q_proj", "v_proj"], 2, seed=1)
    a, b = _visitor(browser, url), _visitor(browser, url)
    for page, run in ((a, "made-after-start"), (b, "qv-random")):  # (a folder with no run status: its name alone)
        page.get_by_role("tab", name="Chat", exact=True).click()
        _pick(page, "chat-adapter", "^" + run + "( |$)")
        _chat_settings(page)
    _send(a, "What is your name?")
    _send(b, "What is your name?")
    a_tuned, b_tuned = answer(a, "chat-tuned"), answer(b, "chat-tuned")
    assert a_tuned and b_tuned and a_tuned != b_tuned
    assert "qv-random" in b.locator("#chat-status").inner_text()  # B's page says which adapter B's Send used
    a.locator("#chat-clear").click()
    a.get_by_text("Compare with more adapters (one batch)").click()
    _pick(a, "chat-compare", "^qv-random$")
    _send(a, "What is your name?")
    a.locator("#chat-extra0-stats").get_by_text("tok/s").wait_for(timeout=180_000)

    # A batch of three rows instead of two may flip a near-tie late in a greedy answer of these barely trained
    # adapters (seen once: "LoRA Lab" vs "LoRA Lab."), so each pane must continue the answer it gave alone (one is a
    # prefix of the other) and not be the other adapter's.
    def continues(got: str, alone: str, other: str) -> bool:
        import os.path

        short, long = sorted((got, alone), key=len)
        if short and long.startswith(short) and got != other:
            return True
        # An early flip (seen once: '夕阳 &___' vs '夕阳 &夕阳 & …'): the pane still follows its own adapter's answer
        # further than the other adapter's.
        return len(os.path.commonprefix([got, alone])) > len(os.path.commonprefix([got, other]))

    three_a, three_b = answer(a, "chat-tuned"), answer(a, "chat-extra0")
    assert continues(three_a, a_tuned, b_tuned), (three_a, a_tuned)  # B's adapter attached meanwhile: A's unchanged
    assert continues(three_b, b_tuned, a_tuned), (three_b, b_tuned)  # the compare pane: B's adapter, in A's batch
    a.screenshot(path=str(ARTIFACTS / "chat-three-way.png"), full_page=True)
