"""Preference pairs for DPO: {"prompt", "chosen", "rejected"} (and an optional "input"), one home for reading,
checking and storing them.

Where a DPO run's pairs come from (its `dataset` setting):
- `votes:<run>`: the blind A/B votes cast on a run in the Chat tab (`<run>/votes.jsonl`), turned into pairs by the
  judge's own exporter (`judge.stats.dpo_pairs`, what `python -m lora_demo votes RUN --export FILE` writes): a vote
  for one side makes it `chosen` and the other `rejected`; ties and "both bad" give no pair. `<run>` is a run folder
  (as typed: absolute, or relative to the working directory) or a run's name in the runs folder; `votes:` alone
  means the votes cast on the adapter the run continues from (init_adapter), the usual case.
- `pairs:<name>`: a preference file the Dataset tab imported, checked and saved as `<data>/preferences/<name>.jsonl`
  (save_pairs; saved_pairs lists them).
- a .json / .jsonl / .csv / .parquet file whose rows have prompt, chosen and rejected (input optional), such as the
  votes export.
A saved dataset name or `example:<name>` is refused with that explanation: saved datasets hold instruction rows
(instruction/input/output), not pairs.

Each pair is prompted exactly as SFT prompts a row: {"instruction": prompt, "input": input} through the run's
template (data.templates.build_example), so DPO scores the answers after the very prompt the SFT model saw.
The runner snapshots the checked pairs into the run folder (`data/train.jsonl`, `data/val.jsonl`), which is all the
worker reads.
"""

from __future__ import annotations

from pathlib import Path

from lora_demo.data.formats import SUFFIXES, read_records
from lora_demo.data.verbatim import verbatim
from lora_demo.errors import InputError
from lora_demo.i18n import joined, msg
from lora_demo.io import is_regular, to_jsonl, write_atomic
from lora_demo.judge.ballots import VoteStore
from lora_demo.judge.stats import dpo_pairs
from lora_demo.paths import inside, real_dir, safe_name
from lora_demo.train.runs import list_runs

PAIR_FIELDS = ("prompt", "chosen", "rejected")
OPTIONAL_FIELDS = ("input",)
VOTES = "votes:"
PAIRS = "pairs:"  # a preference file saved by the Dataset tab: <data>/preferences/<name>.jsonl
PAIRS_FOLDER = "preferences"
PAIRS_NAME = msg("preference set name")  # what lora_demo.paths calls a bad name in its messages
FEW_PAIRS = 16  # below this many pairs the plan and the check warn: DPO learns little from a handful


def is_votes(dataset: str) -> bool:
    return isinstance(dataset, str) and dataset.startswith(VOTES)


def votes_run(dataset: str, runs_dir: str | Path = "runs", init_adapter: str = "") -> Path:
    """The adapter folder whose votes `votes:<run>` names (see the module docstring)."""
    name = dataset[len(VOTES) :].strip()
    if not name:
        if not init_adapter:
            raise InputError(
                msg(
                    "votes: without a run name means the votes on the adapter this run continues from, "
                    "and it continues from none: name the run (votes:<run>) or set --continue-from."
                )
            )
        return Path(init_adapter)
    in_runs = Path(runs_dir) / name
    if "/" not in name and name not in (".", "..") and in_runs.is_dir():  # a run's name: the runs folder's, first
        return in_runs
    given = Path(name)
    if given.is_dir():
        return given
    raise InputError(
        msg("votes:{name}: no such run (looked for the folder {name} and for {path}).", name=name, path=str(in_runs))
    )


def pairs_from_votes(adapter_dir: str | Path) -> list[dict]:
    """The preference pairs of an adapter's blind votes, through the judge's exporter (judge.stats.dpo_pairs); a
    vote on a dataset row keeps the row's input apart, so the pair is prompted as that row was trained."""

    store = VoteStore(adapter_dir)
    name = Path(adapter_dir).name
    votes = store.votes() if store.path.is_file() else []
    if not votes:
        raise InputError(
            msg(
                "{run} has no votes to learn from ({file} is missing or empty): vote on blind pairs in "
                "the Chat tab first (Is the tuned model better?).",
                run=name,
                file=store.path.name,
            )
        )
    pairs = dpo_pairs(votes)
    if not pairs:
        raise InputError(
            msg(
                '{run} has {n} vote(s) but none for one side: ties and "both bad" give no preference '
                "pair. Vote A or B on some blind pairs first.",
                run=name,
                n=len(votes),
            )
        )
    decided = [v for v in votes if v.verdict in ("tuned", "base")]  # dpo_pairs keeps exactly these, in order
    for pair, vote in zip(pairs, decided, strict=True):
        if vote.input:
            pair.update(prompt=vote.prompt, input=vote.input)
    return pairs


