"""DPO in the worker: TRL's DPOTrainer on the PEFT model continued from an SFT adapter (settings.method == "dpo").

- The reference model. Given a PEFT model that already holds an adapter and ref_model=None, TRL 1.15 copies that
  adapter as a second, frozen adapter named "ref" and computes the reference log-probs with it switched in. Here the
  trained adapter starts as the parent's factors (init_adapter), so the reference is the SFT parent, as DPO wants,
  and it costs one more set of LoRA factors on the same base weights: no second copy of the model is loaded.
- The data. Each pair is tokenized here with the run's template by data.templates.build_example, exactly as SFT
  tokenizes a row ({"instruction": prompt, "input": input} → the prompt ids, then each answer's ids with the
  template's end of turn), so the answers are scored after the very prompt the SFT model was trained on; TRL's own
  tokenization is skipped (_prepare_dataset).
- CPU torch. TRL computes the per-token log-probs with a Triton kernel (add_fused_lm_head, ChunkedLogProbFunction),
  which is None without Triton: the first step would die with "'NoneType' object has no attribute 'apply'". There
  the trainer replaces that fused head with a plain log_softmax + gather (plain_lm_head), with the same outputs.
- Saving writes the trained adapter only ("default"), never the frozen "ref" copy.
- Backend: transformers + PEFT + TRL on every device by default; LORA_LAB_BACKEND=unsloth keeps Unsloth (its import
  patches TRL's DPOTrainer). Both pass the GPU test; bench_dpo.py --gpu compares them (README's figures).
"""

from __future__ import annotations

import functools
import os
from dataclasses import replace
from pathlib import Path

from lora_demo import env
from lora_demo.data import build_example, split_rows
from lora_demo.data.preferences import check_pairs
from lora_demo.i18n import msg
from lora_demo.rundir import RunDir
from lora_demo.train import tracking
from lora_demo.train.sizing import estimate_memory_gb, optimizer_steps, step_warnings

REF = "ref"  # TRL's name for the frozen copy of the starting adapter
TRAINED = "default"
LOG_PROB_OUTPUTS = ("log_probs", "entropy", "mean_logits", "is_top1")


def device_plan(plan):
    """The device plan of a DPO run: the transformers backend (see the module docstring), unless Unsloth is asked
    for by name (LORA_LAB_BACKEND=unsloth: importing unsloth patches TRL's DPOTrainer; bench_dpo.py --gpu measures
    both)."""
    if plan.backend != "unsloth" or env.backend() == "unsloth":
        return plan
    return replace(plan, backend="transformers", backend_reason="DPO: transformers + PEFT + TRL")


def preference_dataset(pairs: list[dict], tok, s):
    """prompt_ids / chosen_ids / rejected_ids for DPOTrainer, each pair built as SFT builds a row (see the module
    docstring). A pair whose prompt alone fills max_seq_length is dropped (no answer token would be left), as TRL
    drops it; longer answers are cut at max_seq_length by TRL's collator."""
    from datasets import Dataset

    out = []
    for p in pairs:
        row = {"instruction": p["prompt"], "input": p.get("input", "")}
        chosen = build_example({**row, "output": p["chosen"]}, tok, s.template, None, True, s.enable_thinking)
        rejected = build_example({**row, "output": p["rejected"]}, tok, s.template, None, True, s.enable_thinking)
        n = chosen.n_prompt  # the masked prompt: the same ids for both answers
        if n >= s.max_seq_length:
            continue
        out.append(
            {
                "prompt_ids": chosen.input_ids[:n],
                "chosen_ids": chosen.input_ids[n:],
                "rejected_ids": rejected.input_ids[rejected.n_prompt :],
            }
        )
    return Dataset.from_list(out)


