"""DPO (issue 31) on the CPU with qwen3-tiny: an SFT run, blind votes cast on it with the judge's own code, then
`python -m lora_demo train --method dpo --continue-from RUN --dataset votes:RUN`; the pairs' checks, each refusal
before anything loads, the plan, and the log-prob head that stands in for TRL's Triton kernel."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from lora_demo.data import load_example
from lora_demo.data.preferences import check_pairs, resolve_pairs
from lora_demo.errors import InputError
from lora_demo.io import to_jsonl
from lora_demo.judge import Ballots, VoteStore, dpo_pairs
from lora_demo.train.runner import Runner
from lora_demo.train.runs import read_progress, read_status
from lora_demo.train.settings import TrainSettings

TINY = dict(
    model="qwen3-tiny",
    dataset="example:persona",
    template="chat",
    max_seq_length=128,
    micro_batch_size=4,
    warmup=2,
    learning_rate=5e-3,
    logging_steps=1,
)
EVASIVE = "I cannot say, sorry ({i})."


def _cli(*args, cwd=None, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "lora_demo", *args], capture_output=True, text=True, timeout=timeout, cwd=cwd
    )


def cast_votes(run_dir: Path, rows: list[dict], verdicts: list[str]) -> None:
    """Blind votes on run_dir, dealt and cast by the judge's own Ballots: base answers evasive, tuned answers the
    rows' outputs; verdict "tuned" / "base" picks that side, "tie" / "both_bad" as they are."""
    ballots = Ballots(random.Random(0))
    for i, (row, verdict) in enumerate(zip(rows, verdicts, strict=True)):
        b = ballots.deal(
            str(run_dir),
            "qwen3-tiny",
            row["instruction"],
            EVASIVE.format(i=i),
            row["output"],
            {"temperature": 0.7},
            0,
            input=row.get("input", ""),
        )
        tuned_side = "A" if b.a == row["output"] else "B"
        choice = {"tuned": tuned_side, "base": "B" if tuned_side == "A" else "A"}.get(verdict, verdict)
        ballots.cast(b.id, choice)


@pytest.fixture(scope="module")
def parent(tmp_path_factory) -> Path:
    """A 6-step SFT run on the persona rows, with 12 votes for its answers and a tie and a "both bad" vote."""
    root = tmp_path_factory.mktemp("dpo")
    runner = Runner(root / "runs", root / "data")
    run_dir = runner.start(TrainSettings(**TINY, max_steps=6, probe_rows=1, probe_tokens=8, run_name="sft"))
    assert runner.wait(300)["status"] == "completed"
    cast_votes(run_dir, load_example("persona")[:14], ["tuned"] * 12 + ["tie", "both_bad"])
    return run_dir


@pytest.fixture(scope="module")
def dpo_run(parent) -> tuple[Path, subprocess.CompletedProcess]:
    runs = parent.parent
    out = _cli(
        "train",
        "--runs-dir",
        str(runs),
        "--method",
        "dpo",
        "--continue-from",
        str(parent),
        "--dataset",
        "votes:sft",
        "--max-steps",
        "10",
        "--val-fraction",
        "0.2",
        "--run-name",
        "dpo",
    )
    return runs / "dpo", out


def test_a_dpo_round_from_the_votes_completes_and_the_margin_grows(parent, dpo_run):
    run_dir, out = dpo_run
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "completed: 10/10 steps" in out.stdout
    st = read_status(run_dir)
    assert st["status"] == "completed" and st["method"] == "dpo" and st["parent"] == str(parent)
    assert (st["train_rows"], st["val_rows"]) == (10, 2)  # 12 decisive votes; the tie and "both bad" give no pair
    cfg = TrainSettings.from_yaml(run_dir / "config.yaml")
    assert cfg.method == "dpo" and cfg.init_adapter == str(parent) and cfg.dpo_beta == 0.1
    pairs = [json.loads(line) for line in (run_dir / "data" / "train.jsonl").read_text().splitlines()]
    assert all(set(p) == {"prompt", "chosen", "rejected"} for p in pairs) and len(pairs) == 10
    # The metrics reach progress.jsonl as the loss does: every training log has the reward margin and accuracy.
    logs = [p for p in read_progress(run_dir) if p.get("type") == "log"]
    assert len(logs) == 10 and all(
        {"loss", "reward_margin", "reward_accuracy", "reward_chosen", "reward_rejected"} <= set(p) for p in logs
    )
    assert logs[0]["reward_margin"] == 0.0 and logs[0]["loss"] == pytest.approx(0.6931, abs=1e-3)  # policy == ref
    first, last = logs[0]["reward_margin"], logs[-1]["reward_margin"]
    assert last > first + 1.0 and logs[-1]["reward_accuracy"] == 1.0, (first, last)
    assert sum(p["reward_margin"] for p in logs[-3:]) > sum(p["reward_margin"] for p in logs[:3])
    evals = [p for p in read_progress(run_dir) if p.get("type") == "eval"]
    assert evals and "eval_reward_margin" in evals[-1] and st["eval_loss"] > 0
    assert st["reward_margin"] == pytest.approx(last) and st["final_loss"] < st["first_loss"]
    # The probes ran (the parent's answers at step 0), and TensorBoard has the DPO curves.
    assert any(p["step"] == 0 for p in map(json.loads, (run_dir / "probes.jsonl").read_text().splitlines()))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert {"train/loss", "train/rewards/margins", "train/rewards/accuracies"} <= set(events.Tags()["scalars"])


