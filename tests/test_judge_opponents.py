"""Blind votes that pit two adapters against each other (issue 31, part 3): the opponent saved with each vote (old
lines read as votes against the base model), a win rate per pair, DPO pairs whose chosen answer is the winner's
whoever the opponent was, and a ballot of two real adapters answered in one batch and saved in the shown adapter's
votes."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest

from lora_demo.errors import InputError
from lora_demo.io import read_jsonl
from lora_demo.judge import (
    Ballots,
    Vote,
    VoteStore,
    dpo_pairs,
    pair_lines,
    side_name,
    vote_summary,
    win_rate,
    win_rate_markdown,
    win_rates_by_opponent,
    win_rates_markdown,
)

SFT = "runs/sft-run"


def _vote(verdict: str, opponent: str = "", prompt: str = "Q", tuned_side: str = "A") -> Vote:
    """A saved-looking vote on runs/dpo-run (its answer 'D:<prompt>', the opponent's 'O:<prompt>')."""
    other = "B" if tuned_side == "A" else "A"
    choice = {"tuned": tuned_side, "base": other}.get(verdict, verdict)
    a, b = (f"D:{prompt}", f"O:{prompt}") if tuned_side == "A" else (f"O:{prompt}", f"D:{prompt}")
    return Vote(
        time=0.0,
        adapter="runs/dpo-run",
        base_model="m",
        prompt=prompt,
        input="",
        system="",
        answer_a=a,
        answer_b=b,
        tuned_side=tuned_side,
        choice=choice,
        verdict=verdict,
        opponent=opponent,
    )


# --- the Vote record ---


def test_old_vote_lines_read_as_votes_against_the_base_model(tmp_path):
    old = {
        "time": 1.0,
        "adapter": str(tmp_path),
        "base_model": "m",
        "prompt": "q",
        "input": "",
        "system": "",
        "answer_a": "a",
        "answer_b": "b",
        "tuned_side": "B",
        "choice": "B",
        "verdict": "tuned",
        "settings": {"temperature": 0.7},
        "seed": 3,
    }  # fmt: skip (a line written before opponents existed)
    vote = Vote.from_dict(old)
    assert vote is not None and vote.opponent == "" and vote.tuned_answer == "b" and vote.base_answer == "a"
    assert Vote.from_dict(old | {"opponent": None}).opponent == ""  # a hand-written null: the base model
    assert Vote.from_dict(old | {"opponent": SFT}).opponent == SFT
    assert Vote.from_dict(old | {"opponent": 5}) is None  # not a folder: not a vote
    assert Vote.from_dict(old | {"verdict": "base"}) is None  # the verdict must still match the sides
    (tmp_path / "votes.jsonl").write_text(json.dumps(old) + "\n" + json.dumps(old | {"opponent": SFT}) + "\n")
    assert [v.opponent for v in VoteStore(tmp_path).votes()] == ["", SFT]


def test_a_ballot_against_an_adapter_saves_the_opponent(tmp_path):
    ballots = Ballots(random.Random(1))
    ballot = ballots.deal(str(tmp_path), "m", "q", "the sft answer", "the dpo answer", {}, 0, opponent=SFT)
    vote = ballots.cast(ballot.id, "A")
    assert vote.opponent == SFT and {vote.tuned_answer, vote.base_answer} == {"the dpo answer", "the sft answer"}
    assert vote.tuned_answer == "the dpo answer" and vote.verdict == (
        "tuned" if ballot.a == "the dpo answer" else "base"
    )
    line = read_jsonl(tmp_path / "votes.jsonl")[0]
    assert line["opponent"] == SFT and line["adapter"] == str(tmp_path)
    assert VoteStore(tmp_path).votes() == [vote]
    plain = ballots.cast(ballots.deal(str(tmp_path), "m", "q", "base", "tuned", {}, 0).id, "tie")
    assert plain.opponent == ""  # no opponent named: the base model, as before
    with pytest.raises(InputError, match="against itself"):
        ballots.deal(str(tmp_path), "m", "q", "x", "y", {}, 0, opponent=str(tmp_path))


# --- the win rate per pair ---


def test_win_rates_by_opponent_against_a_hand_count():
    votes = (
        [_vote("tuned", SFT)] * 6
        + [_vote("tie", SFT)] * 2
        + [_vote("base", SFT)] * 2
        + [_vote("both_bad", SFT)]
        + [_vote("base")] * 3
        + [_vote("tuned")]
        + [_vote("tuned", "runs/sft-run/checkpoints/checkpoint-8")]
    )
    random.Random(0).shuffle(votes)
    pairs = win_rates_by_opponent(votes)
    assert [(p["opponent"], p["opponent_name"]) for p in pairs][0] == ("", "")  # the base model first
    by = {p["opponent"]: p for p in pairs}
    assert set(by) == {"", SFT, "runs/sft-run/checkpoints/checkpoint-8"}
    sft = by[SFT]
    assert {k: sft[k] for k in ("votes", "wins", "ties", "losses", "both_bad", "decided")} == {
        "votes": 11,
        "wins": 6,
        "ties": 2,
        "losses": 2,
        "both_bad": 1,
        "decided": 10,
    }
    assert sft["win_rate"] == pytest.approx(0.7) and round(sft["ci_low"], 4) == 0.3968
    assert round(sft["ci_high"], 4) == 0.8922 and sft["opponent_name"] == "sft-run"  # the textbook 7/10
    assert by[""]["wins"] == 1 and by[""]["losses"] == 3 and by[""]["win_rate"] == pytest.approx(0.25)
    assert by["runs/sft-run/checkpoints/checkpoint-8"]["opponent_name"] == "sft-run/checkpoint-8"
    for p in pairs:  # each pair's figures are win_rate over its own votes
        assert {k: v for k, v in p.items() if not k.startswith("opponent")} == win_rate(
            [v for v in votes if v.opponent == p["opponent"]]
        )
    assert vote_summary(votes) == win_rate(votes) | {"by_opponent": pairs}
    assert win_rates_by_opponent([]) == [] and vote_summary([])["by_opponent"] == []


def test_the_page_shows_one_line_per_pair_in_both_languages():
    votes = (
        [_vote("tuned", SFT)] * 3
        + [_vote("tie", SFT), _vote("base", SFT)]
        + [_vote("tuned")]
        + [_vote("both_bad", "runs/other")]
    )
    text = win_rates_markdown("dpo-run", vote_summary(votes))
    assert text.splitlines() == [
        "- dpo-run vs the base model: wins 1, ties 0, losses 0 (both bad 0): win rate 100% (95% CI 21–100%) over 1 "
        "vote.",
        "- dpo-run vs sft-run: wins 3, ties 1, losses 1 (both bad 0): win rate 70% (95% CI 30–93%) over 5 votes.",
        "- dpo-run vs other: wins 0, ties 0, losses 0 (both bad 1): no win rate yet (every vote said both answers are "
        "bad) over 1 vote.",
    ]
    zh = win_rates_markdown("dpo-run", vote_summary(votes), "zh").splitlines()
    assert zh[0] == "- dpo-run 对 基座模型：胜 1、平 0、负 0（都不好 0）：胜率 100%（95% 置信区间 21–100%），共 1 票。"
    assert zh[1] == "- dpo-run 对 sft-run：胜 3、平 1、负 1（都不好 0）：胜率 70%（95% 置信区间 30–93%），共 5 票。"
    assert "尚无胜率" in zh[2]
    # Votes against the base model only: the paragraph as before (and "no votes yet" with none).
    base_only = vote_summary([_vote("tuned")] * 3 + [_vote("tie"), _vote("base")])
    assert win_rates_markdown("dpo-run", base_only) == win_rate_markdown(base_only)
    assert win_rates_markdown("dpo-run", vote_summary([])).startswith("No votes yet")
    assert pair_lines("x", win_rates_by_opponent([_vote("base", SFT)]))[0].startswith("x vs sft-run: wins 0")
    assert (
        side_name("/a/runs/sft-run") == "sft-run" and side_name("runs/r/checkpoints/checkpoint-4") == "r/checkpoint-4"
    )


# --- preference pairs of adapter-vs-adapter votes ---


def test_dpo_pairs_choose_the_winner_whoever_the_opponent_was(tmp_path):
    from lora_demo.data.preferences import pairs_from_votes

    votes = [
        _vote("tuned", SFT, "p1", "A"),
        _vote("tuned", SFT, "p2", "B"),
        _vote("base", SFT, "p3", "A"),
        _vote("base", SFT, "p4", "B"),
        _vote("tie", SFT, "p5"),
        _vote("both_bad", SFT, "p6"),
        _vote("base", "", "p7", "B"),
    ]
    want = [
        {"prompt": "p1", "chosen": "D:p1", "rejected": "O:p1"},  # the shown adapter (DPO) won: its answer chosen
        {"prompt": "p2", "chosen": "D:p2", "rejected": "O:p2"},
        {"prompt": "p3", "chosen": "O:p3", "rejected": "D:p3"},  # the opponent (SFT) won: its answer chosen
        {"prompt": "p4", "chosen": "O:p4", "rejected": "D:p4"},
        {"prompt": "p7", "chosen": "O:p7", "rejected": "D:p7"},  # against the base model, as before
    ]
    assert dpo_pairs(votes) == want
    for v in votes:
        VoteStore(tmp_path).add(dataclasses.replace(v, adapter=str(tmp_path)))
    assert pairs_from_votes(tmp_path) == want  # what a DPO run on votes:<run> trains on


def test_votes_command_prints_each_pair(tmp_path, capsys):
    from lora_demo.cli import main

    run = tmp_path / "dpo-run"
    run.mkdir()
    votes = [_vote("tuned", SFT)] * 3 + [_vote("base", SFT)] + [_vote("tuned"), _vote("tie")]
    for v in votes:
        VoteStore(run).add(v)
    assert main(["votes", str(run)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("dpo-run vs the base model: wins 1, ties 1, losses 0")
    assert out[1].startswith("dpo-run vs sft-run: wins 3, ties 0, losses 1 (both bad 0): win rate 75%")
    assert main(["votes", str(run), "--json"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line == json.loads(json.dumps(vote_summary(votes)))
    assert [(p["opponent"], p["wins"], p["losses"]) for p in line["by_opponent"]] == [("", 1, 0), (SFT, 3, 1)]


# --- two real adapters, one batch, the vote in the shown adapter's folder ---


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    from lora_demo.engine import AppSettings, LabEngine
    from tests.test_chat_adapters import _random_adapter

    root = tmp_path_factory.mktemp("opponents")
    runs = root / "runs"
    runs.mkdir()
    _random_adapter(runs / "sft-run", ["q_proj", "v_proj"], 2, seed=1)
    _random_adapter(runs / "dpo-run", ["q_proj", "k_proj", "v_proj", "o_proj"], 4, seed=2)
    return LabEngine(AppSettings(model="qwen3-tiny", runs_dir=runs, data_dir=root / "data"))


def test_an_adapter_against_an_adapter_answers_from_both_and_votes_in_the_shown_one(lab):
    from lora_demo.chat.engine import GenSettings, split_thinking
    from lora_demo.ui.judge_section import JudgeActions

    dpo, sft = str(lab.runs_dir / "dpo-run"), str(lab.runs_dir / "sft-run")
    greedy = GenSettings(max_new_tokens=8, greedy=True, repetition_penalty=1.0)
    ballot = lab.blind_round("What is your name?", greedy, "", "auto", dpo, opponent=sft)
    engine = lab.chat.get("qwen3-tiny")
    assert engine is not None and dpo in engine.adapters and sft in engine.adapters  # both attached to the one base
    # Plain PEFT, one adapter at a time; the ballot shows each answer as the chat would (the thinking split off).
    alone = {a: engine.answer_pair("What is your name?", greedy, adapter_dir=a, mode="sequential") for a in (dpo, sft)}
    alone = {
        a: {k: split_thinking(v)[1] or v for k, v in res.items() if k in ("base", "tuned")} for a, res in alone.items()
    }
    want_dpo, want_sft = alone[dpo]["tuned"], alone[sft]["tuned"]
    assert len({want_dpo, want_sft, alone[dpo]["base"]}) == 3, alone  # the two adapters and the base really differ
    assert {ballot.a, ballot.b} == {want_dpo, want_sft}

    vote, stats = lab.cast_vote(ballot.id, "A" if ballot.a == want_sft else "B")  # the SFT run's answer wins
    assert vote.adapter == dpo and vote.opponent == sft and vote.verdict == "base"
    assert vote.tuned_answer == want_dpo and vote.base_answer == want_sft
    saved = read_jsonl(lab.runs_dir / "dpo-run" / "votes.jsonl")
    assert len(saved) == 1 and saved[0]["opponent"] == sft and saved[0]["adapter"] == dpo
    assert not (lab.runs_dir / "sft-run" / "votes.jsonl").exists()  # nothing in the opponent's folder
    assert dpo_pairs(VoteStore(dpo).votes()) == [
        {"prompt": "What is your name?", "chosen": want_sft, "rejected": want_dpo}
    ]
    assert [(p["opponent"], p["losses"]) for p in stats["by_opponent"]] == [(sft, 1)]

    # The page: the reveal names both sides, the rate is one line per pair; the "against" list offers the base
    # model and the other adapters (not the one shown).
    act = JudgeActions(lab)
    gen = [0.7, 0.9, 50, 1.0, 8, 0, 1.0, True]
    a, b, bid, status, _ = act.ask("What is your name?", "", *gen, "auto", dpo, sft)
    assert {a, b} == {want_dpo, want_sft} and "Vote below" in status
    dpo_side = "A" if a == want_dpo else "B"
    reveal, rate, _ = act.vote(bid, dpo_side)
    assert reveal.startswith(
        f"Last pair: **A** was `{'dpo-run' if dpo_side == 'A' else 'sft-run'}`, **B** was "
        f"`{'sft-run' if dpo_side == 'A' else 'dpo-run'}`."
    ), reveal
    assert reveal.endswith("`dpo-run` wins."), reveal
    assert (
        rate == "- dpo-run vs sft-run: wins 1, ties 0, losses 1 (both bad 0): win rate 50% (95% CI 9–91%) over 2 votes."
    )
    *_, bid = act.ask("What is your name?", "", *gen, "auto", dpo, "")[:3]  # "": the base model, as before
    reveal, rate, _ = act.vote(bid, "tie")
    assert "was the tuned model" in reveal and rate.splitlines()[0].startswith("- dpo-run vs the base model: wins 0")
    choices = act.opponents("", dpo).choices
    assert choices[0] == ("the base model", "") and [c[1] for c in choices[1:]] == [sft]

    with pytest.raises(InputError, match="against itself"):
        lab.blind_round("What is your name?", greedy, "", "auto", dpo, opponent=dpo)
