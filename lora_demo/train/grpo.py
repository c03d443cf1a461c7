"""GRPO in the worker (settings.method == "grpo"): TRL's GRPOTrainer on the PEFT model, with the rewards of
train/rewards.py.

- What a step does. Each optimizer step takes micro_batch_size × gradient_accumulation_steps prompts, samples
  grpo_generations answers to each (up to grpo_max_tokens new tokens, at grpo_temperature), scores every answer with
  the rewards, and makes the answers that scored above their group's mean likelier and those below less likely (TRL's
  default loss; no KL term, beta 0, so no reference copy is kept). So micro_batch_size counts prompts here; TRL's
  per-device batch is micro_batch_size × grpo_generations completions.
- The prompts. Each row is prompted exactly as SFT prompts it and as Chat asks it: the row's instruction and input
  through the run's template (data.templates.prompt_text, tokenized as prompt_ids does). The trainer gets that text
  as its "prompt" column (a plain-text prompt: TRL applies no chat template of its own) and tokenizes it with
  prompt_ids' rule (_tokenize_prompts). The rewards also get the row's question and its output ("reference").
- Where it starts. From the base model (new LoRA factors: the first answers are the base model's) or, with
  init_adapter (--continue-from), from an adapter's factors, such as an SFT run's.
- CPU torch. TRL scores the completions' log-probs with its Triton kernel, which is None without Triton; there the
  trainer puts dpo.plain_lm_head in its place (with GRPO's temperature: the log-probs of the distribution sampled).
- A reward that fails (a python reward raising, or returning something else than numbers from 0 to 1, a format regex
  running past its timeout) fails the run with its message, after the adapter trained so far is saved: while
  training (train_or_save) and in the held-out evaluation after it (evaluate_or_save), which samples and scores too.
- Backend: transformers + PEFT + TRL on every device (device_plan): Unsloth's GRPO path and vLLM generation are not
  wired in (neither could be checked here).
"""

from __future__ import annotations

import math
from pathlib import Path

from lora_demo.data import resolve_rows, split_rows
from lora_demo.data.formats import SUFFIXES, detect_format, read_records, to_rows
from lora_demo.data.templates import prompt_text
from lora_demo.data.verbatim import verbatim
from lora_demo.errors import InputError, LoraLabError
from lora_demo.i18n import Msg, joined, msg
from lora_demo.rundir import RunDir
from lora_demo.train import rewards, tracking
from lora_demo.train.dpo import has_triton_kernel, plain_lm_head
from lora_demo.train.rewards import RewardFailed, parse, weights
from lora_demo.train.sizing import estimate_memory_gb, step_warnings

FEW_PROMPTS = 16  # below this many training prompts the plan warns: a handful of prompts is learned by heart
PROMPT_KEYS = ("prompt", "instruction")
REFERENCE_KEYS = ("output", "chosen")  # a preference file's chosen answer is its reference


def prompt_key(row: dict) -> str | None:
    """The field that holds a row's prompt: the first of PROMPT_KEYS present and not null (None: no prompt)."""
    return next((k for k in PROMPT_KEYS if row.get(k) is not None), None)


def reference_key(row: dict) -> str | None:
    """The field that holds a row's reference answer: output, else chosen (null counts as absent)."""
    return next((k for k in REFERENCE_KEYS if row.get(k) is not None), None)


def device_plan(plan):
    """A GRPO run's device plan: the transformers backend, always (see the module docstring)."""
    from dataclasses import replace

    if plan.backend != "unsloth":
        return plan
    return replace(plan, backend="transformers", backend_reason="GRPO: transformers + PEFT + TRL")


# --- the data: prompts (instruction rows, or a file of prompts) ---


def resolve_prompts(dataset: str, data_dir: str | Path = "data") -> list:
    """The records a GRPO run's `dataset` names: a saved dataset or example (instruction rows), or a file whose rows
    have a prompt or an instruction (input and output optional; a preference file's chosen answer is its output)."""

    path = Path(dataset)
    if path.suffix.lower() in SUFFIXES and path.is_file():
        records = read_records(path)
        if records and isinstance(records[0], dict) and detect_format(records) in ("sharegpt", "messages"):
            return to_rows(records).rows
        return records

    return resolve_rows(dataset, data_dir)


