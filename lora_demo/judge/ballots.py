"""Blind A/B votes: pairs dealt with the sides shuffled, the secret kept server side, each vote saved to the run.

A `Ballot` is all a browser or an API caller sees before voting: an id and two answers. Which one the tuned model
wrote lives only in `Ballots` (in memory, under the ballot's id, a fresh uuid4 that says nothing about the side)
until the vote is cast; the saved `Vote` then reveals it. Votes are lines of `<adapter_dir>/votes.jsonl`.

The other side (the opponent) is the base model, or another adapter (e.g. a DPO run against the SFT run it continued
from): `Vote.opponent` is that adapter's folder, "" for the base model. Either way "tuned" names the adapter whose
votes these are (the one shown in the Chat tab) and "base" its opponent, so a verdict "tuned" means that adapter won.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from lora_demo.adapters import votes_file
from lora_demo.errors import InputError
from lora_demo.i18n import msg
from lora_demo.io import append_jsonl, read_jsonl
from lora_demo.rundir import VOTES

Choice = Literal["A", "B", "tie", "both_bad"]
CHOICES: tuple[str, ...] = get_args(Choice)
VOTES_FILE = VOTES
MAX_PENDING = 1000
EXPIRED = msg("This pair was already voted on or has expired: ask again.")


@dataclass
class Ballot:
    """What may be shown before the vote: nothing here tells which side is the tuned model."""

    id: str  # uuid4 hex
    a: str  # answer shown as A
    b: str  # answer shown as B


@dataclass
class Vote:
    """One saved vote (a line of <adapter_dir>/votes.jsonl). The "tuned" side is `adapter`, the "base" side its
    opponent: the base model, or the adapter folder `opponent` (lines written before opponents existed: the base)."""

    time: float
    adapter: str
    base_model: str
    prompt: str
    input: str
    system: str
    answer_a: str
    answer_b: str
    tuned_side: Literal["A", "B"]
    choice: Choice
    verdict: Literal["tuned", "base", "tie", "both_bad"]
    settings: dict = field(default_factory=dict)
    seed: int = 0
    opponent: str = ""  # the other side's adapter folder; "" = the base model

    @property
    def tuned_answer(self) -> str:
        return self.answer_a if self.tuned_side == "A" else self.answer_b

    @property
    def base_answer(self) -> str:
        """The opponent's answer (the base model's, or the adapter `opponent`'s)."""
        return self.answer_b if self.tuned_side == "A" else self.answer_a

    @classmethod
    def from_dict(cls, d) -> Vote | None:
        """A Vote from a saved line, or None for a line that is not one (hand-edited, another version's)."""
        if not isinstance(d, dict):
            return None
        try:
            vote = cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})
        except TypeError:  # a required field is missing
            return None
        if vote.opponent is None:  # a hand-written null: the base model
            vote.opponent = ""
        ok = (
            vote.tuned_side in ("A", "B")
            and vote.choice in CHOICES
            and vote.verdict == verdict_of(vote)
            and isinstance(vote.opponent, str)
        )
        return vote if ok else None


def same_sides(adapter_dir) -> str:
    return msg(
        "Pick another adapter to vote against (or the base model): `{path}` against itself says nothing.",
        path=str(adapter_dir),
    )


def verdict_of(vote: Vote) -> str:
    """tuned / base for an A/B choice (by where the tuned answer was shown), else the choice itself."""
    if vote.choice in ("A", "B"):
        return "tuned" if vote.choice == vote.tuned_side else "base"
    return vote.choice


class VoteStore:
    """The votes on one adapter: <adapter_dir>/votes.jsonl, appended one line per vote (a torn line is skipped)."""

    def __init__(self, adapter_dir: str | Path):

        self.adapter_dir = Path(adapter_dir)
        self.path = votes_file(adapter_dir)  # <adapter>/votes.jsonl; a checkpoint's go to its run folder

    def add(self, vote: Vote) -> None:
        try:
            append_jsonl(self.path, dataclasses.asdict(vote))
        except OSError as e:
            raise InputError(
                msg(
                    "Could not save the vote in {path}: {error} (was the run's folder deleted, or is the disk full?)",
                    path=str(self.path),
                    error=str(e.strerror or e),
                )
            ) from None

    def votes(self) -> list[Vote]:
        return [v for v in map(Vote.from_dict, read_jsonl(self.path)) if v is not None]


@dataclass
class _Secret:
    """What a pending ballot keeps server side until its vote."""

    adapter: str
    base_model: str
    prompt: str
    input: str
    system: str
    answer_a: str
    answer_b: str
    tuned_side: Literal["A", "B"]
    settings: dict
    seed: int
    opponent: str = ""


class Ballots:
    """Pending blind pairs, server side, thread-safe, bounded (beyond MAX_PENDING the oldest is dropped)."""

    def __init__(self, rng: random.Random | None = None, max_pending: int = MAX_PENDING):
        self._rng = rng or random.SystemRandom()
        self._pending: OrderedDict[str, _Secret] = OrderedDict()
        self._lock = threading.Lock()
        self.max_pending = max_pending

    def __len__(self) -> int:
        return len(self._pending)

    def deal(
        self,
        adapter_dir: str,
        base_model: str,
        prompt: str,
        base_text: str,
        tuned_text: str,
        settings: dict,
        seed: int,
        input: str = "",
        system: str = "",
        opponent: str = "",
    ) -> Ballot:
        """Shuffle which answer is A, remember the secret under a fresh id, and return what may be shown.
        base_text: the opponent's answer (the base model's, or the adapter folder `opponent`'s)."""
        if not adapter_dir:
            raise InputError(msg("Load an adapter first: a vote compares the base model with a tuned one."))
        if opponent and str(opponent) == str(adapter_dir):
            raise InputError(same_sides(adapter_dir))
        with self._lock:
            tuned_side = "A" if self._rng.random() < 0.5 else "B"
        a, b = (tuned_text, base_text) if tuned_side == "A" else (base_text, tuned_text)
        secret = _Secret(
            str(adapter_dir),
            str(base_model or ""),
            str(prompt),
            str(input or ""),
            str(system or ""),
            str(a),
            str(b),
            tuned_side,
            dict(settings or {}),
            int(seed),
            str(opponent or ""),
        )
        ballot_id = uuid.uuid4().hex
        with self._lock:
            self._pending[ballot_id] = secret
            while len(self._pending) > self.max_pending:
                self._pending.popitem(last=False)
        return Ballot(ballot_id, secret.answer_a, secret.answer_b)

    def cast(self, ballot_id: str, choice: str) -> Vote:
        """Record a vote: A, B, tie or both_bad. Saves it to the adapter's votes.jsonl and returns it (now
        revealing the tuned side). A ballot is used once; if saving fails it stays pending, to try again."""
        if not isinstance(choice, str) or choice not in CHOICES:
            raise InputError(
                msg("A vote is one of {choices}; got {got!r}.", choices=", ".join(CHOICES), got=str(choice)[:40])
            )
        with self._lock:
            secret = self._pending.pop(ballot_id, None) if isinstance(ballot_id, str) else None
        if secret is None:
            raise InputError(EXPIRED)
        vote = Vote(time=time.time(), choice=choice, verdict="", **dataclasses.asdict(secret))
        vote.verdict = verdict_of(vote)
        try:
            VoteStore(secret.adapter).add(vote)
        except BaseException:
            with self._lock:
                self._pending[ballot_id] = secret
            raise
        return vote
