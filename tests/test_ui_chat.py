"""The Chat tab's endpoints: load, streamed side-by-side answers, stop, add to dataset, compare."""

from __future__ import annotations

import json

import pytest
from gradio_client.exceptions import AppError

from tests.api_helpers import GEN, send_args, sent


def test_load_send_add_compare(app_client, tiny_run, app_dirs):
    status = app_client.predict("auto", str(tiny_run), api_name="/chat_load")
    assert "Loaded base `qwen3-tiny`" in status and "tiny-chat" in status
    job = app_client.submit(*send_args("What is your name?", tiny_run), api_name="/chat_send")
    outputs = list(job)
    assert len(outputs) >= 2  # streamed: several updates
    out = sent(job.outputs()[-1])
    base, tuned, base_stats, tuned_stats = out["base"], out["tuned"], out["base_stats"], out["tuned_stats"]
    assert base[0]["role"] == "user" and base[-1]["role"] == "assistant"
    assert flat(base[-1]) != flat(tuned[-1]) and "tok/s" in base_stats and "tok/s" in tuned_stats
    msg = app_client.predict("chatlog", tuned, str(tiny_run), api_name="/chat_add_to_dataset")
    assert "chatlog" in msg and "tiny-chat" in msg  # the adapter that produced the answer
    row = json.loads((app_dirs / "data" / "chatlog.jsonl").read_text().splitlines()[-1])
    assert row["instruction"] == "What is your name?" and row["output"] == flat(tuned[-1])
    table = app_client.predict("auto", str(tiny_run), api_name="/chat_compare")
    assert table["headers"] == ["split", "prompt", "expected", "base", "tuned"] and len(table["data"]) >= 2


def flat(message) -> str:
    c = message["content"]
    if isinstance(c, list):
        return "".join(b.get("text", "") for b in c if isinstance(b, dict))
    return c


def test_bad_chat_input(app_client, tiny_run):
    app_client.predict("auto", str(tiny_run), api_name="/chat_load")
    with pytest.raises(AppError, match="Type a message first"):
        app_client.predict(*send_args("  ", tiny_run), api_name="/chat_send")
    with pytest.raises(AppError, match="outside the folders this app may read"):
        app_client.predict("qwen3-tiny", "/etc", api_name="/chat_load")
    (tiny_run.parent / "not-an-adapter").mkdir(exist_ok=True)
    with pytest.raises(AppError, match="holds no adapter"):
        app_client.predict("qwen3-tiny", str(tiny_run.parent / "not-an-adapter"), api_name="/chat_load")
    with pytest.raises(AppError, match="there is no exchange"):
        app_client.predict("x", [], None, api_name="/chat_add_to_dataset")
    assert app_client.predict(api_name="/chat_stop") == "Stopped."


def test_blind_pair_hides_the_sides_until_the_vote(app_client, tiny_run):
    """The API response of the blind mode carries A, B and an opaque id: nothing says which side is tuned."""
    import re

    app_client.predict("auto", str(tiny_run), api_name="/chat_load")
    seen_sides = set()
    for _ in range(6):
        a, b, ballot, status, *rest = app_client.predict(
            "What is your name?", "", *GEN, "auto", str(tiny_run), api_name="/chat_blind"
        )
        assert re.fullmatch(r"[0-9a-f]{32}", ballot) and "Vote below" in status and not rest
        reveal, rate, cleared = app_client.predict(ballot, "A", api_name="/chat_vote")
        side = re.search(r"\*\*([AB])\*\* was the tuned model", reveal).group(1)
        tuned_answer = a if side == "A" else b
        assert "tuned model wins" in reveal if side == "A" else "base model wins" in reveal
        assert cleared == "" and "win rate" in rate
        seen_sides.add(side)
        again = app_client.predict("What is your name?", "", *GEN, "auto", str(tiny_run), api_name="/chat_blind")
        assert tuned_answer in again[:2]  # greedy: the same two answers, in some order
        reveal2, *_ = app_client.predict(again[2], "tie", api_name="/chat_vote")
        assert "a tie" in reveal2
        seen_sides.add(re.search(r"\*\*([AB])\*\* was the tuned model", reveal2).group(1))
    assert seen_sides == {"A", "B"}  # the tuned side moves (12 deals: 1 chance in 2048 that it never does)
    with pytest.raises(AppError, match="already voted on or has expired"):
        app_client.predict(ballot, "B", api_name="/chat_vote")
    path, msg = app_client.predict(str(tiny_run), api_name="/chat_export_votes")
    from datasets import load_dataset

    pairs = load_dataset("json", data_files=path)["train"]
    assert pairs.column_names == ["prompt", "chosen", "rejected"] and len(pairs) >= 6 and "preference pairs" in msg


