"""Judge the tuned model: blind A/B votes, a win rate with its interval, preference pairs, and loss-based checks.

`ballots.py` deals blind pairs (the tuned side kept server side) and saves each vote to `<run>/votes.jsonl`;
`stats.py` turns votes into a win rate (95% Wilson interval, also per opponent: the base model or another adapter)
and DPO pairs, and picks the run's rows to vote on; `scoring.py` measures held-out loss of base vs tuned and the
per-token log-probability change; `cli.py` is `python -m lora_demo votes`. Nothing here imports gradio; torch is
imported only when scoring runs.
"""

from lora_demo.judge.ballots import Ballot, Ballots, Choice, Vote, VoteStore
from lora_demo.judge.scoring import heldout_loss, token_diff
from lora_demo.judge.stats import (
    dpo_pairs,
    export_dpo,
    pair_lines,
    side_name,
    vote_rows,
    vote_rows_split,
    vote_summary,
    win_rate,
    win_rate_markdown,
    win_rates_by_opponent,
    win_rates_markdown,
)

__all__ = [
    "Ballot",
    "Ballots",
    "Choice",
    "Vote",
    "VoteStore",
    "dpo_pairs",
    "export_dpo",
    "heldout_loss",
    "pair_lines",
    "side_name",
    "token_diff",
    "vote_rows",
    "vote_rows_split",
    "vote_summary",
    "win_rate",
    "win_rate_markdown",
    "win_rates_by_opponent",
    "win_rates_markdown",
]