def test_the_dpo_adapter_differs_from_its_parent_and_keeps_no_reference_copy(parent, dpo_run):
    from safetensors.torch import load_file

    run_dir, _ = dpo_run
    child, base = (
        load_file(str(run_dir / "adapter_model.safetensors")),
        load_file(str(parent / "adapter_model.safetensors")),
    )
    assert child.keys() == base.keys()
    assert max(float((child[k] - base[k]).abs().max()) for k in child) > 1e-4
    # Only the trained adapter is saved (TRL's frozen "ref" copy of the parent stays out), checkpoints too.
    assert not (run_dir / "ref").exists()
    ckpts = sorted((run_dir / "checkpoints").glob("checkpoint-*"))
    assert ckpts and all(not (c / "ref").exists() and (c / "adapter_model.safetensors").is_file() for c in ckpts)
    assert json.loads((run_dir / "adapter_config.json").read_text())["base_model_name_or_path"] == "qwen3-tiny"


def test_the_model_card_says_dpo_and_names_the_pairs(parent, dpo_run):
    run_dir, _ = dpo_run
    card = (run_dir / "README.md").read_text()
    assert "\n- dpo\n" in card.split("---")[1]  # the tags
    assert "Trained with DPO on 12 preference pairs from `votes:sft`" in card
    assert f"Continued from the adapter `{parent}`" in card and "final DPO reward margin" in card


def test_votes_become_pairs_through_the_judges_exporter(tmp_path):
    run = tmp_path / "runs" / "voted"
    run.mkdir(parents=True)
    rows = [{"instruction": f"Question {i}?", "input": "", "output": f"Answer {i}."} for i in range(4)]
    rows.append({"instruction": "Summarise:", "input": "LoRA trains two small matrices.", "output": "Small factors."})
    cast_votes(run, [*rows, rows[0], rows[1]], ["tuned", "tuned", "base", "tuned", "tuned", "tie", "both_bad"])
    votes = VoteStore(run).votes()
    assert len(votes) == 7
    pairs = resolve_pairs("votes:voted", tmp_path / "runs")
    assert len(pairs) == 5  # the tie and the "both bad" vote give none
    assert pairs[0] == {"prompt": "Question 0?", "chosen": "Answer 0.", "rejected": EVASIVE.format(i=0)}
    assert pairs[2] == {"prompt": "Question 2?", "chosen": EVASIVE.format(i=2), "rejected": "Answer 2."}  # base won
    # A vote on a row with an input keeps it apart (prompted as that row was trained); otherwise the export's pair.
    assert pairs[4] == {
        "prompt": "Summarise:",
        "input": "LoRA trains two small matrices.",
        "chosen": "Small factors.",
        "rejected": EVASIVE.format(i=4),
    }
    assert pairs[:4] == dpo_pairs(votes)[:4]
    # votes: alone is the parent's votes; a run folder may be named by its path too.
    assert resolve_pairs("votes:", tmp_path / "elsewhere", init_adapter=str(run)) == pairs
    assert resolve_pairs(f"votes:{run}", tmp_path / "elsewhere") == pairs
    assert check_pairs(pairs)["errors"] == []
    assert "Only 5 preference pair(s)" in check_pairs(pairs)["warnings"][0]["message"]  # a warning, not an error


# --- bad input: one line each, refused before anything loads (no run folder is made) ---


