"""How a run's rows become micro-batches: padding-free rows, a micro batch chosen from free GPU memory, and the
token counts that need no GPU synchronisation.

- Padding-free (the default): the rows of a micro-batch are concatenated into one sequence with position ids that
  restart at 0 for each row, and no padding. Attention sees where each row begins (Unsloth: varlen/per-segment
  attention; transformers: a block-diagonal mask built from the position ids), so rows stay independent and the loss
  equals the padded batch's, while no pad token is ever computed. The rows of each optimizer step do not change.
- Packing (`packing`, TRL's best-fit-decreasing): rows are packed into sequences of max_seq_length, also with
  position ids. It changes which rows share an optimizer step.
- The micro batch (CUDA, `auto_micro_batch`): the largest divisor of the user's micro batch × accumulation whose
  longest possible micro-batch fits the free GPU memory and a token budget; accumulation is adjusted so the
  effective batch stays what the user chose. On the CPU the user's micro batch is kept: there a bigger one only
  lengthens each step.
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass

from lora_demo.data import build_example
from lora_demo.i18n import msg
from lora_demo.train.runs import update_status

# Tokens per micro-batch above which a bigger micro batch gains little throughput (bench/bench_train.py, Unsloth on
# a large GPU; smaller GPUs saturate earlier) while the first step's compile and peak memory grow.
TOKEN_BUDGET = 16_384
MODE_NAMES = {"padding-free": msg("padding-free"), "packing": msg("packing"), "padded": msg("padded")}
# Share of the free GPU memory the chosen micro-batch's estimate may use (the estimate is rough).
MEMORY_SHARE = 0.6


@dataclass(frozen=True)
class BatchChoice:
    micro_batch_size: int
    gradient_accumulation_steps: int
    mode: str  # "padding-free", "packing" or "padded"
    auto: bool  # the micro batch was chosen here (else: the user's)
    tokens_per_micro_batch: int  # the longest possible micro-batch, in tokens
    reason: str  # a Msg

    @property
    def effective_batch(self) -> int:
        return self.micro_batch_size * self.gradient_accumulation_steps

    def to_dict(self) -> dict:
        return {
            "micro_batch_size": self.micro_batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "batching": self.mode,
            "auto_micro_batch": self.auto,
            "tokens_per_micro_batch": self.tokens_per_micro_batch,
            "batch_reason": self.reason,
        }

    def describe(self, user_micro: int, user_accum: int) -> str:
        """One line for the plan (a Msg: the Train tab shows it in the reader's language)."""
        mode = MODE_NAMES.get(self.mode, self.mode)
        if (self.micro_batch_size, self.gradient_accumulation_steps) != (user_micro, user_accum):
            return msg(
                "{mode}, micro batch {micro} × accumulation {accum} (you set {user_micro} × {user_accum}; the "
                "effective batch stays {effective}): {reason}",
                mode=mode,
                micro=self.micro_batch_size,
                accum=self.gradient_accumulation_steps,
                user_micro=user_micro,
                user_accum=user_accum,
                effective=self.effective_batch,
                reason=self.reason,
            )
        return msg(
            "{mode}, micro batch {micro} × accumulation {accum}: {reason}",
            mode=mode,
            micro=self.micro_batch_size,
            accum=self.gradient_accumulation_steps,
            reason=self.reason,
        )


def batching_mode(s) -> str:
    if s.packing:
        return "packing"
    return "padding-free" if getattr(s, "padding_free", True) else "padded"


def worst_tokens(lengths: list[int], micro: int, mode: str, max_len: int) -> int:
    """The most tokens one micro-batch of `micro` rows can hold (padded: every row padded to the longest)."""
    if mode == "packing":
        return micro * max_len
    top = sorted((min(n, max_len) for n in lengths), reverse=True)[:micro] or [max_len]
    if mode == "padded":
        return micro * top[0]
    return sum(top) + max(0, micro - len(top)) * top[0]


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def choose_micro_batch(
    effective: int,
    lengths: list[int],
    mode: str,
    max_len: int,
    free_bytes: float | None,
    bytes_for_tokens,
    token_budget: int = TOKEN_BUDGET,
) -> tuple[int, str]:
    """(micro batch, why): the largest divisor of `effective` whose longest micro-batch stays within the token
    budget and, when the free memory is known, within MEMORY_SHARE of it (bytes_for_tokens(tokens) estimates what
    a micro-batch of that many tokens needs beyond the loaded weights)."""
    if effective < 1:
        raise ValueError(f"the effective batch must be ≥ 1 (got {effective})")
    for micro in sorted(divisors(effective), reverse=True):
        tokens = worst_tokens(lengths, micro, mode, max_len)
        need = bytes_for_tokens(tokens)
        fits_memory = free_bytes is None or need <= MEMORY_SHARE * free_bytes
        if micro == 1 or (tokens <= token_budget and fits_memory):
            if micro == 1 and not fits_memory:
                return 1, msg(
                    "even one row may not fit: ~{need:.1f} GiB needed, {free:.1f} GiB free. Shorten "
                    "max_seq_length or free the GPU",
                    need=need / 2**30,
                    free=free_bytes / 2**30,
                )
            if free_bytes is None:
                return micro, msg(
                    "chosen for ≤ {budget:,} tokens a micro-batch (at most {tokens:,} here)",
                    budget=token_budget,
                    tokens=tokens,
                )
            return micro, msg(
                "chosen for ≤ {budget:,} tokens a micro-batch (at most {tokens:,} here, ~{need:.1f} GiB "
                "of {free:.1f} GiB free)",
                budget=token_budget,
                tokens=tokens,
                need=need / 2**30,
                free=free_bytes / 2**30,
            )
    raise AssertionError("unreachable: 1 divides every effective batch")


def step_bytes(p: dict, tokens: int, backend: str) -> float:
    """What a micro-batch of `tokens` tokens needs on the GPU beyond the weights: activations (Unsloth keeps one
    hidden state per layer with its offloaded checkpointing; transformers' checkpointing a few), the chunked LM head's
    logits, and a fixed allowance for the CUDA context, optimizer state and the allocator."""
    per_layer = p["hidden_size"] * (2 if backend == "unsloth" else 6)
    act = tokens * per_layer * p["num_layers"] * 2
    logits = min(tokens, 8192) * p["vocab_size"] * 4 * (1 if backend == "unsloth" else 2)
    return act + logits + 1.5 * 2**30


def choose_batching(
    s, lengths: list[int], device: str, backend: str, params: dict | None, free_bytes: float | None
) -> BatchChoice:
    """The batching of a run: padding-free/packing/padded and its micro batch × accumulation."""
    mode = batching_mode(s)
    effective = s.micro_batch_size * s.gradient_accumulation_steps
    user = s.micro_batch_size
    if not getattr(s, "auto_micro_batch", True) or device != "cuda" or params is None:
        why = (
            msg("as set")
            if device == "cuda"
            else msg("as set (on the CPU a bigger micro batch only lengthens each step)")
        )
        return BatchChoice(
            user, s.gradient_accumulation_steps, mode, False, worst_tokens(lengths, user, mode, s.max_seq_length), why
        )
    micro, why = choose_micro_batch(
        effective, lengths, mode, s.max_seq_length, free_bytes, lambda t: step_bytes(params, t, backend)
    )
    share = padding_share(lengths, micro, s.max_seq_length)
    if mode == "padding-free" and backend == "transformers" and share < PADDED_BELOW:
        # transformers without a varlen kernel turns a padding-free row into one long sequence with a block mask
        # (SDPA's masked kernel): on the H200 that was slower than padding (bench_train.py) unless pads are many.
        mode = "padded"
        micro, why = choose_micro_batch(
            effective, lengths, mode, s.max_seq_length, free_bytes, lambda t: step_bytes(params, t, backend)
        )
        why = msg(
            "{why}; padded, since padding costs only ~{share:.0%} here and transformers has no varlen attention",
            why=why,
            share=share,
        )
    return BatchChoice(micro, effective // micro, mode, True, worst_tokens(lengths, micro, mode, s.max_seq_length), why)


# transformers backend on CUDA: below this expected share of pad tokens, padded batches beat padding-free ones.
PADDED_BELOW = 0.25


def padding_share(lengths: list[int], micro: int, max_len: int, draws: int = 256) -> float:
    """The expected share of pad tokens in a padded micro-batch of `micro` rows drawn at random from `lengths`."""
    import random

    lengths = [min(n, max_len) for n in lengths if n > 0]
    if not lengths or micro <= 1:
        return 0.0
    rng = random.Random(0)
    real = padded = 0
    for _ in range(draws):
        batch = [rng.choice(lengths) for _ in range(micro)]
        real += sum(batch)
        padded += micro * max(batch)
    return 1 - real / padded


def sft_batching_args(s, world: int) -> dict:
    """SFTConfig arguments for the run's batching. Rows arrive tokenized and already cut to max_seq_length
    (data.build_example), so padding-free needs no max_length (TRL refuses one without packing). Token counts for
    tokens/s come from TokenCounter (no GPU sync) in a single process; under DDP the Trainer gathers them."""
    mode = batching_mode(s)
    args = {
        "packing": mode == "packing",
        "padding_free": mode != "padded",
        "include_num_input_tokens_seen": "non_padding" if world > 1 else "no",
    }
    if mode == "packing":
        args.update(packing_strategy="bfd", max_length=s.max_seq_length)
    elif mode == "padding-free":
        args.update(max_length=None)
    else:
        args.update(max_length=s.max_seq_length)
    return args


class TokenCounter:
    """Wraps the trainer's data collator and counts, on the CPU as each training micro-batch is built, the tokens
    that are not padding and the tokens the GPU computes (pads included). A micro-batch's count reaches
    trainer.state.num_input_tokens_seen (which the progress callback turns into tokens/s) when the Trainer takes
    that micro-batch (install(): the loader builds one ahead), so tokens and time stay in step. The Trainer's own
    count costs a GPU synchronisation per micro-batch."""

    def __init__(self, collator, trainer):
        self.collator, self.trainer = collator, trainer
        self.useful = self.computed = self.batches = 0
        self.seconds = 0.0
        self.pending: deque[tuple[int, int]] = deque()  # (real, computed) tokens of built, not yet trained batches
        self.evaluating = False  # inside the Trainer's evaluation loop: its batches are not training throughput

    def __call__(self, features):
        t0 = time.perf_counter()
        batch = self.collator(features)
        self.seconds += time.perf_counter() - t0
        # Not `model.training`: after an evaluation or a probe the model stays in eval mode until the next
        # training step, while the loader already builds that step's batch (and the next one).
        if self.evaluating:
            return batch
        ids = batch["input_ids"]
        mask = batch.get("attention_mask")  # padded batches; padding-free and packed ones hold no pad token
        useful = int(mask.sum()) if mask is not None else int(ids.numel())
        self.pending.append((useful, int(ids.numel())))
        return batch

    def install(self) -> None:
        """Be the trainer's collator, and credit each micro-batch's tokens as its training step begins."""
        trainer, original = self.trainer, self.trainer.training_step
        trainer.data_collator = self

        def training_step(*args, **kwargs):
            if self.pending:
                useful, computed = self.pending.popleft()
                self.useful, self.computed, self.batches = (
                    self.useful + useful,
                    self.computed + computed,
                    self.batches + 1,
                )
                trainer.state.num_input_tokens_seen += useful
            return original(*args, **kwargs)

        trainer.training_step = training_step
        evaluation_loop = trainer.evaluation_loop

        def evaluating(*args, **kwargs):
            self.evaluating = True
            try:
                return evaluation_loop(*args, **kwargs)
            finally:
                self.evaluating = False

        trainer.evaluation_loop = evaluating


def lean_metrics(trainer_cls):
    """TRL's SFTTrainer with its per-micro-batch metrics kept on the GPU.

    TRL 1.15's compute_loss logs entropy and token accuracy from its fused LM head and reads three values back with
    .item() on every micro-batch (a GPU synchronisation each). This subclass computes the same loss from the same
    fused head, adds the metrics up on the device and reads them once per log (token-weighted over the logging
    window). Anything unusual (evaluation, logits wanted, other loss types, MoE aux loss) takes TRL's own path."""
    import torch

    class LeanMetricsSFTTrainer(trainer_cls):
        _lean_sums = None

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            usual = (
                not return_outputs
                and model.training
                and self.compute_loss_func is None
                and self.label_smoother is None
                and getattr(self.args, "loss_type", "nll") == "nll"
                and not getattr(self, "aux_loss_enabled", False)
            )
            if not usual:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            inputs["use_cache"] = False
            outputs = model(**inputs, fused_lm_head=True)
            num_tokens = outputs.label_mask.sum() if num_items_in_batch is None else num_items_in_batch
            loss = -outputs.log_probs.sum() / torch.as_tensor(num_tokens).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * (self.accelerator.num_processes // self.get_tp_size())
            with torch.no_grad():
                sums = torch.stack(
                    [outputs.label_mask.sum().float(), outputs.entropy.sum().float(), outputs.is_top1.sum().float()]
                )
                self._lean_sums = sums if self._lean_sums is None else self._lean_sums + sums
            return loss

        def log(self, logs, start_time=None):
            if self._lean_sums is not None and self.model.training:
                valid, entropy, correct = self.accelerator.gather_for_metrics(self._lean_sums[None]).sum(0).tolist()
                self._lean_sums = None
                m = self._metrics["train"]
                m["entropy"] = [entropy / valid if valid else 0.0]
                m["mean_token_accuracy"] = [correct / valid if valid else 0.0]
                m["num_tokens"] = [getattr(self.state, "num_input_tokens_seen", 0)]
            return super().log(logs, start_time)

    return LeanMetricsSFTTrainer


def row_lengths(rows: list[dict], tok, s) -> list[int]:
    """Token lengths of the rows as training sees them (build_example: the template, cut to max_seq_length)."""

    return [
        len(build_example(r, tok, s.template, s.max_seq_length, s.train_on_responses_only, s.enable_thinking).input_ids)
        for r in rows
    ]


def for_run(run_dir, s, plan, model, tok, rows: list[dict]):
    """The worker's batching: settings with the chosen micro batch × accumulation (the effective batch unchanged),
    recorded in status.json and train.log. The free memory is read with the model already loaded."""
    from dataclasses import replace

    from lora_demo.device import free_gpu_bytes  # deferred: device imports torch, and the CLI imports this module

    params = None
    if plan.device == "cuda":
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        params = {"hidden_size": cfg.hidden_size, "num_layers": cfg.num_hidden_layers, "vocab_size": cfg.vocab_size}
    free = free_gpu_bytes() if plan.device == "cuda" else None
    choice = choose_batching(s, row_lengths(rows, tok, s), plan.device, plan.backend, params, free)
    print(f"Batching: {choice.describe(s.micro_batch_size, s.gradient_accumulation_steps)}", flush=True)
    if int(os.environ.get("RANK", "0")) == 0:
        update_status(run_dir, **choice.to_dict())
    return replace(
        s,
        micro_batch_size=choice.micro_batch_size,
        padding_free=choice.mode != "padded",
        gradient_accumulation_steps=choice.gradient_accumulation_steps,
    )


def count_tokens(trainer, run_dir) -> None:
    """Token counts for tokens/s from the collator (CPU) instead of the Trainer's synchronising count; only in a
    single process (under DDP the Trainer gathers every rank's count, which the collator cannot see)."""
    if int(os.environ.get("WORLD_SIZE", "1")) != 1 or trainer.args.include_num_input_tokens_seen != "no":
        return
    from transformers import TrainerCallback

    counter = TokenCounter(trainer.data_collator, trainer)
    counter.install()

    class TokenReport(TrainerCallback):
        """The run's token totals in status.json at the end: real tokens, tokens computed (pads included), and the
        collator's time (what the benchmark reads for useful vs computed tokens/s)."""

        def on_train_end(self, args, state, control, **kw):
            update_status(
                run_dir,
                tokens_useful=counter.useful,
                tokens_computed=counter.computed,
                micro_batches=counter.batches,
                collate_seconds=round(counter.seconds, 3),
            )

    trainer.add_callback(TokenReport())


def weights_bytes(p: dict, s, device: str) -> float:
    """The loaded weights on the GPU (4-bit: packed nf4 linears, 16-bit embeddings and head)."""
    if s.load_in_4bit and device == "cuda":
        return (p["base_params"] - p["embedding_params"]) * 0.53 + p["embedding_params"] * 2 * 2
    return p["base_params"] * 2


def plan_batching(s, rows: list[dict] | None, tokenizer, dev, p: dict):
    """(settings with the micro batch × accumulation the worker will likely choose, fields for the plan). The worker
    decides again with the model loaded, from the memory then free; the run's status records that choice."""
    from dataclasses import replace

    from lora_demo.device import free_gpu_bytes  # deferred: device imports torch, and the CLI imports this module

    if rows is not None and tokenizer is not None:
        lengths = row_lengths(rows, tokenizer, s)
    else:  # no tokenizer offline: assume every row is as long as allowed (the worst case)
        lengths = [s.max_seq_length] * len(rows or [])
    free = free_gpu_bytes() if dev.device == "cuda" else None
    if free is not None:
        free = max(0.0, free - weights_bytes(p, s, dev.device))
    backend = "transformers" if s.world_size > 1 else dev.backend
    choice = choose_batching(s, lengths, dev.device, backend, p, free)
    fields = {**choice.to_dict(), "batch_summary": choice.describe(s.micro_batch_size, s.gradient_accumulation_steps)}
    return replace(
        s,
        micro_batch_size=choice.micro_batch_size,
        padding_free=choice.mode != "padded",
        gradient_accumulation_steps=choice.gradient_accumulation_steps,
    ), fields
