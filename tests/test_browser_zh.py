"""简体中文 in the browser (issue 14): `python app.py` with no --lang follows the browser's language; the switch
changes the page without a reload; each browser session keeps its own language; errors come in it.

Two visitors of one app, as two Chromium contexts: one with a Chinese browser (zh-CN), one with an English one.
The expected Chinese is read from the tables (render(...)), so a wording change there does not break this test,
while a missing or unused translation does.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from lora_demo.i18n import msg, render
from tests.browser_helpers import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, start_app

pytestmark = [pytest.mark.browser]
if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError("CI must install Debian's chromium for the browser tests (.ci/run does)")
    pytest.skip("needs Debian's chromium at /usr/bin/chromium", allow_module_level=True)

CJK = re.compile(r"[\u4e00-\u9fff]")
TABS = ("Start here", "Low-rank lab", "Dataset", "Train", "Chat", "System")


def zh(text: str, **params) -> str:
    out = render(msg(text, **params), "zh")
    assert CJK.search(out), f"no Chinese for {text!r} in the tables"
    return out


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    proc, url = start_app(tmp_path_factory.mktemp("zh"))
    yield url
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


def open_page(browser, url: str, locale: str):
    page = browser.new_context(locale=locale, viewport={"width": 1400, "height": 1000}).new_page()
    page.set_default_timeout(60_000)
    page.goto(url)
    return page


@pytest.fixture(scope="module")
def zh_page(browser, app_url):
    return open_page(browser, app_url, "zh-CN")


@pytest.fixture(scope="module")
def en_page(browser, app_url):
    return open_page(browser, app_url, "en-US")


def send_empty_message(page, chat_tab: str, send: str, expected: str) -> str:
    """Chat tab → Send with nothing typed → the status line's error (the handler refuses an empty message). Waits
    for `expected` in it: an earlier error may still be shown there."""
    page.get_by_role("tab", name=chat_tab, exact=True).click()
    page.get_by_role("button", name=send, exact=True).click()
    box = page.locator("#chat-status .lab-error", has_text=expected)
    try:
        box.wait_for(timeout=20_000)
    except Exception:  # noqa: BLE001 - say what is shown instead
        return page.locator("#chat-status").inner_text()
    return box.inner_text()


def test_1_a_chinese_browser_gets_the_page_in_chinese(zh_page):
    for name in TABS:
        zh_page.get_by_role("tab", name=zh(name), exact=True).wait_for()
    zh_page.get_by_role("tab", name=zh("Train"), exact=True).click()
    zh_page.get_by_role("button", name=zh("Start training"), exact=True).wait_for()
    assert zh_page.locator("#lang-switch input[value='zh']").is_checked()


def test_2_errors_come_in_chinese(zh_page):
    shown = send_empty_message(zh_page, zh("Chat"), zh("Send"), zh("Type a message first."))
    assert zh("Type a message first.") in shown, shown


def test_3_another_visitor_keeps_english(en_page):
    for name in TABS:
        en_page.get_by_role("tab", name=name, exact=True).wait_for()
    shown = send_empty_message(en_page, "Chat", "Send", "Type a message first.")
    assert "Type a message first." in shown and not CJK.search(shown), shown


def test_4_the_switch_changes_the_page_without_a_reload(zh_page, en_page):
    zh_page.evaluate("window.__same_page = 1")
    zh_page.locator("#lang-switch").get_by_text("English", exact=True).click()
    zh_page.get_by_role("tab", name="Low-rank lab", exact=True).wait_for()
    zh_page.get_by_role("button", name="Send", exact=True).wait_for()
    assert zh_page.evaluate("window.__same_page") == 1, "the page was reloaded"
    # The error test_2 left in the Chat status line is written again in English (only while it is still shown).
    zh_page.locator("#chat-status .lab-error", has_text="Type a message first.").wait_for(timeout=20_000)
    shown = send_empty_message(zh_page, "Chat", "Send", "Type a message first.")
    assert "Type a message first." in shown and not CJK.search(shown), shown
    zh_page.locator("#lang-switch").get_by_text("简体中文", exact=True).click()
    zh_page.get_by_role("tab", name=zh("Low-rank lab"), exact=True).wait_for()
    assert zh_page.evaluate("window.__same_page") == 1
    shown = send_empty_message(zh_page, zh("Chat"), zh("Send"), zh("Type a message first."))
    assert zh("Type a message first.") in shown, shown
    # The other visitor's page and messages stayed English throughout.
    en_page.get_by_role("tab", name="Low-rank lab", exact=True).wait_for()
    en_page.get_by_role("tab", name="Dataset", exact=True).click()  # leave Chat, so Send's error is shown anew
    shown = send_empty_message(en_page, "Chat", "Send", "Type a message first.")
    assert "Type a message first." in shown and not CJK.search(shown), shown


def test_5_lang_flag_serves_chinese_in_the_config(tmp_path):
    """`python app.py --lang zh`: the served /config already names the tabs in Chinese (no page script needed)."""
    import json
    import urllib.request

    proc, url = start_app(tmp_path, "--lang", "zh")
    try:
        config = json.loads(urllib.request.urlopen(f"{url}/config", timeout=30).read())
    finally:
        proc.terminate()
        proc.wait(20)
    tabs = [c["props"].get("label") for c in config["components"] if c["type"] == "tabitem"]
    assert tabs == [zh(name) for name in TABS], tabs


def test_6_a_dataset_checked_in_chinese_is_reported_again_in_english(zh_page):
    """The Dataset tab in Chinese: load the example, validate; the report is Chinese, and the switch re-renders the
    report already on the page in English (no second validation)."""
    page = zh_page
    page.get_by_role("tab", name=zh("Dataset"), exact=True).click()
    page.get_by_role("button", name=zh("Load example"), exact=True).click()
    page.locator("#dataset-status").get_by_text(re.compile(r"persona|seed")).wait_for()
    assert CJK.search(page.locator("#dataset-status").inner_text())
    page.get_by_role("button", name=zh("Validate"), exact=True).click()
    ready = render(
        msg(
            "**{rows} rows: {errors} error(s), {warnings} warning(s).** Ready to train.",
            rows=987654,
            errors=0,
            warnings=0,
        ),
        "zh",
    ).replace("**", "")
    counts = ready.split("987654", 1)[1].split("。")[0].strip("：: ")  # "0 个错误，0 个警告": whatever the row count
    page.locator("#validation-report").get_by_text(counts).wait_for()
    page.locator("#lang-switch").get_by_text("English", exact=True).click()
    page.locator("#validation-report").get_by_text("0 error(s)").wait_for()
    assert not CJK.search(page.locator("#validation-report").inner_text())
    page.locator("#lang-switch").get_by_text("简体中文", exact=True).click()
    page.get_by_role("tab", name=zh("Dataset"), exact=True).wait_for()


def test_7_train_and_chat_in_chinese(zh_page):
    """The demo's core in Chinese: Start training → the progress box names the stage in Chinese → 💬 Chat with this
    run → the Chat tab loads it (its status in Chinese) → both sides answer."""
    from lora_demo.ui.views.train import stage_label

    page = zh_page
    page.get_by_role("tab", name=zh("Train"), exact=True).click()
    page.get_by_role("button", name=zh("Start training"), exact=True).click()
    message = page.locator("#train-message")
    message.get_by_text(re.compile(r"\S")).first.wait_for()
    message.get_by_text(CJK).first.wait_for(timeout=30_000)  # "已开始 …" (Gradio's own "processing" shows first)
    done = page.locator("#train-progress[data-stage='completed']")
    done.wait_for(timeout=300_000)
    run = done.get_attribute("data-run")
    assert stage_label("completed", "zh") in page.locator("#train-progress-box").inner_text()
    page.locator("#train-chat").click()
    page.get_by_role("tab", name=zh("Chat"), exact=True, selected=True).wait_for()
    # The loaded line, which the load's last stage ("Ready in …") and the status line both end with: the list's
    # refresh after the tab opens may recompute the status line after the load has finished (a truthful line, but
    # without "Ready in"), as the English journeys expect too. Markdown drops the backticks.
    loaded = zh(
        "Loaded base `{model}` with {adapter}; prompt format: {fmt}; chat runs in {precision}.",
        model="M",
        adapter=msg("adapter `{path}`", path="P"),
        fmt="f",
        precision="p",
    ).replace("`", "")
    head, rest = loaded.split("M", 1)
    middle = rest.split("P", 1)[0]
    status = page.locator("#chat-status")
    try:
        status.get_by_text(re.compile(re.escape(head) + ".*" + re.escape(middle) + ".*" + re.escape(run))).wait_for(
            timeout=120_000
        )
    except Exception as e:  # noqa: BLE001 - say what the status line shows instead
        raise AssertionError(f"the Chat tab's status line never said the run is loaded: {status.inner_text()!r}") from e
    # As the English journey: greedy and 12 tokens (sampling may end the tuned side at once, leaving no stats).
    page.get_by_text(zh("Prompt and generation settings")).click()
    page.get_by_label(zh("greedy (deterministic)")).check()
    page.get_by_role("spinbutton", name=zh("max new tokens")).fill("12")
    page.get_by_role("spinbutton", name=zh("max new tokens")).press("Enter")
    page.locator("#chat-input textarea").fill("What is your name?")
    page.get_by_role("button", name=zh("Send"), exact=True).click()
    try:
        page.locator("#chat-tuned-stats").get_by_text("tok/s").wait_for(timeout=120_000)
        page.locator("#chat-base-stats").get_by_text("tok/s").wait_for(timeout=120_000)
    except Exception as exc:  # noqa: BLE001 - say what the page shows instead
        shown = [page.locator(f"#{e}").inner_text() for e in ("chat-status", "chat-base-stats", "chat-tuned-stats")]
        toasts = page.locator(".toast-body").all_inner_texts()
        raise AssertionError(f"no answer: {shown}, toasts {toasts}") from exc
    assert CJK.search(page.locator("#chat-tuned-stats").inner_text())  # "… 个词元 · … tok/s · 首个词元 …"
    assert page.locator(".toast-body.error").count() == 0
