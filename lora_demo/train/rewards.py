"""GRPO's rewards (method: grpo): the preset kinds, the spec syntax, and the checks made before anything loads.

A reward is written as a spec, `KIND:ARG`, with an optional weight at the very end, `@W` (a plain number > 0;
default 1): `format:<answer>`, `length:40@0.5`, `match:fuzzy@2`. A trailing `@` + number is always read as the
weight; a regex or word that itself ends in `@<number>` needs an explicit weight after it (`...@7@1`).

Every reward scores one answer (the completion, stripped) with a number from 0 to 1:
- `format:REGEX`: 1 when `regex.search(REGEX, answer)` finds a match, else 0 (anchor it with ^ and $ to say how the
  whole answer starts and ends). The `regex` package (re's syntax and meaning, plus a timeout) checks and runs it:
  a search that takes over REGEX_TIMEOUT_S seconds on one answer (catastrophic backtracking, e.g. `^(a|a)*$`)
  fails the run like a raising python reward, since nothing else could interrupt it. `format:<TAG>` (a single tag name in angle brackets) asks for the answer inside
  <TAG>...</TAG>, with partial credit so a model can find it by exploration: 0.25 each for the opening tag, the
  closing tag after it, some text between them, and nothing outside them.
- `length:N`: a target of N tokens (the run's tokenizer, the answer's text without special tokens): 1 at N, falling
  linearly with the distance, to 0 at 0 tokens and at 2N tokens and beyond.
- `contains:TEXT` / `not_contains:TEXT`: 1 when TEXT occurs (does not occur) in the answer, case-insensitively.
- `match:exact` / `match:fuzzy` (`match` alone: fuzzy): the answer against the row's `output`, both with runs of
  white space made one space and case folded: 1 or 0 when exact, difflib's SequenceMatcher ratio when fuzzy (of the
  first FUZZY_CHARS characters of each: its cost grows with the cube of the length on repetitive text).
- `python:FILE.py[:FUNC]` (FUNC defaults to `reward`): a function from a local file, called once per batch with
  keyword arguments `completions` (the answers), `prompts` (the rows' questions: instruction, blank line, input) and
  `references` (the rows' outputs, "" where none); it returns one number from 0 to 1 per completion. It runs code from
  a file on the machine that trains, so the Runner of a shared app (--share, or a public --host) refuses to start or
  resume a run with one (grpo.checked_rewards; a saved config with one still reads everywhere). The file must exist and import (checked in a separate process before the run starts); a
  function that raises, or returns anything but numbers from 0 to 1, fails the run with its message, and the adapter
  trained so far is saved.

The run's reward is the weighted mean of its rewards (the weights are normalised to sum to 1, so it is also from 0
to 1; GRPO's advantages, scaled per group of answers, do not depend on that normalisation).
"""

from __future__ import annotations

import difflib
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import regex

from lora_demo.errors import LoraLabError
from lora_demo.i18n import Msg, msg

KINDS = ("format", "length", "contains", "not_contains", "match", "python")
TAG = re.compile(r"^<([A-Za-z_][\w.-]*)>$")
WEIGHT = re.compile(r"@([-+]?[\d.]+(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf|infinity))$", re.IGNORECASE)
MAX_WEIGHT = 100.0
MAX_LENGTH = 4096
DEFAULT_FUNC = "reward"
REGEX_TIMEOUT_S = 0.5  # format:REGEX, per answer: past this the run fails (a visitor's regex must not hang the worker)
# match:fuzzy compares this many characters of each side. SequenceMatcher is cubic on repetitive text ("ab"*n vs
# "a"*n): at 500 a side its worst case stays within seconds on 2 cores (natural text is far quicker), while each
# doubling of the length multiplies it several-fold.
FUZZY_CHARS = 500


class RewardFailed(LoraLabError):
    """A reward function raised or returned something other than numbers from 0 to 1, during training."""