def pairs_from_file(path: str | Path) -> list[dict]:
    """The records of a preference file as they are (check_pairs says what is wrong with them)."""
    return read_records(path)


def is_pairs_file(records: list) -> bool:
    """Whether imported records are preference pairs (each has prompt, chosen and rejected), not instruction rows."""
    return bool(records) and all(isinstance(r, dict) and all(f in r for f in PAIR_FIELDS) for r in records[:50])


def pairs_path(data_dir: str | Path, name: str) -> Path:

    return inside(Path(data_dir) / PAIRS_FOLDER, f"{safe_name(name, PAIRS_NAME)}.jsonl", PAIRS_NAME)


def save_pairs(data_dir: str | Path, name: str, pairs: list[dict]) -> Path:
    """Check the pairs and save them as a new preference set `pairs:<name>` (<data>/preferences/<name>.jsonl); the
    name is made file-safe (an upload's "votes (1)" → "votes-1") and never replaces a set already saved: "-2", "-3"
    ... is added instead. InputError listing the errors, and nothing written, when they would block training."""
    import re

    clean = checked_pairs("", pairs=pairs)
    real_dir(Path(data_dir), PAIRS_FOLDER)  # (made if missing; a symlinked folder is refused)
    stem = re.sub(r"[^\w.-]+", "-", str(name)).strip("-.")[:80] or "pairs"
    path, n = pairs_path(data_dir, stem), 1
    while path.exists() or path.is_symlink():
        n += 1
        path = pairs_path(data_dir, f"{stem}-{n}")
    write_atomic(path, pairs_to_jsonl(clean))
    return path


def saved_pairs(data_dir: str | Path) -> list[str]:
    """The preference sets saved in the data folder, as `pairs:<name>` values for a DPO run's dataset."""

    folder = Path(data_dir) / PAIRS_FOLDER
    if not folder.is_dir() or folder.is_symlink():
        return []
    return [PAIRS + p.stem for p in sorted(folder.glob("*.jsonl")) if is_regular(p)]


def vote_sources(runs_dir: str | Path) -> list[tuple[str, str]]:
    """(label, `votes:<run>`) for every run in the runs folder whose blind votes give at least one pair, newest
    first; the label says how many."""

    out = []
    for run in list_runs(runs_dir):
        store = VoteStore(Path(runs_dir) / run["name"])
        n = len(dpo_pairs(store.votes())) if store.path.is_file() else 0
        if n:
            out.append((msg("votes:{run} · {n} pair(s)", run=run["name"], n=n), VOTES + run["name"]))
    return out


def resolve_pairs(
    dataset: str, runs_dir: str | Path = "runs", init_adapter: str = "", data_dir: str | Path = "data"
) -> list[dict]:
    """The pairs a DPO run's `dataset` names: `votes:<run>`, `pairs:<name>` or a preference file (see the module
    docstring)."""
    if is_votes(dataset):
        return pairs_from_votes(votes_run(dataset, runs_dir, init_adapter))
    if isinstance(dataset, str) and dataset.startswith(PAIRS):
        folder = Path(data_dir) / PAIRS_FOLDER
        path = pairs_path(data_dir, dataset[len(PAIRS) :].strip())
        if folder.is_symlink() or not is_regular(path):  # (a symlink placed there is never followed)
            names = ", ".join(saved_pairs(data_dir)) or msg("none saved yet")
            raise InputError(
                msg(
                    "{dataset}: no such preference set (saved: {names}). Import a prompt/chosen/rejected "
                    "file in the Dataset tab to save one.",
                    dataset=dataset,
                    names=names,
                )
            )
        return pairs_from_file(path)
    path = Path(dataset)
    if path.suffix.lower() in SUFFIXES and path.is_file():
        return pairs_from_file(path)
    raise InputError(
        msg(
            "DPO trains on preference pairs, and {dataset!r} is none: use votes:<run> (the blind votes "
            "cast on a run in the Chat tab; votes: alone for the run this one continues from), pairs:<name> "
            "(a preference file imported in the Dataset tab), or a .json/.jsonl/.csv/.parquet file with "
            "prompt, chosen and rejected columns (saved datasets hold instruction rows, not pairs).",
            dataset=dataset,
        )
    )


