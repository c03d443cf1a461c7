"""Batching (lora_demo/train/batching.py): padding-free rows stay independent, the micro batch follows free memory
while the effective batch stays the user's, and tokens are counted without the GPU."""

from __future__ import annotations

import pytest

from lora_demo.train.batching import (
    TOKEN_BUDGET,
    choose_batching,
    choose_micro_batch,
    sft_batching_args,
    worst_tokens,
)
from lora_demo.train.runner import Runner
from lora_demo.train.runs import read_progress, read_status
from lora_demo.train.settings import TrainSettings

TINY = dict(
    model="qwen3-tiny",
    dataset="example:persona",
    max_seq_length=128,
    warmup=0,
    learning_rate=5e-3,
    logging_steps=1,
    seed=3407,
)
P17 = {"hidden_size": 2048, "num_layers": 28, "vocab_size": 151936}  # Qwen3-1.7B


def _losses(run_dir) -> list[float]:
    return [p["loss"] for p in read_progress(run_dir) if p.get("type") == "log" and "loss" in p]


def test_padding_free_and_padded_runs_give_the_same_losses(tmp_path):
    """Rows of different lengths in one micro-batch: concatenated with position ids (padding-free) they give the
    padded batch's losses, step after step, so no row attends to another; and the steps hold the same rows."""
    runner = Runner(tmp_path / "runs", tmp_path / "data")
    common = dict(**TINY, micro_batch_size=4, gradient_accumulation_steps=2, max_steps=3)
    padded = runner.start(TrainSettings(**common, padding_free=False, run_name="padded"))
    assert runner.wait(300)["status"] == "completed", (padded / "train.log").read_text()[-2000:]
    free = runner.start(TrainSettings(**common, padding_free=True, run_name="free"))
    st = runner.wait(300)
    assert st["status"] == "completed", (free / "train.log").read_text()[-2000:]
    assert st["batching"] == "padding-free" and read_status(padded)["batching"] == "padded"
    assert len(_losses(free)) == 3
    assert _losses(free) == pytest.approx(_losses(padded), rel=2e-4)
    # A run where rows leaked into each other would differ: packing (which changes the rows of each step and lets
    # the packer join rows) is the control that the comparison can fail.
    packed = runner.start(TrainSettings(**common, packing=True, run_name="packed"))
    assert runner.wait(300)["status"] == "completed"
    assert _losses(packed)[0] != pytest.approx(_losses(padded)[0], rel=2e-4)


def test_first_step_loss_of_a_padding_free_batch_is_the_mean_over_rows_alone():
    """The same check without the Trainer: one padding-free forward equals the rows run one at a time."""
    import torch
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from lora_demo.data import build_example, load_example
    from lora_demo.models import load_model

    lm = load_model("qwen3-tiny")
    rows = load_example("persona")[:5]
    exs = [build_example(r, lm.tokenizer, "alpaca", 128) for r in rows]
    feats = [{"input_ids": e.input_ids, "labels": e.labels} for e in exs]
    batch = DataCollatorForLanguageModeling(pad_token_id=lm.tokenizer.pad_token_id, padding_free=True)(feats)
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch
    lm.model.eval()
    with torch.no_grad():
        # use_cache=False as in training: transformers builds the block-diagonal mask only without a KV cache
        logits = lm.model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        start = 0
        for e in exs:
            n = len(e.input_ids)
            alone = lm.model(input_ids=torch.tensor([e.input_ids])).logits[0]
            assert torch.allclose(logits[start : start + n], alone, atol=2e-4), f"row at {start} saw another row"
            start += n
        # Without position ids the rows would see each other: the check can fail.
        leaky = lm.model(input_ids=batch["input_ids"], use_cache=False).logits[0]
        n0 = len(exs[0].input_ids)
        assert not torch.allclose(leaky[n0 : n0 + 5], logits[n0 : n0 + 5], atol=2e-4)


def test_micro_batch_keeps_the_effective_batch_and_follows_memory():
    lengths = [60, 120, 300, 500, 80, 90, 2048, 400]
    gib = 2**30
    # Short rows, a big GPU: the whole effective batch in one micro-batch.
    s = TrainSettings(**{**TINY, "micro_batch_size": 2, "gradient_accumulation_steps": 4, "max_seq_length": 512})
    c = choose_batching(s, lengths[:6], "cuda", "unsloth", P17, 100 * gib)
    assert (c.micro_batch_size, c.gradient_accumulation_steps, c.auto) == (8, 1, True)
    assert c.effective_batch == 8 and c.mode == "padding-free"
    # Little free memory: a smaller divisor, accumulation raised to keep 8.
    c = choose_batching(s, lengths[:6], "cuda", "unsloth", P17, 4 * gib)
    assert c.effective_batch == 8 and c.micro_batch_size < 8 and 8 % c.micro_batch_size == 0
    # The token budget bounds long rows even with unlimited memory.
    long = TrainSettings(**{**TINY, "micro_batch_size": 4, "gradient_accumulation_steps": 4, "max_seq_length": 2048})
    c = choose_batching(long, [2048] * 32, "cuda", "unsloth", P17, 1000 * gib)
    assert c.micro_batch_size * 2048 <= TOKEN_BUDGET and c.effective_batch == 16
    # Off, or on the CPU: the user's split.
    off = TrainSettings(**{**TINY, "micro_batch_size": 2, "gradient_accumulation_steps": 4, "auto_micro_batch": False})
    assert choose_batching(off, lengths, "cuda", "unsloth", P17, 100 * gib).micro_batch_size == 2
    cpu = choose_batching(s, lengths, "cpu", "transformers", None, None)
    assert (cpu.micro_batch_size, cpu.gradient_accumulation_steps, cpu.auto) == (2, 4, False)
    # Nothing fits: one row, and the reason says so.
    micro, why = choose_micro_batch(8, [2048] * 8, "padded", 2048, 1 * gib, lambda t: 2 * gib)
    assert micro == 1 and "may not fit" in why
    with pytest.raises(ValueError, match="effective batch must be ≥ 1"):
        choose_micro_batch(0, [1], "padded", 8, None, lambda t: 0)