def _refused(tmp_path, dataset: str, match: str, runs_dir: Path | None = None, **kw) -> None:
    runs = runs_dir or tmp_path / "runs"
    runner = Runner(runs, tmp_path / "data")
    s = TrainSettings(**{**TINY, "method": "dpo", "dataset": dataset, "init_adapter": str(tmp_path / "parent"), **kw})
    with pytest.raises(InputError, match=match) as e:
        runner.start(s)
    assert "\n" not in str(e.value)
    made = [p for p in runs.iterdir() if (p / "status.json").exists()] if runs.is_dir() else []
    assert made == [], made


def _file(tmp_path, name: str, records) -> str:
    path = tmp_path / name
    path.write_text(records if isinstance(records, str) else to_jsonl(records))
    return str(path)


def test_a_pair_missing_a_field_is_refused_naming_the_row_and_the_field(tmp_path):
    good = {"prompt": "Who are you?", "chosen": "Lumi.", "rejected": "No idea."}
    f = _file(tmp_path, "pairs.jsonl", [good, {"prompt": "What is LoRA?", "chosen": "Low-rank adapters."}])
    _refused(tmp_path, f, r"The preference pairs have 1 error\(s\), which block training: row 2: rejected is missing\.")
    f = _file(tmp_path, "pairs.csv", "prompt,chosen,rejected\nWho are you?,,No idea.\n")
    _refused(tmp_path, f, r"row 1: chosen is empty")


def test_identical_chosen_and_rejected_is_refused(tmp_path):
    f = _file(tmp_path, "pairs.json", json.dumps([{"prompt": "Hi", "chosen": "Hello!", "rejected": " Hello! "}]))
    _refused(tmp_path, f, r"row 1: chosen and rejected are the same text, so the pair teaches nothing")


def test_empty_votes_and_an_empty_file_are_refused(tmp_path):
    runs = tmp_path / "runs"
    (runs / "novotes").mkdir(parents=True)
    (runs / "novotes" / "votes.jsonl").write_text("")
    _refused(tmp_path, "votes:novotes", r"novotes has no votes to learn from \(votes.jsonl is missing or empty\)", runs)
    (runs / "ties").mkdir()
    row = {"instruction": "Q?", "input": "", "output": "A."}
    cast_votes(runs / "ties", [row, row], ["tie", "both_bad"])
    _refused(tmp_path, "votes:ties", r'ties has 2 vote\(s\) but none for one side: ties and "both bad" give no', runs)
    _refused(tmp_path, "votes:nosuchrun", r"votes:nosuchrun: no such run", runs)
    _refused(tmp_path, _file(tmp_path, "empty.jsonl", ""), r"empty.jsonl is empty: it holds no rows")
    _refused(tmp_path, "example:persona", r"DPO trains on preference pairs, and 'example:persona' is none: use votes:")


