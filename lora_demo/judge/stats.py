"""What the votes say: a win rate with its 95% interval (over all votes, and per opponent: the base model or another
adapter), preference pairs for DPO, and the rows to vote on."""

from __future__ import annotations

import math
from pathlib import Path

from lora_demo.adapters import run_folder
from lora_demo.errors import InputError
from lora_demo.i18n import msg, translator
from lora_demo.io import read_jsonl, to_jsonl, write_atomic
from lora_demo.judge.ballots import Vote
from lora_demo.rundir import CHECKPOINTS, RunDir

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson_interval(p: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval for a proportion p observed over n trials."""
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def win_rate(votes: list[Vote]) -> dict:
    """Wins, ties and losses of the tuned model, and its win rate with a 95% Wilson score interval.

    win_rate = (wins + ties / 2) / (wins + ties + losses): a tie counts as half a win, and the interval is the
    Wilson score interval on that rate with n = wins + ties + losses (so ties enter as half-successes, a common
    approximation). "Both bad" votes say nothing about which side is better: they are counted but not decided.
    With no decided vote the rate and the interval are None."""
    verdicts = [v.verdict for v in votes]
    w, t, lo, bb = (verdicts.count(k) for k in ("tuned", "tie", "base", "both_bad"))
    n = w + t + lo
    rate = (w + t / 2) / n if n else None
    ci_low, ci_high = wilson_interval(rate, n) if n else (None, None)
    return {
        "votes": len(votes),
        "wins": w,
        "ties": t,
        "losses": lo,
        "both_bad": bb,
        "decided": n,
        "win_rate": rate,
        "ci_low": ci_low,
        "ci_high": ci_high,
    }


def win_rate_markdown(stats: dict, lang: str = "en") -> str:
    """One short paragraph in `lang`, e.g. "Tuned wins 3, ties 1, loses 1 (both bad 0): win rate 70% (95% CI
    30–93%) over 5 votes." """
    tr = translator(lang)
    n = stats.get("votes", 0)
    if not n:
        return tr("No votes yet: ask for a blind pair and pick the better answer.")
    counts = {k: stats[k] for k in ("wins", "ties", "losses", "both_bad")}
    over = msg("over {n} votes.", n=n) if n != 1 else msg("over 1 vote.")
    if stats.get("win_rate") is None:
        return tr(
            "Tuned wins {wins}, ties {ties}, loses {losses} (both bad {both_bad}): no win rate yet (every vote "
            "said both answers are bad) {over}",
            **counts,
            over=over,
        )
    rate, low, high = (round(100 * stats[k]) for k in ("win_rate", "ci_low", "ci_high"))
    return tr(
        "Tuned wins {wins}, ties {ties}, loses {losses} (both bad {both_bad}): win rate {rate}% (95% CI "
        "{low}–{high}%) {over}",
        **counts,
        rate=rate,
        low=low,
        high=high,
        over=over,
    )


def side_name(adapter_dir: str | Path) -> str:
    """How the win-rate lines and the reveal name an adapter: its folder (a checkpoint: <run>/<checkpoint-N>)."""
    path = Path(str(adapter_dir))
    if path.parent.name == CHECKPOINTS and path.parent.parent.name:
        return f"{path.parent.parent.name}/{path.name}"
    return path.name or str(adapter_dir)


def win_rates_by_opponent(votes: list[Vote]) -> list[dict]:
    """win_rate() per opponent: the votes against the base model first (when there are any), then those against
    each other adapter in the order of its first vote. Each dict adds "opponent" (the adapter folder as the votes
    saved it; "" = the base model) and "opponent_name" (side_name of it; "" for the base model)."""
    groups: dict[str, list[Vote]] = {}
    for v in sorted(votes, key=lambda v: bool(v.opponent)):  # stable: the base model's group first
        groups.setdefault(v.opponent or "", []).append(v)
    return [
        {"opponent": opp, "opponent_name": side_name(opp) if opp else ""} | win_rate(group)
        for opp, group in groups.items()
    ]


def vote_summary(votes: list[Vote]) -> dict:
    """win_rate() over all the votes, with "by_opponent": win_rates_by_opponent() (what the page and CLI show)."""
    return win_rate(votes) | {"by_opponent": win_rates_by_opponent(votes)}