def test_worst_case_tokens_and_sft_arguments():
    assert worst_tokens([10, 50, 30], 2, "padding-free", 40) == 40 + 30  # the 2 longest, each cut to max 40
    assert worst_tokens([10, 50, 30], 2, "padded", 64) == 2 * 50
    assert worst_tokens([10], 3, "packing", 64) == 3 * 64
    s = TrainSettings(**TINY)
    assert sft_batching_args(s, 1) == {
        "packing": False,
        "padding_free": True,
        "max_length": None,
        "include_num_input_tokens_seen": "no",
    }
    padded = sft_batching_args(TrainSettings(**TINY, padding_free=False), 2)
    assert padded["max_length"] == 128 and not padded["padding_free"]
    assert padded["include_num_input_tokens_seen"] == "non_padding"  # under DDP the Trainer gathers the ranks
    packed = sft_batching_args(TrainSettings(**TINY, packing=True), 1)
    assert packed["packing"] and packed["packing_strategy"] == "bfd" and packed["max_length"] == 128


def test_tokens_per_second_counts_only_real_tokens(tmp_path):
    """The collator's count (no GPU sync) feeds tokens/s on every logged step, the last one included; padded and
    padding-free runs train the same rows, so they count the same real tokens, and only the padded one computes
    pads."""
    runner = Runner(tmp_path / "runs", tmp_path / "data")
    common = dict(**TINY, micro_batch_size=4, max_steps=3)
    status, logs = {}, {}
    for pf in (False, True):
        run_dir = runner.start(TrainSettings(**common, padding_free=pf, run_name=f"pf{pf}"))
        status[pf] = runner.wait(300)
        assert status[pf]["status"] == "completed", (run_dir / "train.log").read_text()[-2000:]
        logs[pf] = [p for p in read_progress(run_dir) if p.get("type") == "log"]
        assert len(logs[pf]) == 3 and all(p.get("tokens_per_s", 0) > 0 for p in logs[pf]), logs[pf]
    assert status[True]["tokens_useful"] == status[False]["tokens_useful"] > 0
    assert status[True]["micro_batches"] == status[False]["micro_batches"] == 3
    assert status[True]["tokens_computed"] == status[True]["tokens_useful"]
    assert status[False]["tokens_computed"] > status[False]["tokens_useful"]  # persona rows differ in length


def test_tokens_are_counted_after_an_evaluation_and_a_finished_run_has_its_average(tmp_path):
    """Issue 28: the batches built right after an evaluation (the model still in eval mode) were not counted, so
    the steps after it, and a run's last step, showed "0 tok/s". Every training batch counts now, and the run ends
    with its average speed (the progress box shows it instead of the last step's)."""
    from lora_demo.ui.views.train import progress_html

    runner = Runner(tmp_path / "runs", tmp_path / "data")
    # 40 training rows, micro batch 8: 5 steps an epoch; the evaluation at step 5 ends the epoch, and the next
    # epoch's first batches are built before the next training step puts the model back in training mode
    run_dir = runner.start(
        TrainSettings(
            **TINY,
            micro_batch_size=8,
            max_steps=7,
            val_fraction=0.1,
            eval_steps=5,
            save_steps=-1,
            probe_tokens=0,
            run_name="evals",
        )
    )
    st = runner.wait(300)
    assert st["status"] == "completed", (run_dir / "train.log").read_text()[-2000:]
    progress = read_progress(run_dir)
    logs = [p for p in progress if p.get("type") == "log"]
    assert st["micro_batches"] == 7 and len(logs) == 7
    assert all(p.get("tokens_per_s", 0) > 0 for p in logs), logs
    summary = next(p for p in progress if p.get("type") == "summary")
    assert summary["tokens"] == st["tokens_useful"] and summary["tokens_per_s"] > 0 and summary["steps"] == 7
    shown = progress_html(st, progress, run_dir)
    assert f"{summary['tokens_per_s']:.0f} tok/s on average" in shown and "ETA" not in shown


def test_transformers_on_cuda_pads_rows_of_similar_length():
    """Without a varlen kernel a padding-free row is one long masked sequence: padded wins unless pads are many."""
    s = TrainSettings(**{**TINY, "micro_batch_size": 4, "gradient_accumulation_steps": 1, "max_seq_length": 2048})
    even = choose_batching(s, [2048] * 16, "cuda", "transformers", P17, 100 * 2**30)
    assert even.mode == "padded" and "padding costs only" in even.reason
    ragged = choose_batching(s, [60, 2000, 90, 1500, 50, 700] * 3, "cuda", "transformers", P17, 100 * 2**30)
    assert ragged.mode == "padding-free"
    assert choose_batching(s, [2048] * 16, "cuda", "unsloth", P17, 100 * 2**30).mode == "padding-free"
