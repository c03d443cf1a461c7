"""Judge: blind A/B ballots, votes saved per run, the win rate and its Wilson interval, DPO pairs, held-out loss and
the per-token diff on the session's tiny run, and the `votes` command."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import threading
import uuid

import pytest

from lora_demo.errors import InputError
from lora_demo.io import read_jsonl
from lora_demo.judge import (
    Ballot,
    Ballots,
    Vote,
    VoteStore,
    dpo_pairs,
    export_dpo,
    heldout_loss,
    token_diff,
    vote_rows,
    win_rate,
    win_rate_markdown,
    win_rates_by_opponent,
)

BASE, TUNED = "the base answer", "the tuned answer"


def _deal(ballots: Ballots, run_dir, prompt="What is your name?", base=BASE, tuned=TUNED, **kw) -> Ballot:
    return ballots.deal(str(run_dir), "qwen3-tiny", prompt, base, tuned, {"temperature": 0.7}, 7, **kw)


def _vote(verdict: str, prompt="Q", input="", tuned_side="A") -> Vote:
    """A saved-looking vote with the given verdict (tuned answer 'T:<prompt>', base answer 'B:<prompt>')."""
    other = "B" if tuned_side == "A" else "A"
    choice = {"tuned": tuned_side, "base": other}.get(verdict, verdict)
    a, b = (f"T:{prompt}", f"B:{prompt}") if tuned_side == "A" else (f"B:{prompt}", f"T:{prompt}")
    return Vote(
        time=0.0,
        adapter="run",
        base_model="m",
        prompt=prompt,
        input=input,
        system="",
        answer_a=a,
        answer_b=b,
        tuned_side=tuned_side,
        choice=choice,
        verdict=verdict,
        settings={},
        seed=0,
    )


# --- ballots: blind, used once, saved ---


def test_the_shuffle_is_blind(tmp_path):
    ballots = Ballots(random.Random(0))
    dealt = [_deal(ballots, tmp_path) for _ in range(200)]
    tuned_as_a = sum(b.a == TUNED for b in dealt)
    assert 60 < tuned_as_a < 140  # both placements occur, about equally often
    for b in dealt:
        assert dataclasses.asdict(b).keys() == {"id", "a", "b"} and vars(b).keys() == {"id", "a", "b"}
        assert {b.a, b.b} == {BASE, TUNED}
        assert uuid.UUID(hex=b.id).version == 4 and b.id == uuid.UUID(hex=b.id).hex
    assert len({b.id for b in dealt}) == 200
    # The id is not drawn from the side's rng: the same seed deals the same sides under unrelated ids.
    replay = Ballots(random.Random(0))
    again = [_deal(replay, tmp_path) for _ in range(20)]
    assert [b.a == TUNED for b in again] == [b.a == TUNED for b in dealt[:20]]
    assert not {b.id for b in again} & {b.id for b in dealt}


def test_cast_maps_a_and_b_to_tuned_and_base_for_both_placements(tmp_path):
    ballots = Ballots(random.Random(1))
    checked = set()
    for i in range(40):
        b = _deal(ballots, tmp_path)
        tuned_side, choice = ("A" if b.a == TUNED else "B"), "AB"[i % 2]
        vote = ballots.cast(b.id, choice)
        assert vote.tuned_side == tuned_side and vote.choice == choice
        assert vote.verdict == ("tuned" if choice == tuned_side else "base")
        assert vote.tuned_answer == TUNED and vote.base_answer == BASE
        checked.add((tuned_side, choice))
    assert checked == {("A", "A"), ("A", "B"), ("B", "A"), ("B", "B")}
    for choice in ("tie", "both_bad"):
        assert ballots.cast(_deal(ballots, tmp_path).id, choice).verdict == choice


def test_cast_once_bad_choice_and_unknown_id(tmp_path):
    ballots = Ballots(random.Random(2))
    b = _deal(ballots, tmp_path)
    for bad in ("C", "a", "", None, 1, "tie "):
        with pytest.raises(InputError, match="A, B, tie, both_bad"):
            ballots.cast(b.id, bad)
    ballots.cast(b.id, "A")  # a bad choice did not use the ballot up
    with pytest.raises(InputError, match="already voted on or has expired"):
        ballots.cast(b.id, "B")
    for unknown in ("nope", uuid.uuid4().hex, None, 3):
        with pytest.raises(InputError, match="already voted on or has expired"):
            ballots.cast(unknown, "A")
    with pytest.raises(InputError, match="Load an adapter"):
        ballots.deal("", "m", "p", "x", "y", {}, 0)


def test_one_cast_wins_a_race(tmp_path):
    ballots = Ballots(random.Random(3))
    b = _deal(ballots, tmp_path)
    results: list[str] = []

    def vote():
        try:
            ballots.cast(b.id, "A")
            results.append("ok")
        except InputError:
            results.append("refused")

    threads = [threading.Thread(target=vote) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["ok"] + ["refused"] * 7
    assert len(read_jsonl(tmp_path / "votes.jsonl")) == 1


def test_pending_ballots_are_bounded(tmp_path):
    ballots = Ballots(random.Random(4), max_pending=3)
    dealt = [_deal(ballots, tmp_path) for _ in range(5)]
    assert len(ballots) == 3
    with pytest.raises(InputError, match="expired"):
        ballots.cast(dealt[0].id, "A")
    ballots.cast(dealt[-1].id, "A")
    assert Ballots().max_pending == 1000


def test_votes_are_appended_and_survive_a_restart(tmp_path):
    ballots = Ballots(random.Random(5))
    cast = [
        ballots.cast(_deal(ballots, tmp_path, prompt=f"q{i}", input="ctx", system="be brief").id, c)
        for i, c in enumerate(["A", "B", "tie", "both_bad"])
    ]
    lines = (tmp_path / "votes.jsonl").read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[0])["prompt"] == "q0"
    with open(tmp_path / "votes.jsonl", "a") as f:
        f.write('{"time": 1, "adapter": "torn')  # a writer killed mid-line
    restarted = VoteStore(tmp_path).votes()
    assert restarted == cast
    assert restarted[0].input == "ctx" and restarted[0].system == "be brief" and restarted[0].seed == 7
    assert restarted[0].settings == {"temperature": 0.7} and restarted[0].adapter == str(tmp_path)


def test_a_failed_save_leaves_the_ballot_to_try_again(tmp_path):
    ballots = Ballots(random.Random(6))
    b = _deal(ballots, tmp_path / "deleted-run")
    with pytest.raises(InputError, match="Could not save the vote"):
        ballots.cast(b.id, "A")
    (tmp_path / "deleted-run").mkdir()
    assert ballots.cast(b.id, "A").choice == "A"


# --- win rate ---


def test_win_rate_against_a_hand_count():
    votes = [_vote("tuned")] * 6 + [_vote("tie")] * 2 + [_vote("base")] * 2 + [_vote("both_bad")]
    stats = win_rate(votes)
    assert {k: stats[k] for k in ("votes", "wins", "ties", "losses", "both_bad", "decided")} == {
        "votes": 11,
        "wins": 6,
        "ties": 2,
        "losses": 2,
        "both_bad": 1,
        "decided": 10,
    }
    assert stats["win_rate"] == pytest.approx(0.7, abs=1e-12)
    # Wilson score interval, p = (6 + 2/2) / 10, n = 10, z = the 97.5% normal quantile:
    p, n, z = 0.7, 10, 1.959963984540054
    center = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    assert stats["ci_low"] == pytest.approx(center - half, abs=1e-9)
    assert stats["ci_high"] == pytest.approx(center + half, abs=1e-9)
    assert round(stats["ci_low"], 4) == 0.3968 and round(stats["ci_high"], 4) == 0.8922  # the textbook 7/10


def test_win_rate_empty_and_all_both_bad():
    empty = win_rate([])
    assert empty == {
        "votes": 0,
        "wins": 0,
        "ties": 0,
        "losses": 0,
        "both_bad": 0,
        "decided": 0,
        "win_rate": None,
        "ci_low": None,
        "ci_high": None,
    }
    assert "No votes yet" in win_rate_markdown(empty)
    bad = win_rate([_vote("both_bad")] * 2)
    assert bad["votes"] == 2 and bad["decided"] == 0 and bad["win_rate"] is None and bad["ci_low"] is None
    assert "no win rate" in win_rate_markdown(bad)


def test_win_rate_markdown():
    votes = [_vote("tuned")] * 3 + [_vote("tie"), _vote("base")]
    text = win_rate_markdown(win_rate(votes))
    assert text == "Tuned wins 3, ties 1, loses 1 (both bad 0): win rate 70% (95% CI 30–93%) over 5 votes."
    assert win_rate_markdown(win_rate([_vote("tuned")])).endswith("over 1 vote.")
    assert win_rate(votes * 100)["ci_high"] - win_rate(votes * 100)["ci_low"] < 0.1  # more votes, narrower


# --- preference pairs ---


def test_export_dpo_loads_as_a_dataset(tmp_path):
    from datasets import load_dataset

    votes = [
        _vote("tuned", "p1", tuned_side="A"),
        _vote("tuned", "p2", tuned_side="B"),
        _vote("base", "p3", tuned_side="A"),
        _vote("base", "p4", "ctx", tuned_side="B"),
        _vote("tie", "p5"),
        _vote("both_bad", "p6"),
    ]
    out = tmp_path / "pairs.jsonl"
    assert export_dpo(votes, out) == 4
    ds = load_dataset("json", data_files=str(out), cache_dir=str(tmp_path / "cache"))["train"]
    assert ds.column_names == ["prompt", "chosen", "rejected"]
    assert ds.to_list() == [
        {"prompt": "p1", "chosen": "T:p1", "rejected": "B:p1"},
        {"prompt": "p2", "chosen": "T:p2", "rejected": "B:p2"},
        {"prompt": "p3", "chosen": "B:p3", "rejected": "T:p3"},
        {"prompt": "p4\n\nctx", "chosen": "B:p4", "rejected": "T:p4"},
    ]
    assert dpo_pairs([_vote("tie"), _vote("both_bad")]) == []
    assert export_dpo([], tmp_path / "none.jsonl") == 0 and (tmp_path / "none.jsonl").read_text() == ""


# --- the run's rows ---


def test_vote_rows(tiny_run, tmp_path):
    val = read_jsonl(tiny_run / "data" / "val.jsonl")
    rows = vote_rows(tiny_run)
    assert (
        val
        and rows
        == [{"instruction": r["instruction"], "input": r.get("input") or "", "output": r["output"]} for r in val][:20]
    )
    assert len(vote_rows(tiny_run, limit=1)) == 1
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text('{"instruction": "hi", "output": "yo"}\n')
    (tmp_path / "data" / "val.jsonl").write_text("")
    assert vote_rows(tmp_path) == [{"instruction": "hi", "input": "", "output": "yo"}]
    with pytest.raises(InputError, match="no data/ folder"):
        vote_rows(tmp_path / "elsewhere")


# --- loss and token diff on the trained tiny run ---


@pytest.fixture(scope="module")
def engine(tiny_run):
    from lora_demo.chat.engine import ChatEngine

    e = ChatEngine()
    list(e.load("auto", str(tiny_run)))
    assert e.adapter_dir and e.template["template"] == "chat"
    return e


def test_heldout_loss_tuned_learns(engine, tiny_run):
    import torch

    from lora_demo.data.templates import build_example

    rows = read_jsonl(tiny_run / "data" / "train.jsonl")
    res = heldout_loss(engine, rows, max_rows=8)
    assert res["rows"] == 8 and res["tokens"] > 8
    assert res["tuned"]["loss"] < res["base"]["loss"] - 0.5, res
    for side in ("base", "tuned"):
        assert res[side]["ppl"] == pytest.approx(math.exp(res[side]["loss"]), rel=1e-12)
    # One row against transformers' own loss (labels shifted inside the model, mean over unmasked tokens).
    ex = build_example(rows[0], engine.tokenizer, "chat", 128, True, False)
    ids, labels = torch.tensor([ex.input_ids]), torch.tensor([ex.labels])
    with torch.no_grad():
        tuned = engine.model(input_ids=ids, labels=labels).loss.item()
        with engine.model.disable_adapter():
            base = engine.model(input_ids=ids, labels=labels).loss.item()
    one = heldout_loss(engine, rows[:1])
    assert one["tuned"]["loss"] == pytest.approx(tuned, abs=1e-4)
    assert one["base"]["loss"] == pytest.approx(base, abs=1e-4)
    assert not engine.lock.locked()


def test_heldout_loss_needs_rows_and_an_adapter(engine):
    from lora_demo.chat.engine import ChatEngine

    with pytest.raises(InputError, match="No row to score"):
        heldout_loss(engine, [{"instruction": ""}, "junk"])
    with pytest.raises(InputError, match="Load a model"):
        heldout_loss(ChatEngine(), [{"instruction": "hi", "output": "yo"}])
    assert not engine.lock.locked()


def test_token_diff_of_the_tuned_answer(engine, tiny_run):
    import torch

    from lora_demo.chat.engine import GenSettings

    row = read_jsonl(tiny_run / "data" / "train.jsonl")[0]
    answer = engine.answer_pair(row, GenSettings(max_new_tokens=12, greedy=True, repetition_penalty=1.0))["tuned"]
    diff = token_diff(engine, row, answer)
    answer_ids = engine.tokenizer(answer, add_special_tokens=False)["input_ids"]
    assert len(diff) == len(answer_ids) > 0
    assert "".join(piece for piece, _ in diff) == answer
    deltas = [d for _, d in diff]
    assert max(abs(d) for d in deltas) > 1e-2 and sum(deltas) > 0  # the tuning made its own answer likelier
    # The same deltas from the chat's mixed batch (row 0 with LoRA bypassed, row 1 with the adapter).
    ids = engine.prompt_ids(row) + answer_ids
    n = len(ids) - len(answer_ids)
    with torch.no_grad():
        logits = engine.model(
            input_ids=torch.tensor([ids, ids]), adapter_names=["__base__", engine.adapter_name()]
        ).logits
    logp = torch.log_softmax(logits[:, n - 1 : -1].float(), -1).gather(2, torch.tensor([answer_ids] * 2)[..., None])
    assert deltas == pytest.approx((logp[1, :, 0] - logp[0, :, 0]).tolist(), abs=1e-4)


def test_token_diff_pieces_join_back_for_any_text(engine):
    for answer in ("我叫小助手，很高兴认识你！🙂", "Plain words, then\nnew lines  and  spaces.", ""):
        diff = token_diff(engine, "What is your name?", answer)
        assert "".join(piece for piece, _ in diff) == answer
        assert len(diff) == len(engine.tokenizer(answer, add_special_tokens=False)["input_ids"])
    assert not engine.lock.locked()


def _hue(color: str) -> str:
    r, g = int(color[1:3], 16), int(color[3:5], 16)
    return "green" if g > r else "red"


def test_the_token_view_colours_follow_the_sign_and_size_of_the_change(monkeypatch):
    """Issue 28: the legend says green = likelier, red = less likely, but every token rendered lavender (Gradio's
    score mode draws negatives purple, positives red). Each token now gets a category by the sign and size of its
    log-probability change, with a colour that matches the legend."""
    from lora_demo.ui.judge_section import JudgeActions
    from lora_demo.ui.views.judge import TOKEN_SHADES, token_shades

    diff = [("Much", 3.1), (" more", 0.6), (" same", 0.05), (" same", -0.1), (" less", -0.7), (" never", -4.0)]
    assert token_shades(diff) == [
        ("Much", "much likelier"),
        (" more", "likelier"),
        (" same", None),
        (" same", None),
        (" less", "less likely"),
        (" never", "much less likely"),
    ]
    assert {k: _hue(c) for k, c in TOKEN_SHADES.items()} == {
        "much likelier": "green",
        "likelier": "green",
        "less likely": "red",
        "much less likely": "red",
    }
    # darker for a bigger change: the strong shades are darker than the mild ones
    lum = {k: sum(int(c[i : i + 2], 16) for i in (1, 3, 5)) for k, c in TOKEN_SHADES.items()}
    assert lum["much likelier"] < lum["likelier"] and lum["much less likely"] < lum["less likely"]

    class Lab:  # the LabEngine's token_diff, as the Chat tab's handler calls it
        def token_diff(self, prompt, answer, model, adapter):
            return diff

    hist = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "".join(t for t, _ in diff)}]
    shown = JudgeActions(Lab()).token_view(hist, "auto", "run")
    value = [(v["token"], v["class_or_confidence"]) for v in shown.value]
    assert value == token_shades(diff)
    colors = shown.color_map
    assert all(type(k) is str for k in colors)  # plain keys: the page's config is JSON
    assert all(c is None or c in colors for _, c in value)  # every coloured token has its colour in the legend
    assert _hue(colors["much likelier"]) == "green" and _hue(colors["much less likely"]) == "red"
    # in Chinese the legend's names change and the colours follow them
    from lora_demo.ui import common

    monkeypatch.setattr(common.SESSION_LANG, "default", "zh")
    zh = JudgeActions(Lab()).token_view(hist, "auto", "run")
    assert _hue(zh.color_map["可能性大增"]) == "green" and _hue(zh.color_map["可能性大减"]) == "red"
    assert [v["class_or_confidence"] for v in zh.value][0] == "可能性大增"


# --- the command ---


def test_votes_command(tmp_path, capsys):
    from lora_demo.cli import main

    votes = [_vote("tuned")] * 3 + [_vote("tie"), _vote("base"), _vote("both_bad")]
    for v in votes:
        VoteStore(tmp_path).add(v)
    assert main(["votes", str(tmp_path)]) == 0
    assert "win rate 70%" in capsys.readouterr().out
    out_file = tmp_path / "pairs.jsonl"
    assert main(["votes", str(tmp_path), "--json", "--export", str(out_file)]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line == win_rate(votes) | {
        "by_opponent": json.loads(json.dumps(win_rates_by_opponent(votes))),
        "pairs_exported": 4,
    }  # fmt: skip (one pair here: against the base model)
    assert len(read_jsonl(out_file)) == 4
    assert main(["votes", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "has no votes.jsonl" in err


# --- 简体中文 (issue 14) ---


def test_win_rate_and_vote_errors_in_chinese(tmp_path):
    from lora_demo.i18n import render

    votes = [_vote("tuned")] * 3 + [_vote("tie"), _vote("base")]
    assert win_rate_markdown(win_rate(votes), "zh") == (
        "微调模型胜 3、平 1、负 1（都不好 0）：胜率 70%（95% 置信区间 30–93%），共 5 票。"
    )
    assert win_rate_markdown(win_rate([_vote("both_bad")]), "zh").endswith(
        "尚无胜率（每一票都认为两个回答都不好），共 1 票。"
    )
    assert win_rate_markdown(win_rate([]), "zh").startswith("还没有投票")
    assert win_rate_markdown(win_rate(votes)) == win_rate_markdown(win_rate(votes), "en")  # the CLI's English
    ballots = Ballots(random.Random(0))
    with pytest.raises(InputError) as err:
        ballots.cast(_deal(ballots, tmp_path).id, "C")
    assert str(err.value) == "A vote is one of A, B, tie, both_bad; got 'C'."
    assert render(err.value.args[0], "zh") == "投票只能是 A, B, tie, both_bad 之一，收到的是 'C'。"
    with pytest.raises(InputError) as err:
        vote_rows(tmp_path / "nowhere")
    assert render(err.value.args[0], "zh").endswith(
        "中没有 data/ 文件夹：请选择在 LoRA Lab 中训练的适配器，才能对它的数据行投票。"
    )