def pair_lines(name: str, by_opponent: list[dict], lang: str = "en") -> list[str]:
    """One line per pair in `lang`, e.g. "dpo-run vs sft-run: wins 7, ties 0, losses 3 (both bad 0): win rate 70%
    (95% CI 40–89%) over 10 votes." (name: the adapter whose votes these are)."""
    tr = translator(lang)
    lines = []
    for stats in by_opponent:
        counts = {k: stats[k] for k in ("wins", "ties", "losses", "both_bad")}
        other = stats.get("opponent_name") or (side_name(stats["opponent"]) if stats.get("opponent") else "")
        other = other or msg("the base model")
        n = stats["votes"]
        over = msg("over {n} votes.", n=n) if n != 1 else msg("over 1 vote.")
        if stats.get("win_rate") is None:
            lines.append(
                tr(
                    "{name} vs {other}: wins {wins}, ties {ties}, losses {losses} (both bad {both_bad}): no win "
                    "rate yet (every vote said both answers are bad) {over}",
                    name=name,
                    other=other,
                    **counts,
                    over=over,
                )
            )
            continue
        rate, low, high = (round(100 * stats[k]) for k in ("win_rate", "ci_low", "ci_high"))
        lines.append(
            tr(
                "{name} vs {other}: wins {wins}, ties {ties}, losses {losses} (both bad {both_bad}): win rate "
                "{rate}% (95% CI {low}–{high}%) {over}",
                name=name,
                other=other,
                **counts,
                rate=rate,
                low=low,
                high=high,
                over=over,
            )
        )
    return lines


def win_rates_markdown(name: str, stats: dict, lang: str = "en") -> str:
    """What the page shows for an adapter's votes (stats: vote_summary's): with votes against the base model only,
    win_rate_markdown's paragraph as before; with votes against other adapters, one line per pair (pair_lines)."""
    pairs = stats.get("by_opponent")
    if pairs is None or not stats.get("votes") or all(not p["opponent"] for p in pairs):
        return win_rate_markdown(stats, lang)
    return "\n".join(f"- {line}" for line in pair_lines(name, pairs, lang))


def user_prompt(vote: Vote) -> str:
    """The user's prompt as one string: the prompt, then the input (if any) after a blank line."""
    return f"{vote.prompt}\n\n{vote.input}" if vote.input else vote.prompt


def dpo_pairs(votes: list[Vote]) -> list[dict]:
    """{"prompt", "chosen", "rejected"} for each vote with a winner (ties and both-bad votes are left out), in
    TRL DPOTrainer's standard (non-conversational) format: plain strings. The system prompt is not included. The
    winner's answer is chosen whoever the opponent was (the base model or another adapter)."""
    out = []
    for v in votes:
        if v.verdict == "tuned":
            out.append({"prompt": user_prompt(v), "chosen": v.tuned_answer, "rejected": v.base_answer})
        elif v.verdict == "base":
            out.append({"prompt": user_prompt(v), "chosen": v.base_answer, "rejected": v.tuned_answer})
    return out


def export_dpo(votes: list[Vote], out_file: str | Path) -> int:
    """Write the preference pairs as JSONL (replacing out_file atomically); returns how many were written (0
    writes an empty file)."""
    pairs = dpo_pairs(votes)
    write_atomic(out_file, to_jsonl(pairs))
    return len(pairs)


def vote_rows(adapter_dir: str | Path, limit: int = 20) -> list[dict]:
    """The prompts for "Vote on the run's rows": its validation rows, or its training rows when it has none, as
    {instruction, input, output} dicts (at most `limit`)."""
    return vote_rows_split(adapter_dir, limit)[0]


def vote_rows_split(adapter_dir: str | Path, limit: int = 20) -> tuple[list[dict], str]:
    """vote_rows and the split they come from: "val", or "train" when the run has no validation rows."""

    run = RunDir(run_folder(adapter_dir))  # a checkpoint votes on its run's rows
    if not run.data_dir.is_dir():
        raise InputError(
            msg(
                "{adapter} has no data/ folder: pick an adapter trained in LoRA Lab to vote on its rows.",
                adapter=str(adapter_dir),
            )
        )
    for split in ("val", "train"):
        rows = [_row(r) for r in read_jsonl(run.rows_path(split))]
        rows = [r for r in rows if r is not None]
        if rows:
            return rows[: max(0, int(limit))], split
    raise InputError(
        msg(
            "{adapter}/data has no rows to vote on (no data/val.jsonl or data/train.jsonl rows).",
            adapter=str(adapter_dir),
        )
    )


def _row(r) -> dict | None:
    if not isinstance(r, dict) or not str(r.get("instruction") or "").strip():
        return None
    return {k: str(r.get(k) or "") for k in ("instruction", "input", "output")}