def check_pairs(pairs: list) -> dict:
    """{"rows": n, "errors": [{"row", "field", "message"}], "warnings": [...]}, rows numbered from 1: errors block
    training (a missing or empty field, a field that is not text, the same text chosen and rejected, no pairs at all),
    warnings do not (fewer than FEW_PAIRS pairs, a duplicate pair)."""
    errors: list[dict] = []
    warnings: list[dict] = []
    if not pairs:
        errors.append({"row": 0, "field": "", "message": msg("There are no preference pairs.")})
    seen: dict[tuple, int] = {}
    for i, pair in enumerate(pairs or [], 1):
        if not isinstance(pair, dict):
            errors.append(
                {
                    "row": i,
                    "field": "",
                    "message": msg("row {row} is not an object with prompt, chosen and rejected", row=i),
                }
            )
            continue
        found = _field_errors(i, pair)
        if found:
            errors.extend(found)
            continue
        if pair["chosen"].strip() == pair["rejected"].strip():
            errors.append(
                {
                    "row": i,
                    "field": "rejected",
                    "message": msg(
                        "row {row}: chosen and rejected are the same "
                        "text, so the pair teaches nothing: fix one "
                        "side or drop the row",
                        row=i,
                    ),
                }
            )
            continue
        key = tuple(str(pair.get(f) or "").strip() for f in (*PAIR_FIELDS, *OPTIONAL_FIELDS))
        if key in seen:
            warnings.append(
                {
                    "row": i,
                    "field": "",
                    "message": msg("row {row}: the same pair as row {first}", row=i, first=seen[key]),
                }
            )
        else:
            seen[key] = i
    if pairs and not errors and len(pairs) < FEW_PAIRS:
        warnings.append({"row": 0, "field": "", "message": few_pairs(len(pairs))})
    return {"rows": len(pairs or []), "errors": errors, "warnings": warnings}


def _field_errors(i: int, pair: dict) -> list[dict]:
    """Row i's fields that are not text, or required and missing or empty."""
    out = []
    for f in (*PAIR_FIELDS, *OPTIONAL_FIELDS):
        v = pair.get(f)
        if v is not None and not isinstance(v, str):
            out.append(
                {
                    "row": i,
                    "field": f,
                    "message": msg(
                        "row {row}: {field} is a {kind}, not text",
                        row=i,
                        field=verbatim(f),
                        kind=verbatim(type(v).__name__),
                    ),
                }
            )
        elif f in PAIR_FIELDS and not (v or "").strip():
            if f not in pair:
                m = msg("row {row}: {field} is missing", row=i, field=verbatim(f))
            else:
                m = msg("row {row}: {field} is empty", row=i, field=verbatim(f))
            out.append({"row": i, "field": f, "message": m})
    return out


def few_pairs(n: int):
    return msg(
        "Only {n} preference pair(s): DPO learns little from fewer than about {few}. Vote on more blind pairs "
        "(Chat tab), or add pairs to the file.",
        n=n,
        few=FEW_PAIRS,
    )


def clean_pairs(pairs: list[dict]) -> list[dict]:
    """Checked pairs as plain {prompt, chosen, rejected[, input]} string dicts (an empty input left out)."""
    out = []
    for p in pairs:
        pair = {f: p[f] for f in PAIR_FIELDS}
        if (p.get("input") or "").strip():
            pair["input"] = p["input"]
        out.append(pair)
    return out


def checked_pairs(
    dataset: str,
    runs_dir: str | Path = "runs",
    init_adapter: str = "",
    pairs: list | None = None,
    data_dir: str | Path = "data",
) -> list[dict]:
    """resolve_pairs (unless pairs are given) and check_pairs in one: the clean pairs, or one InputError listing
    the first errors. For the runner's start, before anything loads."""

    pairs = resolve_pairs(dataset, runs_dir, init_adapter, data_dir) if pairs is None else pairs
    errors = check_pairs(pairs)["errors"]
    if errors:
        shown = joined([e["message"] for e in errors[:5]])
        raise InputError(
            msg("The preference pairs have {n} error(s), which block training: {errors}.", n=len(errors), errors=shown)
        )
    return clean_pairs(pairs)


def pairs_to_jsonl(pairs: list[dict]) -> str:
    """Pairs as the run folder keeps them (data/train.jsonl of a DPO run)."""
    return to_jsonl(clean_pairs(pairs))


def as_rows(pairs: list[dict]) -> list[dict]:
    """Each pair as the instruction row SFT would have trained on (its chosen answer as the output): for the probes,
    and the prompt DPO scores the answers after (build_example)."""
    return [
        {"instruction": p.get("prompt", ""), "input": p.get("input", ""), "output": p.get("chosen", "")} for p in pairs
    ]