def test_heldout_loss_and_token_view_through_the_api(app_client, tiny_run):
    app_client.predict("auto", str(tiny_run), api_name="/chat_load")
    table = app_client.predict("auto", str(tiny_run), api_name="/chat_heldout")
    base, tuned = table["data"]
    assert base[0] == "base" and tuned[0] == "tuned" and tuned[1] < base[1]  # the run's own rows: tuned learned them
    job = app_client.submit(*send_args("What is your name?", tiny_run), api_name="/chat_send")
    tuned_hist = sent(job.result())["tuned"]
    tokens = app_client.predict(tuned_hist, "auto", str(tiny_run), api_name="/chat_token_diff")
    pairs = tokens["value"] if isinstance(tokens, dict) else tokens
    texts = [p["token"] if isinstance(p, dict) else p[0] for p in pairs]
    shades = [p["class_or_confidence"] if isinstance(p, dict) else p[1] for p in pairs]
    assert "".join(texts) == flat(tuned_hist[-1])
    assert set(shades) <= {None, "much likelier", "likelier", "less likely", "much less likely"} and any(shades)
    with pytest.raises(AppError, match="Chat first"):
        app_client.predict([], "auto", str(tiny_run), api_name="/chat_token_diff")


def test_a_chinese_session_gets_the_chat_and_the_votes_in_chinese(app_client, tiny_run):
    """Issue 14: a second visitor who switched to 简体中文 gets the load stages, the token stats of the streamed
    answers, errors, the blind-vote lines, the win rate and the table headers in Chinese; the first stays English."""
    import re

    from gradio_client import Client

    from lora_demo.i18n import msg, render

    cjk = re.compile(r"[\u4e00-\u9fff]")
    zh = Client(app_client.src, verbose=False)  # a session of its own
    zh.predict("zh", api_name="/set_language")
    status = zh.predict("auto", str(tiny_run), api_name="/chat_load")
    # (loaded by the other visitor already: the load answers with the status line, in this visitor's language)
    assert "已加载基座模型 `qwen3-tiny`" in status and "tiny-chat" in status, status
    out = sent(zh.submit(*send_args("What is your name?", tiny_run), api_name="/chat_send").result())
    base_stats, tuned_stats = out["base_stats"], out["tuned_stats"]
    assert "个词元" in base_stats and "tok/s" in base_stats and "首词元" in tuned_stats, base_stats
    with pytest.raises(AppError, match=re.escape(render(msg("Type a message first."), "zh"))):
        zh.predict(*send_args("  ", tiny_run), api_name="/chat_send")
    with pytest.raises(AppError, match="随机种子 必须是 0 到 4294967295 之间的数，收到的是 -1"):
        zh.predict(*send_args("Hi", tiny_run, gen=[*GEN[:5], -1, *GEN[6:]]), api_name="/chat_send")
    a, b, ballot, line = zh.predict("What is your name?", "", *GEN, "auto", str(tiny_run), api_name="/chat_blind")
    assert line == "哪个回答更好？请在下方投票。", line
    reveal, rate, _ = zh.predict(ballot, "tie", api_name="/chat_vote")
    assert re.fullmatch(
        r"上一对：\*\*[AB]\*\* 是微调模型，\*\*[AB]\*\* 是基座模型。你的投票（平局）：平局。", reveal
    ), reveal
    assert rate.startswith("微调模型胜") and "胜率" in rate, rate
    table = zh.predict("auto", str(tiny_run), api_name="/chat_heldout")
    assert table["headers"][0] == "模型" and table["headers"][2] == "困惑度" and table["data"][0][0] == "基座模型"
    assert zh.predict(api_name="/chat_stop") == "已停止。"
    status = app_client.predict("auto", str(tiny_run), api_name="/chat_load")  # the other visitor: English
    assert "Loaded base `qwen3-tiny`" in status and not cjk.search(status), status  # (loaded already: its status)