def dpo_config(s, plan, run_dir: Path, has_eval: bool, save_every: int | None = None):
    """The DPOConfig of a run: the same Trainer arguments as its SFT counterpart (worker.sft_config), plus β."""
    from trl import DPOConfig

    optim = s.optimizer
    if plan.device == "cpu" and "8bit" in optim:
        optim = "adamw_torch"  # bitsandbytes' 8-bit optimizers need a GPU
    return DPOConfig(
        output_dir=str(RunDir(run_dir).checkpoints_dir),
        per_device_train_batch_size=s.micro_batch_size,
        per_device_eval_batch_size=s.micro_batch_size,
        gradient_accumulation_steps=s.gradient_accumulation_steps,
        num_train_epochs=s.num_epochs,
        max_steps=s.max_steps,
        learning_rate=s.learning_rate,
        lr_scheduler_type=s.lr_scheduler,
        warmup_steps=s.warmup,
        weight_decay=s.weight_decay,
        optim=optim,
        seed=s.seed,
        data_seed=s.seed,
        logging_steps=s.logging_steps,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=s.eval_steps,
        save_strategy="steps" if save_every else "no",
        save_steps=save_every or 500,
        save_total_limit=s.keep_checkpoints,
        report_to=tracking.report_to(s),
        run_name=run_dir.name,
        bf16=plan.precision == "bf16",
        fp16=plan.precision == "fp16",
        use_cpu=plan.device == "cpu",
        dataloader_num_workers=0,
        disable_tqdm=int(os.environ.get("RANK", "0")) != 0,
        logging_first_step=True,
        include_num_input_tokens_seen="no",  # batching.TokenCounter counts them from the collator
        beta=s.dpo_beta,
        max_length=s.max_seq_length,
    )


def has_triton_kernel() -> bool:
    from trl.trainer import utils as trl_utils

    return getattr(trl_utils, "_ChunkedLogProbFunction", None) is not None