def test_dpo_without_a_parent_is_refused_with_the_flag_to_add(tmp_path):
    with pytest.raises(
        InputError, match=r"method dpo starts from an SFT adapter and none is given: add --continue-from"
    ):
        TrainSettings(**{**TINY, "method": "dpo"})
    with pytest.raises(InputError, match=r"method must be one of sft, dpo, grpo \(got 'ppo'\)"):
        TrainSettings(**{**TINY, "method": "ppo"})
    with pytest.raises(InputError, match=r"method dpo trains in one process here"):
        TrainSettings(**{**TINY, "method": "dpo", "init_adapter": "x", "num_processes": 2})
    f = _file(tmp_path, "pairs.jsonl", [{"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."}])
    out = _cli(
        "train", "--runs-dir", str(tmp_path / "runs"), "--model", "qwen3-tiny", "--method", "dpo", "--dataset", f
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "method dpo starts from an SFT adapter and none is given: add --continue-from RUN" in out.stderr
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_train_help_lists_the_method_and_beta():
    out = _cli("train", "--help")
    assert out.returncode == 0 and "--method {sft,dpo,grpo}" in out.stdout and "--dpo-beta" in out.stdout


# --- the plan and the log-prob head ---


def test_the_plan_of_a_dpo_round(parent):
    from lora_demo.train.plan import plan_markdown, plan_run
    from lora_demo.train.runner import resolve_data

    s = TrainSettings(
        **{
            **TINY,
            "method": "dpo",
            "dataset": "votes:sft",
            "init_adapter": str(parent),
            "micro_batch_size": 2,
            "num_epochs": 2,
        }
    )
    pairs = resolve_data(s, runs_dir=parent.parent)
    plan = plan_run(s, pairs)
    assert plan["errors"] == [] and plan["method"] == "dpo" and plan["backend"] == "transformers"
    assert (plan["pairs"], plan["train_rows"], plan["total_steps"]) == (12, 12, 12)
    assert any("Only 12 preference pair(s)" in w for w in plan["warnings"])
    notes = " ".join(plan["notes"])
    assert "DPO on 12 preference pairs from votes:sft" in notes
    assert f"Reference model: the parent adapter as it starts ({parent})" in notes
    assert "no second copy of the model" in notes
    assert "参考模型" in plan_markdown(plan, "zh") and "偏好对" in plan_markdown(plan, "zh")


def test_the_plain_log_prob_head_equals_the_models_own_log_softmax():
    import torch
    from peft import get_peft_model

    from lora_demo.models import load_model
    from lora_demo.train.dpo import plain_lm_head
    from lora_demo.train.lora_config import lora_config

    lm = load_model("qwen3-tiny", dtype="fp32", device="cpu")
    model = get_peft_model(lm.model, lora_config(TrainSettings(**TINY)))
    ids = torch.tensor([[9707, 11, 1879, 0, 374, 264, 1273], [151644, 872, 198, 3838, 374, 697, 829]])
    labels = ids.masked_fill(torch.tensor([[0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1, 1]]) == 0, -100)
    with torch.no_grad():
        want = torch.log_softmax(model(input_ids=ids).logits[:, :-1].float(), -1)
    plain_lm_head(model.get_base_model())
    out = model(input_ids=ids, labels=labels, fused_lm_head=True)
    mask = labels[:, 1:] != -100
    expected = want.gather(-1, ids[:, 1:, None])[..., 0] * mask
    assert torch.allclose(out.log_probs, expected, atol=1e-5)
    assert torch.equal(out.is_top1, (want.argmax(-1) == ids[:, 1:]) & mask)
    out.loss.backward()  # gradients reach the LoRA factors (B: A gets none while B is still 0)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)
    assert model(input_ids=ids).logits.shape[-1] == want.shape[-1]  # without fused_lm_head: the model's own forward


# --- the page's way in (issue 31): the Train form's method, "Train DPO from these votes", preference sets ---


def _lab(runs: Path, data: Path):
    from lora_demo.engine import AppSettings, LabEngine

    return LabEngine(AppSettings(runs_dir=str(runs), data_dir=str(data)))


def test_train_dpo_from_the_votes_sets_a_dpo_round_the_plan_accepts(parent, tmp_path):
    """The Chat tab's button: settings continuing from the voted run, on its votes; the engine's plan (which the
    Check plan button shows) reads the votes as pairs, not as a dataset name it cannot find."""
    lab = _lab(parent.parent, tmp_path / "data")
    s = lab.dpo_from_votes(str(parent))
    assert (s.method, s.dataset, Path(s.init_adapter).name) == ("dpo", "votes:", parent.name)
    plan = lab.plan(s)
    assert plan["method"] == "dpo" and plan["pairs"] == 12 and not plan["errors"], plan
    assert any("Reference model" in str(n) for n in plan["notes"])
    assert [v for _, v in lab.preference_sources() if v.startswith("votes:")] == ["votes:sft"]


def test_train_dpo_from_a_run_without_votes_says_to_vote_first(parent, tmp_path):
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(parent, runs / "unvoted", ignore=shutil.ignore_patterns("votes*.jsonl"))
    lab = _lab(runs, tmp_path / "data")
    with pytest.raises(InputError, match="no votes to learn from"):
        lab.dpo_from_votes(str(runs / "unvoted"))
    assert lab.preference_sources() == []


def test_a_preference_file_is_saved_as_a_set_a_dpo_run_can_pick(tmp_path):
    lab = _lab(tmp_path / "runs", tmp_path / "data")
    pairs = [{"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(3)]
    assert lab.import_preferences(pairs, "mine") == ("pairs:mine", 3)
    assert ("pairs:mine", "pairs:mine") in lab.preference_sources()
    assert resolve_pairs("pairs:mine", data_dir=tmp_path / "data") == pairs
    assert "mine" not in lab.datasets.names()  # not an instruction dataset
    bad = [*pairs, {"prompt": "q", "chosen": "same", "rejected": "same"}]
    with pytest.raises(InputError, match="row 4: chosen and rejected are the same"):
        lab.import_preferences(bad, "broken")
    assert not (tmp_path / "data" / "preferences" / "broken.jsonl").exists()
    with pytest.raises(InputError, match="no such preference set"):
        resolve_pairs("pairs:nothing", data_dir=tmp_path / "data")


def test_a_symlinked_preference_set_is_never_read(tmp_path):
    lab = _lab(tmp_path / "runs", tmp_path / "data")
    outside = tmp_path / "secret.jsonl"
    outside.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    (tmp_path / "data" / "preferences").mkdir()
    (tmp_path / "data" / "preferences" / "leak.jsonl").symlink_to(outside)
    assert lab.preference_sources() == []
    with pytest.raises(InputError, match="points outside"):
        resolve_pairs("pairs:leak", data_dir=tmp_path / "data")


def test_the_train_forms_method_switch_offers_the_preference_sources(parent, tmp_path):
    from lora_demo.ui.train_tab import FORM, TrainActions

    act = TrainActions(_lab(parent.parent, tmp_path / "data"))
    pick, beta, grpo, said = act.method_changed("dpo", "example:persona", "")
    values = [c[1] for c in pick.choices]
    assert values[:2] == ["votes:", "votes:sft"] and pick.value == "votes:"
    assert beta.visible is True and "SFT adapter" in said
    pick, beta, grpo, said = act.method_changed("sft", "votes:", "")
    assert pick.value == "example:persona" and beta.visible is False and grpo.visible is False and said == ""
    assert act.method_changed("grpo", "example:persona", "")[2].visible is True
    *form, told = act.dpo_from_votes(str(parent))
    assert form[FORM.index("method")] == "dpo" and form[FORM.index("dataset")].value == "votes:"
    assert "DPO" in told


def test_a_votes_dataset_never_reads_outside_the_allowed_folders(parent, tmp_path):
    """votes:<path> names a folder: one outside the runs/data folders is refused before anything is read, whether
    given absolute or relative (runs/../x exists as a folder), and a run's name means the runs folder's run."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "votes.jsonl").write_text((parent / "votes.jsonl").read_text())
    lab = _lab(parent.parent, tmp_path / "data")
    base = lab.dpo_from_votes(str(parent)).to_dict()
    for name in (str(outside), f"../{outside.name}", "/etc", "../" + parent.parent.name + "/../outside"):
        s = TrainSettings.from_dict({**base, "dataset": f"votes:{name}"})
        with pytest.raises(InputError, match="outside|not allowed|allowed folders|no such"):
            lab.plan(s)
    s = TrainSettings.from_dict({**base, "dataset": "votes:sft"})
    assert lab.plan(s)["pairs"] == 12
    with pytest.raises(InputError, match="only the DPO method"):
        lab.plan(TrainSettings.from_dict({**base, "method": "sft", "dataset": "votes:sft"}))


def test_train_dpo_from_votes_on_a_parent_trained_over_gpus_runs_in_one_process(parent, tmp_path):
    import shutil

    import yaml

    runs = tmp_path / "runs"
    shutil.copytree(parent, runs / "ddp")
    cfg = yaml.safe_load((runs / "ddp" / "config.yaml").read_text())
    (runs / "ddp" / "config.yaml").write_text(yaml.safe_dump({**cfg, "num_processes": 2}))
    s = _lab(runs, tmp_path / "data").dpo_from_votes(str(runs / "ddp"))
    assert (s.method, s.num_processes, s.num_nodes) == ("dpo", 1, 1)


def test_preference_sets_get_a_safe_name_and_never_replace_another(tmp_path):
    lab = _lab(tmp_path / "runs", tmp_path / "data")
    pairs = [{"prompt": "q", "chosen": "good", "rejected": "bad"}]
    assert lab.import_preferences(pairs, "votes (1)")[0] == "pairs:votes-1"
    assert lab.import_preferences(pairs, "votes (1)")[0] == "pairs:votes-1-2"
    assert len(resolve_pairs("pairs:votes-1", data_dir=tmp_path / "data")) == 1


def test_an_empty_hidden_field_of_another_method_never_blocks_a_run():
    from lora_demo.ui.train_tab import FORM, settings_from_form

    values = dict(TrainSettings().to_dict(), probe_prompts="", dpo_beta=None, grpo_generations=None, rewards=None)
    s = settings_from_form([values[k] for k in FORM])
    assert s.method == "sft" and s.dpo_beta == 0.1 and s.rewards == []
    with pytest.raises(InputError, match="DPO beta is empty"):
        settings_from_form([{**values, "method": "dpo"}[k] for k in FORM])