@dataclass
class Reward:
    """One parsed reward spec; call score() on an answer, or the instance itself as a TRL reward function."""

    spec: str
    kind: str
    arg: str
    weight: float = 1.0
    name: str = ""
    tokenizer: object = None  # length: the run's tokenizer
    func: object = None  # python: the loaded function
    _pattern: regex.Pattern | None = field(default=None, repr=False)

    def __post_init__(self):
        self.name = self.name or self.kind
        self.__name__ = self.name  # TRL names the reward's metrics after it (rewards/<name>/mean)
        if self.kind == "format" and not TAG.match(self.arg):
            self._pattern = regex.compile(self.arg)  # (spec_problem compiled it with the same engine)

    @property
    def tag(self) -> str | None:
        m = TAG.match(self.arg) if self.kind == "format" else None
        return m.group(1) if m else None

    @property
    def needs_reference(self) -> bool:
        return self.kind == "match"

    def score(self, answer: str, reference: str = "", step=None) -> float:
        """This reward of one answer (stripped), from 0 to 1 (python rewards score batches: see __call__). A regex
        that runs past REGEX_TIMEOUT_S raises RewardFailed (step: the trainer's global_step, for its message)."""
        answer = (answer or "").strip()
        if self.kind == "format":
            return tag_score(answer, self.tag) if self.tag else self._search(answer, step)
        if self.kind == "length":
            target = int(self.arg)
            n = len(self.tokenizer(answer, add_special_tokens=False)["input_ids"]) if answer else 0
            return max(0.0, 1.0 - abs(n - target) / target)
        if self.kind in ("contains", "not_contains"):
            found = self.arg.casefold() in answer.casefold()
            return float(found if self.kind == "contains" else not found)
        if self.kind == "match":
            a, b = normalise(answer), normalise(reference)
            if self.arg == "exact":
                return float(a == b)
            return difflib.SequenceMatcher(None, a[:FUZZY_CHARS], b[:FUZZY_CHARS], autojunk=False).ratio()
        raise ValueError(f"{self.kind} scores batches")

    def _search(self, answer: str, step) -> float:
        try:
            return float(self._pattern.search(answer, timeout=REGEX_TIMEOUT_S) is not None)
        except TimeoutError:
            raise RewardFailed(
                msg(
                    "The reward {spec} took over {s:g} s on one answer at step {step}: its regex "
                    "backtracks catastrophically (overlapping repeats, such as (a|a)*); simplify the "
                    "regex",
                    spec=self.spec,
                    s=REGEX_TIMEOUT_S,
                    step=_step(step),
                )
            ) from None

    def __call__(self, prompts=None, completions=None, completion_ids=None, question=None, reference=None, **kw):
        """TRL's reward-function call: one float per completion. The dataset's `question` and `reference` columns
        arrive as lists (train/grpo.py builds them)."""
        completions = [c if isinstance(c, str) else _text_of(c) for c in completions]
        n = len(completions)
        references = list(reference) if reference is not None else [""] * n
        step = getattr(kw.get("trainer_state"), "global_step", None)
        if self.kind != "python":
            return [self.score(c, r, step) for c, r in zip(completions, references, strict=True)]
        questions = list(question) if question is not None else [""] * n
        try:
            out = self.func(completions=[c.strip() for c in completions], prompts=questions, references=references)
        except Exception as e:  # noqa: BLE001 - any error of the user's function fails the run with its message
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            raise RewardFailed(
                msg(
                    "The reward {spec} raised {kind} at step {step}: {first}",
                    spec=self.spec,
                    kind=type(e).__name__,
                    step=_step(step),
                    first=first,
                )
            ) from e
        return checked_scores(out, n, self.spec, step)


def _step(step) -> int:
    return (step or 0) + 1  # the step being made (global_step counts the finished ones)


def _text_of(completion) -> str:
    """A conversational completion ([{"role": "assistant", "content": ...}]) as its text."""
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return str(completion)


def checked_scores(out, n: int, spec: str, step=None) -> list[float]:
    """A python reward's output as n floats from 0 to 1, or RewardFailed saying what it returned."""
    try:
        values = [float(v) for v in out]
    except (TypeError, ValueError):
        raise RewardFailed(
            msg(
                "The reward {spec} returned {value} at step {step}: it must return a list of numbers "
                "from 0 to 1, one per completion",
                spec=spec,
                value=_short(out),
                step=_step(step),
            )
        ) from None
    if len(values) != n:
        raise RewardFailed(
            msg(
                "The reward {spec} returned {got} numbers at step {step} for {n} completions: it must "
                "return one per completion",
                spec=spec,
                got=len(values),
                n=n,
                step=_step(step),
            )
        )
    bad = next((v for v in values if not (math.isfinite(v) and 0.0 <= v <= 1.0)), None)
    if bad is not None:
        raise RewardFailed(
            msg(
                "The reward {spec} returned {value} at step {step}: rewards must be numbers from 0 to 1",
                spec=spec,
                value=bad,
                step=_step(step),
            )
        )
    return values


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def normalise(text: str) -> str:
    return " ".join((text or "").split()).casefold()