@functools.cache
def trainer_class():
    """DPOTrainer, taking the pairs pre-tokenized, saving the trained adapter only, and on machines without Triton
    computing the log-probs with plain_lm_head."""
    from accelerate.utils import is_peft_model
    from trl import DPOTrainer

    plain = not has_triton_kernel()

    class LabDPOTrainer(DPOTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if plain:  # (TRL has just patched its fused head in: the same model, another head)
                plain_lm_head(self.model.get_base_model() if is_peft_model(self.model) else self.model)

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            if "prompt_ids" in dataset.column_names:  # tokenized by preference_dataset, with the run's template
                return dataset
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

        def _save(self, output_dir=None, state_dict=None):
            """Checkpoints hold the trained adapter only: the frozen reference copy is the parent's, on record."""
            model = self.accelerator.unwrap_model(self.model)
            if REF not in (getattr(model, "peft_config", None) or {}):
                return super()._save(output_dir, state_dict)
            model.save_pretrained = functools.partial(type(model).save_pretrained, model, selected_adapters=[TRAINED])
            try:
                return super()._save(output_dir, state_dict)
            finally:
                del model.save_pretrained  # (the class's method again)

    return LabDPOTrainer


def build_trainer(
    s,
    plan,
    run_dir: Path,
    model,
    tok,
    train_pairs: list[dict],
    val_pairs: list[dict],
    save_every: int | None,
    callbacks: list,
):
    return trainer_class()(
        model=model,
        ref_model=None,
        args=dpo_config(s, plan, run_dir, bool(val_pairs), save_every),
        train_dataset=preference_dataset(train_pairs, tok, s),
        eval_dataset=preference_dataset(val_pairs, tok, s) if val_pairs else None,
        processing_class=tok,
        callbacks=callbacks,
    )


def plain_lm_head(model, outputs: tuple[str, ...] = LOG_PROB_OUTPUTS, temperature: float = 1.0) -> None:
    """Replace TRL's fused LM head on `model` (a transformers causal LM, inside the PEFT wrapper) with a plain one:
    `model(..., labels=labels, fused_lm_head=True)` returns the same FusedCausalLMOutput (per-token log-probs of the
    next-token labels, zero where a label is -100, and the entropy, mean logit and top-1 flag TRL logs), computed
    by the LM head on the scored positions, log_softmax and gather. Without fused_lm_head it is the model's own
    forward (generate, the probes). temperature: the logits are divided by it after scaling and soft-capping, as in
    TRL's kernel (GRPO scores the distribution it sampled at that temperature)."""
    import torch
    from trl.trainer.utils import FusedCausalLMOutput

    original = type(model).forward.__get__(model)  # the model's own forward, under TRL's patch
    cfg = model.config.get_text_config()
    scale = getattr(cfg, "logit_scale", None) or 1.0
    softcap = getattr(cfg, "final_logit_softcapping", None)

    @functools.wraps(type(model).forward)  # generate validates its kwargs against this signature
    def forward(self, *args, fused_lm_head=False, labels=None, shift_labels=None, num_items_in_batch=None, **kwargs):
        if not fused_lm_head:
            for key, value in (
                ("labels", labels),
                ("shift_labels", shift_labels),
                ("num_items_in_batch", num_items_in_batch),
            ):
                if value is not None:
                    kwargs[key] = value
            return original(*args, **kwargs)
        kwargs["use_cache"] = False
        hidden = self.base_model(*args, **kwargs).last_hidden_state
        if shift_labels is None:
            hidden, labels = hidden[:, :-1], labels[:, 1:]
        else:
            labels = shift_labels
        head = self.get_output_embeddings()
        hidden, labels = hidden.to(head.weight.device), labels.to(head.weight.device)
        mask = labels != -100
        target = labels[mask]
        logits = head(hidden[mask]).float() * scale  # only the scored positions: [tokens, vocab]
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        if temperature != 1.0:
            logits = logits / temperature
        logp = torch.log_softmax(logits, dim=-1)
        token_logp = logp.gather(-1, target[:, None])[:, 0]
        with torch.no_grad():
            extra = {
                "entropy": -(logp.exp() * logp).sum(-1),
                "mean_logits": logits.mean(-1),
                "is_top1": logits.argmax(-1) == target,
            }

        def spread(x):  # per scored token → per position, zero elsewhere (as TRL's head returns them)
            return x.new_zeros(mask.shape).masked_scatter(mask, x)

        log_probs = spread(token_logp)
        count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return FusedCausalLMOutput(
            loss=-log_probs.sum() / count,
            log_probs=log_probs,
            log_sum_sq_probs=None,
            label_mask=mask,
            aux_loss=None,
            **{k: spread(v) if k in outputs else None for k, v in extra.items()},
        )

    import types

    model.forward = types.MethodType(forward, model)


def _source(s) -> str:
    """Where the pairs come from, as the plan says it: `votes:` alone named by the run it means (the parent's)."""
    if s.dataset.strip() == "votes:" and s.init_adapter:
        return "votes:" + Path(s.init_adapter).name
    return s.dataset


def plan_dpo(out: dict, s, pairs: list | None, p: dict) -> None:
    """The DPO part of a run's plan (plan.plan_run), into `out`: the pairs' errors and steps, the reference's cost,
    the backend, and the warnings that save a round (too few pairs, warmup ≥ steps, under 10 steps)."""

    out["method"] = "dpo"
    forced = env.backend() == "unsloth"
    out["backend"] = "unsloth" if forced and out.get("backend") == "unsloth" else "transformers"  # (device_plan)
    out.pop("batch_summary", None)  # (SFT's padding-free batching: TRL pads each micro-batch of pairs)
    # Each micro-batch holds every pair's chosen and rejected answer; the reference pass keeps no activations.
    out["estimated_memory_gb"] = estimate_memory_gb(
        p, replace(s, micro_batch_size=2 * s.micro_batch_size), out["precision"], out["device"], "transformers"
    )
    out.setdefault("notes", []).extend(_reference_notes(s, p, out["device"]))
    if pairs is not None:
        _plan_pairs(out, s, pairs)


def _reference_notes(s, p: dict, device: str) -> list:
    """What the reference model costs, and which backend trains on a GPU."""
    notes = [
        msg(
            "Reference model: the parent adapter as it starts ({parent}), kept frozen as a second set of "
            "LoRA factors on the same base weights: {params:,} more parameters (~{mb:.1f} MB), no second copy "
            "of the model. Each step scores the chosen and the rejected answers with the trained adapter and, "
            "without gradients, with the reference.",
            parent=s.init_adapter or "?",
            params=p["trainable_params"],
            mb=p["trainable_params"] * 4 / 2**20,
        )
    ]
    if device == "cuda":
        notes.append(
            msg(
                "DPO trains with transformers + PEFT + TRL, which was faster than Unsloth's DPO path on a "
                "measured H100 (README); LORA_LAB_BACKEND=unsloth picks Unsloth's."
            )
        )
    return notes


def _plan_pairs(out: dict, s, pairs: list) -> None:
    """The preference pairs' part of the plan, into `out`: their errors, the split and the steps."""

    report = check_pairs(pairs)
    out["errors"] += [e["message"] for e in report["errors"][:20]]
    out["warnings"] += [w["message"] for w in report["warnings"][:20]]
    train, val = split_rows(pairs, s.val_fraction, s.seed)
    out.update(optimizer_steps(len(train), s), train_rows=len(train), val_rows=len(val), pairs=len(pairs))
    out["notes"].insert(
        0,
        msg(
            "DPO on {pairs} preference pairs from {source} ({train} trained on, {val} held out), beta "
            "{beta}: {steps} optimizer steps of {batch} pair(s).",
            pairs=len(pairs),
            source=_source(s),
            train=len(train),
            val=len(val),
            beta=s.dpo_beta,
            steps=out["total_steps"],
            batch=out["effective_batch"],
        ),
    )
    out["warnings"] += step_warnings(out["total_steps"], out["warmup_steps"])
