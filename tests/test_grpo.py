"""GRPO (issue 31, part 2) on the CPU with qwen3-tiny: `python -m lora_demo train --method grpo --reward ...` from
the base or continuing an SFT adapter; the preset rewards scoring known answers; each bad input refused with its one
line before anything loads; python rewards refused while the app is shared; a reward that raises mid-run fails the
run with its message and keeps the adapter so far; the plan; the log-prob head at GRPO's temperature."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from lora_demo.errors import InputError, LoraLabError
from lora_demo.io import to_jsonl
from lora_demo.train import grpo as G
from lora_demo.train import rewards as R
from lora_demo.train.runner import Runner
from lora_demo.train.runs import has_adapter, read_progress, read_status
from lora_demo.train.settings import TrainSettings

TINY = dict(
    model="qwen3-tiny",
    dataset="example:persona",
    template="chat",
    max_seq_length=128,
    micro_batch_size=2,
    warmup=1,
    learning_rate=5e-3,
    logging_steps=1,
    probe_rows=1,
    probe_tokens=4,
    grpo_generations=2,
    grpo_max_tokens=8,
    save_steps=-1,
)
GRPO = dict(TINY, method="grpo", rewards=["format:<answer>"])


def _cli(*args, cwd=None, env=None, timeout=600):
    import os

    return subprocess.run(
        [sys.executable, "-m", "lora_demo", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def tok():
    from lora_demo.models import cached_tokenizer

    return cached_tokenizer("qwen3-tiny")


def _one(spec: str, tokenizer=None) -> R.Reward:
    assert R.spec_problem(spec) is None, R.spec_problem(spec)
    return R.parse([spec], tokenizer)[0]


# --- the preset rewards, each on known answers ---


def test_format_regex_scores_whole_answers_and_the_tag_form_gives_partial_credit():
    one_sentence = _one(r"format:^[A-Z][^\n.!?]*\.$")
    assert one_sentence.score("The capital of France is Paris.") == 1.0
    assert one_sentence.score("  The capital of France is Paris.\n") == 1.0  # the answer is stripped
    assert one_sentence.score("The capital is Paris. It is big.") == 0.0
    assert one_sentence.score("the capital is Paris.") == 0.0
    assert one_sentence.score("The capital is Paris") == 0.0
    tag = _one("format:<answer>")
    assert tag.tag == "answer"
    assert tag.score("<answer>42</answer>") == 1.0
    assert tag.score("Sure! <answer>42</answer>") == 0.75  # text outside the tags
    assert tag.score("<answer></answer>") == 0.75  # nothing inside
    assert tag.score("<answer>42") == 0.25  # never closed
    assert tag.score("42</answer>") == 0.0  # no opening tag
    assert tag.score("</answer><answer>") == 0.25  # the closing tag must come after the opening one
    assert tag.score("no tags at all") == 0.0


def test_length_targets_tokens_and_falls_off_linearly(tok):
    ten = _one("length:10", tok)
    text = "one two three four five six seven eight nine ten"
    n = len(tok(text, add_special_tokens=False)["input_ids"])
    assert n == 10  # (one token a word for these)
    assert ten.score(text) == 1.0
    five = " ".join(text.split()[:5])
    assert ten.score(five) == pytest.approx(0.5)
    assert ten.score(text + " " + five) == pytest.approx(0.5)  # 15 tokens: 5 over
    assert ten.score(" ".join([text] * 2)) == 0.0 and ten.score(" ".join([text] * 3)) == 0.0  # 2N and beyond
    assert ten.score("") == 0.0


def test_contains_not_contains_and_match():
    assert _one("contains:Paris").score("the capital is PARIS.") == 1.0
    assert _one("contains:Paris").score("the capital is Lyon.") == 0.0
    assert _one("not_contains:As an AI").score("as an ai, I cannot say") == 0.0
    assert _one("not_contains:As an AI").score("Paris.") == 1.0
    email = _one("contains:me@example.com")  # an @ not followed by a number is no weight
    assert email.weight == 1.0 and email.score("write to ME@example.com") == 1.0
    exact = _one("match:exact")
    assert exact.score("  The answer   is\n42 ", "the answer is 42") == 1.0  # white space and case normalised
    assert exact.score("The answer is 43", "the answer is 42") == 0.0
    fuzzy = _one("match:fuzzy")
    assert fuzzy.score("abcd", "abcd") == 1.0 and fuzzy.score("abcd", "wxyz") == 0.0
    assert fuzzy.score("abcd", "abce") == pytest.approx(0.75)  # difflib: 2·3 matching / 8 characters
    assert _one("match").arg == "fuzzy"
    # As TRL calls them: one float per completion, the row's output as `reference`.
    out = exact(prompts=["p", "p"], completions=["42", "41"], completion_ids=[[1], [2]], reference=["42", "42"])
    assert out == [1.0, 0.0]


def test_weights_are_the_suffix_normalised_to_a_weighted_mean():
    specs = ["format:^Answer: .*$@2", "length:20", "contains:x@0.5e1"]
    parsed = R.parse(specs, tokenizer=None)
    assert [r.weight for r in parsed] == [2.0, 1.0, 5.0]
    assert parsed[0].arg == "^Answer: .*$"  # the .* of the regex is not a weight
    assert R.weights(parsed) == pytest.approx([0.25, 0.125, 0.625])
    assert R.described(specs) == [
        "format:^Answer: .*$ (weight 0.25)",
        "length:20 (weight 0.12)",
        "contains:x (weight 0.62)",
    ]
    assert [r.name for r in R.parse(["format:a", "format:b", "length:3"])] == ["format", "format_2", "length"]


def test_a_regex_that_backtracks_catastrophically_fails_the_run_within_its_timeout():
    """format:REGEX runs with the regex package's timeout: a pattern that backtracks catastrophically on an answer
    (a visitor's, in a shared app) fails the run with its message in about REGEX_TIMEOUT_S, instead of hanging the
    worker where Stop cannot reach it; the adapter so far is saved, while training and in the evaluation after it."""
    slow = _one(r"format:^(a|a)*$")
    assert slow.score("aaaa") == 1.0 and slow.score("ab") == 0.0  # (quick on short answers)
    line = (
        r"The reward format:\^\(a\|a\)\*\$ took over 0\.5 s on one answer at step 3: its regex backtracks "
        r"catastrophically \(overlapping repeats, such as \(a\|a\)\*\); simplify the regex"
    )
    began = time.monotonic()
    with pytest.raises(R.RewardFailed, match=line):
        slow(prompts=["p", "p"], completions=["aaaa", "a" * 40 + "!"], trainer_state=SimpleNamespace(global_step=2))
    assert time.monotonic() - began < 5  # (re takes hours on this answer: the time doubles with each "a")

    class Trainer:  # what train_or_save and evaluate_or_save see of TRL's trainer: its rewards run inside
        state = SimpleNamespace(global_step=2)

        def train(self, resume_from_checkpoint=None):
            slow(completions=["a" * 40 + "!"], trainer_state=self.state)

        evaluate = train

    for call in (lambda save: G.train_or_save(Trainer(), None, save), lambda save: G.evaluate_or_save(Trainer(), save)):
        saved = []
        with pytest.raises(LoraLabError, match=line + r"\. The adapter trained so far \(2 step\(s\)\) is saved"):
            call(lambda saved=saved: saved.append(True))
        assert saved == [True]


def test_regex_rewards_keep_res_meaning_and_are_checked_by_the_engine_that_runs_them():
    import re

    cases = [
        (r"^[A-Z][^\n.!?]*\.$", ["The sky is blue.", "the sky.", "One. Two."]),
        (r"\bParis\b", ["Paris!", "Parisian"]),
        (r"^Answer: \d+$", ["Answer: 42", "Answer: 4 2"]),
        (r"(?i)yes|no", ["YES", "maybe"]),
        (r"^\w+$", ["héllo", "two words"]),
        (r"<answer>.*</answer>", ["<answer>1</answer>", "<answer>\n</answer>"]),
    ]
    for pattern, texts in cases:
        reward = _one(f"format:{pattern}")
        assert [reward.score(t) for t in texts] == [float(re.search(pattern, t.strip()) is not None) for t in texts]
    assert R.spec_problem(r"format:^\p{Lu}") is None and _one(r"format:^\p{Lu}").score("Éclair") == 1.0
    assert "does not compile: missing )" in R.spec_problem("format:(unclosed")


def test_fuzzy_match_compares_the_first_characters_of_each_side():
    """difflib's SequenceMatcher (autojunk off) is cubic on repetitive text: capped, a degenerate answer against a
    repetitive reference costs about a second, not hours."""
    fuzzy = _one("match:fuzzy")
    n = R.FUZZY_CHARS
    assert fuzzy.score("x" * n + " and then something else", "x" * n + " but another ending") == 1.0
    began = time.monotonic()
    assert 0.0 < fuzzy.score("ab" * 50_000, "a" * 100_000) < 1.0
    assert time.monotonic() - began < 15


@pytest.mark.parametrize("arg", ["²", "20²", "٣٣٣٣٣", "-3", "0", "4097", "7.5"])
def test_a_length_that_is_no_whole_number_in_range_is_one_line(arg):
    line = f"reward 'length:{arg}': length takes a target in tokens, a whole number from 1 to 4096 (got '{arg}')"
    assert R.spec_problem(f"length:{arg}") == line
    with pytest.raises(InputError, match="length takes a target in tokens") as e:
        TrainSettings(**{**GRPO, "rewards": [f"length:{arg}"]})
    assert "\n" not in str(e.value)
    assert R.spec_problem("length: 7 ") is None and R.parse(["length: 7 "])[0].arg == "7"


def test_a_python_reward_scores_batches_and_its_failures_say_what_happened(tmp_path):
    f = tmp_path / "judge.py"
    f.write_text(
        "def reward(completions, prompts, references, **kw):\n"
        "    return [1.0 if c.endswith('!') else 0.0 for c in completions]\n"
        "def bad_range(completions, **kw):\n    return [2.0 for _ in completions]\n"
        "def too_few(completions, **kw):\n    return [0.5]\n"
        "def boom(completions, **kw):\n    raise KeyError('no score today')\n"
    )
    good = _one(f"python:{f}")
    assert good(prompts=["a", "b"], completions=["Yes!", "No"], question=["q1", "q2"], reference=["", ""]) == [1, 0]
    for func, match in (
        ("bad_range", r"returned 2\.0 at step 1: rewards must be numbers from 0 to 1"),
        ("too_few", r"returned 1 numbers at step 1 for 2 completions"),
        ("boom", r"raised KeyError at step 1: 'no score today'"),
    ):
        with pytest.raises(R.RewardFailed, match=match):
            _one(f"python:{f}:{func}")(prompts=["a", "b"], completions=["x", "y"])


# --- settings: one line per bad reward, before anything loads ---


@pytest.mark.parametrize(
    ("rewards", "line"),
    [
        ([], r"method grpo needs at least one reward: add --reward KIND:ARG"),
        (["format:(unclosed"], r"reward 'format:\(unclosed': the regex does not compile: missing \)"),
        (["sentiment:happy"], r"reward 'sentiment:happy': unknown kind 'sentiment'; the kinds are format, length"),
        (["length:20@0"], r"reward 'length:20@0': the weight after @ must be a number above 0 and at most 100"),
        (["length:20@1.2.3"], r"the weight after @ must be a number above 0 and at most 100 \(got 1\.2\.3\)"),
        (["length:lots"], r"length takes a target in tokens, a whole number from 1 to 4096 \(got 'lots'\)"),
        (["match:roughly"], r"match takes exact or fuzzy \(got 'roughly'\)"),
        (["contains:"], r"contains needs the text to look for"),
        (["python:judge.txt"], r"python takes a \.py file and optionally a function"),
    ],
)
def test_bad_rewards_are_refused_with_one_line(rewards, line):
    with pytest.raises(InputError, match=line) as e:
        TrainSettings(**{**GRPO, "rewards": rewards})
    assert "\n" not in str(e.value)


def test_grpo_settings_default_and_range():
    s = TrainSettings(**{**GRPO, "grpo_generations": 4})
    assert (s.grpo_generations, s.grpo_max_tokens, s.grpo_temperature) == (4, 8, 1.0)
    assert TrainSettings(model="qwen3-tiny").grpo_max_tokens == 48
    with pytest.raises(InputError, match=r"grpo_generations must be ≥ 2 \(got 1\)"):
        TrainSettings(**{**GRPO, "grpo_generations": 1})
    with pytest.raises(InputError, match=r"method grpo trains in one process here"):
        TrainSettings(**{**GRPO, "num_processes": 2})


def test_another_methods_fields_never_block_a_run():
    """The form keeps every method's fields (hidden for the others): only the chosen method's are checked."""
    other = dict(
        rewards=["sentiment:happy", "length:²", 3],
        grpo_generations=1,
        grpo_max_tokens=0,
        grpo_temperature=0,
        dpo_beta=0,
    )
    assert TrainSettings(model="qwen3-tiny", **other).method == "sft"
    TrainSettings(**{**GRPO, "dpo_beta": -1})
    TrainSettings(**{**TINY, **other, "method": "dpo", "dpo_beta": 0.1, "init_adapter": "runs/sft"})
    with pytest.raises(InputError, match=r"Invalid settings: dpo_beta must be > 0 \(got 0\)\.$"):
        TrainSettings(**{**TINY, **other, "method": "dpo", "init_adapter": "runs/sft"})
    with pytest.raises(InputError, match=r"grpo_max_tokens must be ≥ 1 \(got 0\)") as e:
        TrainSettings(**{**GRPO, **other, "rewards": ["length:²"], "dpo_beta": 0.1})
    assert "grpo_temperature must be > 0" in str(e.value) and "length takes a target" in str(e.value)
    with pytest.raises(InputError, match=r"rewards must be a list of reward specs"):  # (a list, whatever the method)
        TrainSettings(model="qwen3-tiny", rewards="format:<answer>")


def test_python_rewards_are_refused_while_the_app_is_shared(tmp_path, monkeypatch):
    """The app's Runner refuses them at start and resume; the settings never do, so a shared app still reads the
    config of a run trained earlier with one (chat's prompt format, export, continue), whatever the environment."""
    f = tmp_path / "judge.py"
    f.write_text("def reward(completions, **kw):\n    return [0.5] * len(completions)\n")
    spec = f"python:{f}"
    _refused(
        tmp_path, [spec], r"python rewards run code from a file on this machine, and this app is shared", shared=True
    )
    monkeypatch.setenv("LORA_LAB_SHARED", "1")  # (what the app once set: no longer read anywhere)
    s = TrainSettings(**{**GRPO, "rewards": [spec]})
    run_dir = tmp_path / "runs" / "judged"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(s.to_yaml())
    (run_dir / "status.json").write_text(json.dumps({"status": "stopped", "method": "grpo", "started": 1.0}))
    assert TrainSettings.from_yaml(run_dir / "config.yaml").rewards == [spec]
    with pytest.raises(InputError, match=r"Invalid rewards: reward .*judge\.py': python rewards run code from a file"):
        Runner(tmp_path / "runs", tmp_path / "data", shared=True).resume(run_dir)
    with pytest.raises(InputError, match=r"judged has no whole checkpoint to resume from"):  # (the next check)
        Runner(tmp_path / "runs", tmp_path / "data").resume(run_dir)


# --- the runner: bad files refused before anything loads (no run folder is made) ---


def _refused(
    tmp_path, rewards: list[str], match: str, dataset: str = "example:persona", shared: bool = False, **kw
) -> None:
    runs = tmp_path / "runs"
    s = TrainSettings(**{**GRPO, "rewards": rewards, "dataset": dataset, **kw})
    with pytest.raises(InputError, match=match) as e:
        Runner(runs, tmp_path / "data", shared=shared).start(s)
    assert "\n" not in str(e.value)
    made = [p for p in runs.iterdir() if (p / "status.json").exists()] if runs.is_dir() else []
    assert made == [], made


def test_a_reward_file_that_is_missing_or_does_not_import_is_refused(tmp_path):
    _refused(
        tmp_path,
        ["python:nowhere/judge.py"],
        r"Invalid rewards: reward 'python:nowhere/judge.py': "
        r"nowhere/judge.py: no such file\.",
    )
    bad = tmp_path / "bad.py"
    bad.write_text("import math\nraise RuntimeError('judge misconfigured')\n")
    _refused(tmp_path, [f"python:{bad}"], r"importing .*bad\.py failed: RuntimeError: judge misconfigured\.")
    missing = tmp_path / "missing_dep.py"
    missing.write_text("import no_such_module_for_grpo\n")
    _refused(tmp_path, [f"python:{missing}"], r"failed: ModuleNotFoundError: No module named 'no_such_module_for_grpo'")
    nofunc = tmp_path / "nofunc.py"
    nofunc.write_text("def score(completions, **kw):\n    return [0.0] * len(completions)\n")
    _refused(tmp_path, [f"python:{nofunc}"], r"nofunc\.py has no function reward\.")


def test_a_prompt_file_missing_fields_is_refused_naming_the_row(tmp_path):
    f = tmp_path / "prompts.jsonl"
    f.write_text(to_jsonl([{"prompt": "Who are you?"}, {"question": "What is LoRA?"}, {"prompt": " "}]))
    _refused(
        tmp_path,
        ["format:<answer>"],
        r"The prompts have 2 error\(s\), which block training: row 2: prompt is "
        r"missing \(each row needs a prompt or an instruction\); row 3: prompt is empty\.",
        dataset=str(f),
    )
    pairs = tmp_path / "pairs.jsonl"  # a preference file: its prompts, its chosen answers as the reference
    pairs.write_text(to_jsonl([{"prompt": "Hi", "chosen": "Hello!", "rejected": "Go."}, {"prompt": "Bye"}]))
    _refused(
        tmp_path,
        ["match:exact"],
        r"row 2: output is missing or empty, and the match reward compares each "
        r"answer with it",
        dataset=str(pairs),
    )
    _refused(
        tmp_path,
        ["format:<answer>"],
        r"GRPO takes 4 prompts per step \(micro_batch_size 4 × "
        r"gradient_accumulation_steps 1\) and there are only 2 training rows",
        dataset=str(pairs),
        micro_batch_size=4,
    )


def test_a_null_prompt_is_missing_and_a_null_output_takes_chosen(tmp_path):
    rows = [
        {"prompt": None},
        {"instruction": None, "input": "x"},
        {"prompt": None, "instruction": "Hi"},
        {"prompt": "Hi", "output": None, "chosen": "Hello!"},
        {"prompt": "Hi", "output": None},
    ]
    errors = G.check_prompts(rows)["errors"]
    assert [(e["row"], e["message"]) for e in errors] == [
        (1, "row 1: prompt is missing (each row needs a prompt or an instruction)"),
        (2, "row 2: prompt is missing (each row needs a prompt or an instruction)"),
    ]
    assert G.prompt_rows(rows[2:]) == [
        {"instruction": "Hi", "input": "", "output": ""},
        {"instruction": "Hi", "input": "", "output": "Hello!"},
        {"instruction": "Hi", "input": "", "output": ""},
    ]
    assert [e["row"] for e in G.check_prompts(rows[2:], needs_reference=True)["errors"]] == [1, 3]
    f = tmp_path / "prompts.jsonl"
    f.write_text(to_jsonl([{"prompt": "Who are you?"}, {"prompt": None, "input": "LoRA"}]))
    _refused(
        tmp_path,
        ["format:<answer>"],
        r"The prompts have 1 error\(s\), which block training: row 2: prompt is "
        r"missing \(each row needs a prompt or an instruction\)\.$",
        dataset=str(f),
    )


def test_the_reward_file_check_runs_outside_the_runners_lock(tmp_path):
    """Importing a python reward's file (a separate process, up to 2 minutes) never holds Runner.lock: other
    visitors' Start, Resume and runs refresh (reap) go on meanwhile."""
    importing = tmp_path / "importing"
    judge = tmp_path / "slow_judge.py"
    judge.write_text(
        f"import pathlib, time\npathlib.Path({str(importing)!r}).touch()\ntime.sleep(4)\n"
        "def reward(completions, **kw):\n    return [0.0] * len(completions)\n"
    )
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(to_jsonl([{"prompt": None}]))  # refused after the import check: no run starts
    runner = Runner(tmp_path / "runs", tmp_path / "data")
    s = TrainSettings(**{**GRPO, "rewards": [f"python:{judge}"], "dataset": str(prompts)})
    errors = []

    def start():
        try:
            runner.start(s)
        except InputError as e:
            errors.append(str(e))

    thread = threading.Thread(target=start)
    thread.start()
    deadline = time.monotonic() + 60
    while not importing.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert importing.exists()
    assert runner.lock.acquire(timeout=2)  # (from this thread: the start is importing, not holding the lock)
    runner.lock.release()
    assert runner.reap() == []
    thread.join(60)
    assert errors == [
        "The prompts have 1 error(s), which block training: row 1: prompt is missing (each row needs a "
        "prompt or an instruction)."
    ]


def test_train_help_lists_the_grpo_flags():
    out = _cli("train", "--help")
    assert out.returncode == 0 and "--method {sft,dpo,grpo}" in out.stdout
    assert "--reward SPEC [SPEC ...]" in out.stdout and "--grpo-generations" in out.stdout


# --- runs on qwen3-tiny ---


@pytest.fixture(scope="module")
def sft_parent(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("grpo")
    runner = Runner(root / "runs", root / "data")
    run_dir = runner.start(TrainSettings(**{**TINY, "max_steps": 3, "probe_tokens": 0, "run_name": "sft"}))
    assert runner.wait(300)["status"] == "completed"
    return run_dir


@pytest.fixture(scope="module")
def grpo_run(sft_parent) -> tuple[Path, subprocess.CompletedProcess]:
    runs = sft_parent.parent
    out = _cli(
        "train",
        "--runs-dir",
        str(runs),
        "--method",
        "grpo",
        "--continue-from",
        str(sft_parent),
        "--reward",
        "format:<answer>@2",
        "--reward",
        "length:6",
        "--reward",
        "not_contains:sorry",
        "--max-steps",
        "4",
        "--val-fraction",
        "0.1",
        "--eval-steps",
        "100",
        "--grpo-generations",
        "2",
        "--grpo-max-tokens",
        "8",
        "--probe-tokens",
        "4",
        "--save-steps",
        "2",
        "--run-name",
        "grpo",
    )
    return runs / "grpo", out


def test_a_grpo_round_continuing_an_sft_adapter_completes_with_reward_metrics(sft_parent, grpo_run):
    run_dir, out = grpo_run
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "completed: 4/4 steps" in out.stdout and ", reward " in out.stdout
    st = read_status(run_dir)
    assert st["status"] == "completed" and st["method"] == "grpo" and st["parent"] == str(sft_parent)
    assert (st["train_rows"], st["val_rows"]) == (40, 4)
    cfg = TrainSettings.from_yaml(run_dir / "config.yaml")
    assert cfg.method == "grpo" and cfg.init_adapter == str(sft_parent)
    assert cfg.rewards == ["format:<answer>@2", "length:6", "not_contains:sorry"] and cfg.grpo_generations == 2
    # Every training log has the mean reward (a weighted mean: from 0 to 1) and each reward's own mean.
    logs = [p for p in read_progress(run_dir) if p.get("type") == "log"]
    assert len(logs) == 4
    for p in logs:
        assert {
            "loss",
            "reward",
            "reward_std",
            "reward_format",
            "reward_length",
            "reward_not_contains",
            "completion_length",
        } <= set(p), p
        parts = 0.5 * p["reward_format"] + 0.25 * p["reward_length"] + 0.25 * p["reward_not_contains"]
        assert 0.0 <= p["reward"] <= 1.0 and p["reward"] == pytest.approx(parts, abs=1e-5)
        assert p["completion_length"] <= 8
    assert st["reward"] == pytest.approx(logs[-1]["reward"]) and st["first_reward"] == pytest.approx(logs[0]["reward"])
    assert "eval_reward" in st and 0.0 <= st["eval_reward"] <= 1.0
    # The probes answer from step 0 (the parent's answers), TensorBoard has TRL's reward curves.
    probes = [json.loads(line) for line in (run_dir / "probes.jsonl").read_text().splitlines()]
    assert probes[0]["step"] == 0 and probes[-1]["kind"] == "final"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert {"train/reward", "train/rewards/format/mean", "train/rewards/length/mean"} <= set(events.Tags()["scalars"])
    # The adapter moved off its parent, and the checkpoints hold adapters.
    from safetensors.torch import load_file

    child, parent = (
        load_file(str(run_dir / "adapter_model.safetensors")),
        load_file(str(sft_parent / "adapter_model.safetensors")),
    )
    assert child.keys() == parent.keys() and max(float((child[k] - parent[k]).abs().max()) for k in child) > 1e-6
    assert (run_dir / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors").is_file()


def test_the_model_card_says_grpo_and_lists_the_rewards(sft_parent, grpo_run):
    run_dir, _ = grpo_run
    card = (run_dir / "README.md").read_text()
    assert "\n- grpo\n" in card.split("---")[1]  # the tags
    assert "Trained with GRPO (reward tuning) on 44 prompts from `example:persona`" in card
    assert "starting from its parent adapter" in card
    assert "`format:<answer> (weight 0.5)`, `length:6 (weight 0.25)`, `not_contains:sorry (weight 0.25)`" in card
    assert "final GRPO mean reward" in card and f"Continued from the adapter `{sft_parent}`" in card


def test_a_reward_that_raises_mid_run_fails_the_run_and_keeps_the_adapter(tmp_path):
    judge = tmp_path / "judge.py"
    judge.write_text(
        "calls = []\n\ndef reward(completions, prompts, references, **kw):\n"
        "    calls.append(1)\n    if len(calls) == 2:\n        raise ValueError('the judge is out to lunch')\n"
        "    return [0.5 if c else 0.0 for c in completions]\n"
    )
    runner = Runner(tmp_path / "runs", tmp_path / "data")
    s = TrainSettings(
        **{
            **GRPO,
            "rewards": ["format:<answer>", f"python:{judge}:reward"],
            "max_steps": 4,
            "probe_tokens": 0,
            "val_fraction": 0,
            "run_name": "boom",
        }
    )
    run_dir = runner.start(s)
    st = runner.wait(300)
    assert st["status"] == "failed", st
    assert st["error"] == (
        f"The reward python:{judge}:reward raised ValueError at step 2: the judge is out to lunch. "
        "The adapter trained so far (1 step(s)) is saved in the run folder."
    )
    assert has_adapter(run_dir) and st["step"] == 1
    assert json.loads((run_dir / "adapter_config.json").read_text())["base_model_name_or_path"] == "qwen3-tiny"
    assert "status: failed" in (run_dir / "README.md").read_text()


def test_a_reward_that_raises_in_the_evaluation_after_training_keeps_the_adapter(tmp_path):
    """GRPO's evaluate samples and scores the held-out prompts: a reward failing there fails the run with its
    message and the adapter saved, as during training."""
    judge = tmp_path / "judge.py"
    judge.write_text(
        "calls = []\n\ndef reward(completions, prompts, references, **kw):\n"
        "    calls.append(1)\n    if len(calls) == 2:\n        raise ValueError('no held-out scores')\n"
        "    return [0.5] * len(completions)\n"
    )
    runner = Runner(tmp_path / "runs", tmp_path / "data")
    s = TrainSettings(
        **{
            **GRPO,
            "rewards": [f"python:{judge}"],
            "max_steps": 1,
            "probe_tokens": 0,
            "val_fraction": 0.1,
            "eval_steps": 100,
            "run_name": "eval-boom",
        }
    )
    run_dir = runner.start(s)
    st = runner.wait(300)
    assert st["status"] == "failed", st
    assert st["error"].startswith(
        f"The reward python:{judge} raised ValueError at step 2: no held-out scores. The "
        "adapter trained so far (1 step(s)) is saved in the run folder."
    ), st["error"]
    assert has_adapter(run_dir) and st["step"] == 1 and st["val_rows"] == 4


def test_a_grpo_round_from_the_base_model_in_alpaca(tmp_path):
    """No parent: new factors, and the Alpaca template (its prompt ids start with the tokenizer's special tokens, as
    prompt_ids makes them). A reward TRL cannot satisfy still trains (all-equal groups add no gradient)."""
    runner = Runner(tmp_path / "runs", tmp_path / "data")
    s = TrainSettings(
        **{
            **GRPO,
            "template": "alpaca",
            "rewards": ["contains:zzzz-never"],
            "max_steps": 2,
            "val_fraction": 0,
            "run_name": "base",
        }
    )
    run_dir = runner.start(s)
    st = runner.wait(300)
    assert st["status"] == "completed", st.get("error")
    assert st["reward"] == 0.0 and "parent" not in st
    assert "starting from the base model (new LoRA factors)" in (run_dir / "README.md").read_text()


# --- the plan and the head ---


def test_the_plan_of_a_grpo_round():
    from lora_demo.data import load_example
    from lora_demo.train.plan import plan_markdown, plan_run

    s = TrainSettings(
        **{
            **GRPO,
            "rewards": ["format:<answer>@3", "length:40"],
            "num_epochs": 2,
            "val_fraction": 0.1,
            "grpo_generations": 4,
            "grpo_max_tokens": 32,
            "max_steps": -1,
        }
    )
    plan = plan_run(s, load_example("persona"))
    assert plan["errors"] == [] and plan["method"] == "grpo" and plan["backend"] == "transformers"
    assert (plan["prompts"], plan["train_rows"], plan["val_rows"]) == (44, 40, 4)
    assert (plan["steps_per_epoch"], plan["total_steps"], plan["effective_batch"]) == (20, 40, 2)
    assert plan["generations"] == 4
    assert plan["rewards"] == ["format:<answer> (weight 0.75)", "length:40 (weight 0.25)"]
    notes = " ".join(plan["notes"])
    assert (
        "GRPO on 44 prompts from example:persona (40 trained on, 4 held out): 40 optimizer steps of 2 prompt(s), "
        "each answered 4 times (up to 32 new tokens, temperature 1.0)" in notes
    )
    assert (
        "Rewards (the run's reward is their weighted mean, from 0 to 1): format:<answer> (weight 0.75); "
        "length:40 (weight 0.25)." in notes
    )
    assert "each step samples 8 answers (2 prompt(s) × 4) of up to 32 new tokens" in notes
    assert "Starts from the base model" in notes
    few = plan_run(TrainSettings(**{**GRPO, "max_steps": 3}), load_example("persona")[:6])
    assert any("Only 6 prompt(s)" in w for w in few["warnings"]) and any(
        "Only 3 optimizer step(s)" in w for w in few["warnings"]
    )
    zh = plan_markdown(plan, "zh")
    assert "奖励" in zh and "提示词" in zh


def test_the_plain_head_scores_at_grpos_temperature():
    import torch
    from peft import get_peft_model

    from lora_demo.models import load_model
    from lora_demo.train.dpo import plain_lm_head
    from lora_demo.train.lora_config import lora_config

    lm = load_model("qwen3-tiny", dtype="fp32", device="cpu")
    model = get_peft_model(lm.model, lora_config(TrainSettings(**TINY)))
    ids = torch.tensor([[9707, 11, 1879, 0, 374, 264, 1273]])
    labels = ids.masked_fill(torch.tensor([[0, 0, 0, 1, 1, 1, 1]]) == 0, -100)
    with torch.no_grad():
        want = torch.log_softmax(model(input_ids=ids).logits[:, :-1].float() / 0.7, -1)
    plain_lm_head(model.get_base_model(), outputs=("log_probs", "entropy"), temperature=0.7)
    out = model(input_ids=ids, labels=labels, fused_lm_head=True)
    mask = labels[:, 1:] != -100
    assert torch.allclose(out.log_probs, want.gather(-1, ids[:, 1:, None])[..., 0] * mask, atol=1e-5)
    assert out.mean_logits is None and out.entropy is not None