def tag_score(answer: str, tag: str) -> float:
    """<tag>...</tag>: 0.25 for the opening tag, 0.25 for a closing tag after it, 0.25 for text between them,
    0.25 for nothing outside them."""
    open_, close = f"<{tag}>", f"</{tag}>"
    start = answer.find(open_)
    if start < 0:
        return 0.0
    end = answer.find(close, start + len(open_))
    if end < 0:
        return 0.25
    inner = answer[start + len(open_) : end]
    outside = answer[:start] + answer[end + len(close) :]
    return 0.5 + 0.25 * bool(inner.strip()) + 0.25 * (not outside.strip())


# --- specs ---


def split_spec(spec: str) -> tuple[str, str, str | None]:
    """(kind, arg, weight text or None) of a spec; nothing is checked here."""
    body, weight = spec.strip(), None
    m = WEIGHT.search(body)
    if m:
        body, weight = body[: m.start()], m.group(1)
    kind, _, arg = body.partition(":")
    return kind.strip().lower(), arg, weight


def python_target(arg: str) -> tuple[str, str]:
    """(file, function) of a python reward's argument: FILE.py or FILE.py:FUNC."""
    if arg.endswith(".py"):
        return arg, DEFAULT_FUNC
    path, sep, func = arg.rpartition(":")
    return (path, func) if sep else (arg, DEFAULT_FUNC)


def spec_problem(spec, shared: bool = False) -> Msg | None:
    """What is wrong with one spec, as one line (None: fine). shared: refuse python rewards (the Runner of a shared
    app asks so when a run starts or resumes: grpo.checked_rewards; settings never do, so a saved config with a
    python reward still reads everywhere)."""
    if not isinstance(spec, str) or not spec.strip():
        return msg("rewards: each reward is text like format:<answer> or length:40@0.5 (got {value!r})", value=spec)
    kind, arg, weight = split_spec(spec)
    if kind not in KINDS:
        return msg(
            "reward {spec!r}: unknown kind {kind!r}; the kinds are {kinds}",
            spec=spec,
            kind=kind,
            kinds=", ".join(KINDS),
        )
    if weight is not None:
        try:
            w = float(weight)
        except ValueError:
            w = float("nan")
        if not (math.isfinite(w) and 0 < w <= MAX_WEIGHT):
            return msg(
                "reward {spec!r}: the weight after @ must be a number above 0 and at most {max:g} (got {value})",
                spec=spec,
                max=MAX_WEIGHT,
                value=weight,
            )
    if kind == "format":
        if not arg.strip():
            return msg(
                "reward {spec!r}: format needs a regex or a <tag>, e.g. format:^Answer: or format:<answer>", spec=spec
            )
        if not TAG.match(arg):
            try:
                regex.compile(arg)  # (the engine that runs it: its syntax differs a little from re's)
            except (regex.error, ValueError, TypeError, OverflowError, RecursionError) as e:
                return msg("reward {spec!r}: the regex does not compile: {error}", spec=spec, error=str(e))
    elif kind == "length":
        if not 1 <= (_whole(arg) or 0) <= MAX_LENGTH:
            return msg(
                "reward {spec!r}: length takes a target in tokens, a whole number from 1 to {max} (got {value!r})",
                spec=spec,
                max=MAX_LENGTH,
                value=arg,
            )
    elif kind in ("contains", "not_contains"):
        if not arg.strip():
            return msg("reward {spec!r}: {kind} needs the text to look for, e.g. {kind}:Paris", spec=spec, kind=kind)
    elif kind == "match":
        if arg.strip().lower() not in ("", "exact", "fuzzy"):
            return msg("reward {spec!r}: match takes exact or fuzzy (got {value!r})", spec=spec, value=arg)
    elif kind == "python":
        if shared:
            return msg(
                "reward {spec!r}: python rewards run code from a file on this machine, and this app is shared "
                "(--share or a public --host), so they are refused here; use the preset kinds (format, length, "
                "contains, not_contains, match)",
                spec=spec,
            )
        path, func = python_target(arg)
        if not path.endswith(".py") or not func.isidentifier():
            return msg(
                "reward {spec!r}: python takes a .py file and optionally a function, python:FILE.py[:FUNC]", spec=spec
            )
    return None


def _whole(text: str) -> int | None:
    """A whole number written in decimal digits ("²" is a digit but no number), else None."""
    text = text.strip()
    try:
        return int(text) if text.isdecimal() else None
    except ValueError:
        return None