def check_prompts(records: list, needs_reference: bool = False) -> dict:
    """{"rows", "errors": [{"row", "field", "message"}], "warnings"}: errors block training (a row that is no object,
    a prompt missing, empty or not text, an input or output that is not text, and with a match reward a row without
    an output); warnings do not (fewer than FEW_PROMPTS rows)."""

    errors: list[dict] = []
    if not records:
        errors.append({"row": 0, "field": "", "message": msg("There are no prompts.")})
    for i, r in enumerate(records or [], 1):
        if not isinstance(r, dict):
            errors.append(
                {
                    "row": i,
                    "field": "",
                    "message": msg("row {row} is not an object with a prompt (or an instruction)", row=i),
                }
            )
            continue
        key = prompt_key(r)
        if key is None:  # (absent or null: {"prompt": null} would reach the worker as no text)
            errors.append(
                {
                    "row": i,
                    "field": "prompt",
                    "message": msg("row {row}: prompt is missing (each row needs a prompt or an instruction)", row=i),
                }
            )
            continue
        ref = reference_key(r) or "output"
        for f in (key, "input", ref):
            v = r.get(f)
            if v is not None and not isinstance(v, str):
                errors.append(
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
        if isinstance(r.get(key), str) and not r[key].strip():
            errors.append(
                {"row": i, "field": key, "message": msg("row {row}: {field} is empty", row=i, field=verbatim(key))}
            )
        if needs_reference and not (isinstance(r.get(ref), str) and r[ref].strip()):
            errors.append(
                {
                    "row": i,
                    "field": ref,
                    "message": msg(
                        "row {row}: output is missing or empty, and the match reward compares each answer with it",
                        row=i,
                    ),
                }
            )
    warnings = []
    if records and not errors and len(records) < FEW_PROMPTS:
        warnings.append({"row": 0, "field": "", "message": few_prompts(len(records))})
    return {"rows": len(records or []), "errors": errors, "warnings": warnings}


def few_prompts(n: int) -> Msg:
    return msg(
        "Only {n} prompt(s): GRPO learns a habit from many prompts; with fewer than about {few} it mostly "
        "learns these prompts' answers. Add rows.",
        n=n,
        few=FEW_PROMPTS,
    )


def prompt_rows(records: list[dict]) -> list[dict]:
    """Checked records as instruction rows: {instruction, input, output} (output "" where none)."""
    out = []
    for r in records:
        key, ref = prompt_key(r), reference_key(r)
        out.append({"instruction": r[key], "input": r.get("input") or "", "output": (r.get(ref) if ref else "") or ""})
    return out


def prompts_per_step(s) -> int:
    return s.micro_batch_size * s.gradient_accumulation_steps


def optimizer_steps(n_train: int, s) -> dict:
    """Optimizer steps as TRL's GRPOTrainer makes them: each takes prompts_per_step prompts (whole groups only: a
    last partial group of prompts is left out of each pass)."""
    per_epoch = n_train // prompts_per_step(s)
    total = s.max_steps if s.max_steps > 0 else math.ceil(s.num_epochs * max(per_epoch, 1))
    warmup = int(s.warmup) if s.warmup >= 1 else math.ceil(s.warmup * total)
    return {
        "steps_per_epoch": per_epoch,
        "total_steps": total,
        "warmup_steps": warmup,
        "effective_batch": prompts_per_step(s),
    }


def checked_rewards(settings, shared: bool = False, files: bool = True) -> None:
    """One InputError naming the rewards' problems, or nothing: python rewards refused when the app is shared (a
    run's start and resume, never the settings: a saved config with one reads everywhere), then (files) each python
    reward's file imported in a separate process, up to 2 minutes: the Runner does this before taking its lock."""

    problems = [p for p in (rewards.spec_problem(r, shared) for r in settings.rewards) if p]
    problems = problems or (rewards.file_problems(settings.rewards) if files else [])
    if problems:
        raise InputError(msg("Invalid rewards: {problems}.", problems=joined(problems)))


def checked_prompts(
    settings, data_dir: str | Path = "data", rows: list | None = None, shared: bool = False, files: bool = True
):
    """For the runner's start, before anything loads: the settings (python rewards' files made absolute) and the
    clean prompt rows, or one InputError naming the first problems (a reward refused or, with files, whose file does
    not import, rows missing fields, fewer training rows than one step takes)."""
    from dataclasses import replace

    checked_rewards(settings, shared, files)
    records = resolve_prompts(settings.dataset, data_dir) if rows is None else rows
    needs_reference = any(rewards.split_spec(r)[0] == "match" for r in settings.rewards)
    errors = check_prompts(records, needs_reference)["errors"]
    if errors:
        shown = joined([e["message"] for e in errors[:5]])
        raise InputError(
            msg("The prompts have {n} error(s), which block training: {errors}.", n=len(errors), errors=shown)
        )
    rows = prompt_rows(records)
    train, _ = split_rows(rows, settings.val_fraction, settings.seed)
    need = prompts_per_step(settings)
    if len(train) < need:
        raise InputError(too_few_rows(len(train), settings))
    return replace(settings, rewards=rewards.absolute(settings.rewards)), rows


def too_few_rows(n: int, s) -> Msg:
    return msg(
        "GRPO takes {need} prompts per step (micro_batch_size {micro} × gradient_accumulation_steps {accum}) "
        "and there are only {n} training rows: lower the micro batch or add rows.",
        need=prompts_per_step(s),
        micro=s.micro_batch_size,
        accum=s.gradient_accumulation_steps,
        n=n,
    )


# --- the trainer ---


def question(row: dict) -> str:
    """The row's question as the user asked it (instruction, blank line, input): what a python reward reads."""
    return row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")


def prompt_dataset(rows: list[dict], tok, s):
    """The trainer's rows: prompt (the row through the run's template, as SFT and Chat prompt it), question and
    reference (the row's output) for the rewards."""
    from datasets import Dataset

    return Dataset.from_list(
        [
            {
                "prompt": prompt_text(r, tok, s.template, s.enable_thinking),
                "question": question(r),
                "reference": r.get("output") or "",
            }
            for r in rows
        ]
    )


def grpo_config(s, plan, run_dir: Path, has_eval: bool, rewards: list, save_every: int | None = None):
    """The GRPOConfig of a run: the Trainer arguments of its SFT counterpart (dpo.dpo_config's), with the batch in
    completions (micro_batch_size prompts × grpo_generations) and the sampling settings."""
    from trl import GRPOConfig

    optim = s.optimizer
    if plan.device == "cpu" and "8bit" in optim:
        optim = "adamw_torch"  # bitsandbytes' 8-bit optimizers need a GPU
    completions = s.micro_batch_size * s.grpo_generations
    return GRPOConfig(
        output_dir=str(RunDir(run_dir).checkpoints_dir),
        per_device_train_batch_size=completions,
        per_device_eval_batch_size=completions,
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
        disable_tqdm=False,
        logging_first_step=True,
        num_generations=s.grpo_generations,
        max_completion_length=s.grpo_max_tokens,
        temperature=s.grpo_temperature,
        reward_weights=weights(rewards),
        beta=0.0,
        log_completions=False,
    )


def trainer_class():
    """GRPOTrainer, prompting as the run's template does and, on machines without Triton, scoring the log-probs
    with dpo.plain_lm_head."""
    from accelerate.utils import is_peft_model
    from trl import GRPOTrainer

    plain = not has_triton_kernel()

    class LabGRPOTrainer(GRPOTrainer):
        add_special_tokens = False  # prompt_ids' rule: True for the Alpaca text, False for a chat template's

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if plain:  # (TRL has just patched its fused head in: the same model, another head)
                model = self.model.get_base_model() if is_peft_model(self.model) else self.model
                plain_lm_head(model, outputs=("log_probs", "entropy"), temperature=self.temperature)

        def _tokenize_prompts(self, prompts: list):
            ids = self.processing_class(text=prompts, add_special_tokens=self.add_special_tokens)["input_ids"]
            return ids, None, {}

    return LabGRPOTrainer


def build_trainer(
    s,
    plan,
    run_dir: Path,
    model,
    tok,
    train_rows: list[dict],
    val_rows: list[dict],
    save_every: int | None,
    callbacks: list,
):

    rewards = parse(s.rewards, tok)
    cls = trainer_class()
    cls.add_special_tokens = s.template == "alpaca"
    return cls(
        model=model,
        reward_funcs=rewards,
        args=grpo_config(s, plan, run_dir, bool(val_rows), rewards, save_every),
        train_dataset=prompt_dataset(train_rows, tok, s),
        eval_dataset=prompt_dataset(val_rows, tok, s) if val_rows else None,
        processing_class=tok,
        callbacks=callbacks,
    )


def train_or_save(trainer, resume_from, save) -> None:
    """trainer.train; when a reward fails mid-run, save() the adapter trained so far, then fail with the reward's
    message and where the adapter is."""
    _or_save(trainer, save, lambda: trainer.train(resume_from_checkpoint=resume_from))


def evaluate_or_save(trainer, save) -> dict:
    """trainer.evaluate (the held-out prompts after training: GRPO samples and scores them), its metrics; when a
    reward fails there, save() the adapter and fail with the reward's message, as train_or_save does."""
    return _or_save(trainer, save, trainer.evaluate)


def _or_save(trainer, save, work):

    try:
        return work()
    except RewardFailed as e:
        why = e.args[0] if e.args else str(e)
        step = trainer.state.global_step
        try:
            save()
        except Exception as save_error:  # noqa: BLE001 - the reward's failure is the message that matters
            raise LoraLabError(
                msg(
                    "{why}. The adapter could not be saved either ({error}).",
                    why=why,
                    error=str(save_error).splitlines()[0][:200] if str(save_error) else type(save_error).__name__,
                )
            ) from e
        raise LoraLabError(
            msg("{why}. The adapter trained so far ({step} step(s)) is saved in the run folder.", why=why, step=step)
        ) from e


# --- the plan ---


def plan_grpo(out: dict, s, records: list | None, p: dict) -> None:
    """The GRPO part of a run's plan (plan.plan_run), into `out`: the prompts' errors and steps, the rewards with
    their weights, where it starts, what a step costs, and the warnings that save a round."""
    from dataclasses import replace

    out["method"] = "grpo"
    out["backend"] = "transformers"
    out.pop("batch_summary", None)  # (SFT's padding-free batching: GRPO pads each batch of completions)
    completions = s.micro_batch_size * s.grpo_generations
    length = min(s.max_seq_length, 256) + s.grpo_max_tokens  # a prompt and its longest answer
    out["estimated_memory_gb"] = estimate_memory_gb(
        p,
        replace(s, micro_batch_size=completions, max_seq_length=length),
        out["precision"],
        out["device"],
        "transformers",
    )
    out["generations"] = s.grpo_generations
    out["rewards"] = rewards.described(s.rewards)
    out.setdefault("notes", []).extend(_setup_notes(s, out["rewards"], out["device"]))
    if records is not None:
        _plan_prompts(out, s, records)


def _setup_notes(s, described: list, device: str) -> list[Msg]:
    """The notes on a GRPO run before its prompts are read: the rewards (described: as rewards.described gives
    them), where it starts, what a step costs, and (on a GPU) which libraries train it."""
    notes = [
        msg("Rewards (the run's reward is their weighted mean, from 0 to 1): {rewards}.", rewards=joined(described))
        if s.rewards
        else msg("No rewards are set: add --reward.")
    ]
    notes.append(
        msg("Starts from the adapter {parent} (its LoRA factors)", parent=s.init_adapter)
        if s.init_adapter
        else msg("Starts from the base model (new LoRA factors): the first answers are the base model's.")
    )
    notes.append(
        msg(
            "Cost: each step samples {n} answers ({prompts} prompt(s) × {g}) of up to {tokens} new tokens, "
            "one token at a time, then trains on them: sampling dominates, so a GRPO step takes several "
            "times as long as an SFT step on the same rows.",
            n=prompts_per_step(s) * s.grpo_generations,
            prompts=prompts_per_step(s),
            g=s.grpo_generations,
            tokens=s.grpo_max_tokens,
        )
    )
    if device == "cuda":
        notes.append(
            msg(
                "GRPO trains with transformers + PEFT + TRL, sampling with transformers' generate (Unsloth's "
                "GRPO path and vLLM are not used here)."
            )
        )
    return notes


def _plan_prompts(out: dict, s, records: list) -> None:
    """The prompts' part of the plan, into `out`: their errors, the split and the steps, and the notes on the run
    and its held-out prompts."""

    needs_reference = any(rewards.split_spec(r)[0] == "match" for r in s.rewards if isinstance(r, str))
    report = check_prompts(records, needs_reference)
    out["errors"] += [e["message"] for e in report["errors"][:20]]
    out["warnings"] += [w["message"] for w in report["warnings"][:20]]
    if report["errors"]:
        return
    train, val = split_rows(prompt_rows(records), s.val_fraction, s.seed)
    out.update(optimizer_steps(len(train), s), train_rows=len(train), val_rows=len(val), prompts=len(records))
    if len(train) < prompts_per_step(s):
        out["errors"].append(too_few_rows(len(train), s))
    notes = out["notes"]
    notes.insert(
        0,
        msg(
            "GRPO on {rows} prompts from {source} ({train} trained on, {val} held out): {steps} optimizer "
            "steps of {prompts} prompt(s), each answered {g} times (up to {tokens} new tokens, temperature "
            "{t}).",
            rows=len(records),
            source=s.dataset,
            train=len(train),
            val=len(val),
            steps=out["total_steps"],
            prompts=prompts_per_step(s),
            g=s.grpo_generations,
            tokens=s.grpo_max_tokens,
            t=s.grpo_temperature,
        ),
    )
    if val:
        notes.append(
            msg(
                "Held-out prompts: every {every} steps each is answered {g} times and scored (eval_reward), "
                "which costs as much sampling as a training step.",
                every=s.eval_steps,
                g=s.grpo_generations,
            )
        )
    out["warnings"] += step_warnings(out["total_steps"], out["warmup_steps"])