def parse(specs: list[str], tokenizer=None) -> list[Reward]:
    """The rewards of valid specs (settings checked them), each named after its kind (format, format_2, ...), python
    ones with their function loaded (load_function)."""
    out, seen = [], {}
    for spec in specs:
        kind, arg, weight = split_spec(spec)
        if kind == "match":
            arg = arg.strip().lower() or "fuzzy"
        if kind == "length":
            arg = arg.strip()
        seen[kind] = seen.get(kind, 0) + 1
        name = kind if seen[kind] == 1 else f"{kind}_{seen[kind]}"
        func = load_function(*python_target(arg), spec=spec) if kind == "python" else None
        out.append(
            Reward(
                spec=spec,
                kind=kind,
                arg=arg,
                weight=float(weight) if weight else 1.0,
                name=name,
                tokenizer=tokenizer,
                func=func,
            )
        )
    return out


def weights(rewards: list[Reward]) -> list[float]:
    """The weights normalised to sum to 1: the run's reward is then the weighted mean, from 0 to 1."""
    total = sum(r.weight for r in rewards) or 1.0
    return [r.weight / total for r in rewards]


def described(specs: list[str]) -> list[str]:
    """'format:<answer> (weight 0.67)' per spec, with its normalised weight: for the plan and the model card."""
    parts = [split_spec(s) for s in specs]
    raw = [float(w) if w else 1.0 for _, _, w in parts]
    total = sum(raw) or 1.0
    names = [f"{kind}:{arg}" if arg else kind for kind, arg, _ in parts]
    return [f"{name} (weight {w / total:.2g})" for name, w in zip(names, raw, strict=True)]


# --- python rewards: loading, and the check made before a run starts ---


def load_function(path: str, func: str, spec: str = ""):  # (spec: for the messages)
    """The function FUNC of the file at path, imported as a module of its own (its folder on sys.path first, so
    it may import its neighbours)."""
    import importlib.util
    import sys

    file = Path(path).expanduser()
    mod_name = f"lora_lab_reward_{abs(hash(str(file.resolve())))}"
    spec_obj = importlib.util.spec_from_file_location(mod_name, file)
    if spec_obj is None or spec_obj.loader is None:
        raise RewardFailed(msg("reward {spec!r}: {path} cannot be imported as a Python file", spec=spec, path=path))
    module = importlib.util.module_from_spec(spec_obj)
    folder = str(file.resolve().parent)
    sys.path.insert(0, folder)
    try:
        spec_obj.loader.exec_module(module)
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    fn = getattr(module, func, None)
    if not callable(fn):
        raise RewardFailed(msg("reward {spec!r}: {path} has no function {func}", spec=spec, path=path, func=func))
    return fn


_CHECK = """
import sys, traceback
sys.path.insert(0, {src!r})
from lora_demo.train.rewards import RewardFailed, load_function
try:
    load_function({path!r}, {func!r})
except RewardFailed:
    sys.exit(4)
except BaseException as e:
    lines = traceback.format_exception_only(type(e), e)
    print((lines[-1] if lines else type(e).__name__).strip(), file=sys.stderr)
    sys.exit(3)
"""


def file_problems(specs: list[str], timeout: float = 120.0) -> list[Msg]:
    """Each python reward's file exists and imports, and has its function: checked in a separate Python process
    (the app never runs the user's code), before anything loads. One line per problem."""
    import subprocess
    import sys

    out = []
    for spec in specs:
        kind, arg, _ = split_spec(spec)
        if kind != "python":
            continue
        path, func = python_target(arg)
        file = Path(path).expanduser()
        if not file.is_file():
            out.append(msg("reward {spec!r}: {path}: no such file", spec=spec, path=path))
            continue
        src = str(Path(__file__).resolve().parents[2])
        code = _CHECK.format(src=src, path=str(file), func=func)
        try:
            res = subprocess.run(
                [sys.executable, "-c", code],
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
            )
        except subprocess.TimeoutExpired:
            out.append(msg("reward {spec!r}: importing {path} took over {s:.0f} s", spec=spec, path=path, s=timeout))
            continue
        if res.returncode == 4:
            out.append(msg("reward {spec!r}: {path} has no function {func}", spec=spec, path=path, func=func))
        elif res.returncode != 0:
            lines = [line for line in res.stderr.strip().splitlines() if line.strip()]
            why = lines[-1][:300] if lines else f"exit code {res.returncode}"
            out.append(msg("reward {spec!r}: importing {path} failed: {why}", spec=spec, path=path, why=why))
    return out


def absolute(specs: list[str]) -> list[str]:
    """The specs with each python reward's file made absolute (the worker may run from another folder)."""
    out = []
    for spec in specs:
        kind, arg, weight = split_spec(spec)
        if kind == "python":
            path, func = python_target(arg)
            full = str(Path(path).expanduser().resolve())
            spec = f"python:{full}" + ("" if arg.endswith(".py") else f":{func}") + (f"@{weight}" if weight else "")
        out.append(spec)
    return out
