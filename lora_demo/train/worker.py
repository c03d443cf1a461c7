"""The training worker: `python -m lora_demo.train.worker RUN_DIR`, started as a fresh process by the runner.

Running in its own interpreter means a crash, an OOM or a SIGKILL never takes the UI down, Unsloth can be
imported first (before transformers, which it patches), and stopping is a file the callback checks each step.
Everything it needs is in RUN_DIR: config.yaml and data/train.jsonl (+ data/val.jsonl).
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

import psutil

from lora_demo.data import build_example
from lora_demo.data.preferences import as_rows
from lora_demo.errors import LoraLabError
from lora_demo.i18n import Msg, joined, msg
from lora_demo.io import append_jsonl, read_json, read_jsonl, write_atomic
from lora_demo.models import load_model, model_path
from lora_demo.rundir import RunDir
from lora_demo.train import batching, checkpoints, dpo, grpo, probes, tracking
from lora_demo.train.batching import lean_metrics, sft_batching_args
from lora_demo.train.checkpoints import pick_for_resume, resumable, step_of
from lora_demo.train.grpo import evaluate_or_save, train_or_save
from lora_demo.train.grpo import optimizer_steps as grpo_steps
from lora_demo.train.lineage import load_parent_weights
from lora_demo.train.lora_config import lora_config, lora_kwargs
from lora_demo.train.runs import (
    ACTIVE,
    FINAL,
    OWNER_ENV,
    error_fields,
    model_card,
    pid_alive,
    read_status,
    stop_requested,
)
from lora_demo.train.runs import update_status as _update_status
from lora_demo.train.settings import TrainSettings
from lora_demo.train.sizing import optimizer_steps

# Under torchrun (DDP) every rank runs this file; only rank 0 writes the run's files (status, progress, adapter).
RANK, WORLD = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
# On the other machines of a multi-node run (node rank > 0), each machine's first process keeps the status of that
# machine's own folder (its log and how its part ended); nothing else is written there.
NODE = int(os.environ.get("GROUP_RANK", "0"))
FOLLOWER_LEAD = NODE > 0 and int(os.environ.get("LOCAL_RANK", "0")) == 0
NODES = WORLD // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))  # machines (torchrun gives each the same count)


def update_status(run_dir: Path, **fields) -> dict:
    return _update_status(run_dir, **fields) if RANK == 0 or FOLLOWER_LEAD else fields


def _rows(path: Path) -> list[dict]:
    """The rows the runner snapshotted (none when the file is absent, e.g. no validation split)."""
    return read_jsonl(path, strict=True) if path.is_file() else []


def load_for_training(s, plan, resume: bool = False) -> tuple[object, object]:
    """(peft model, tokenizer) on the chosen backend. A continued run starts from its parent's factors, except when
    it resumes: its checkpoint holds them (and the parent may have moved since). A DPO run loads its parent even
    then: the parent's factors are its reference (train/dpo.py), copied before the checkpoint's replace them."""
    s = s if not resume or s.method == "dpo" else type(s).from_dict({**s.to_dict(), "init_adapter": ""})

    path = model_path(s.model)
    if plan.backend == "unsloth":
        import unsloth  # noqa: F401 - must come before transformers/peft/trl: it patches them
        from unsloth import FastLanguageModel

        model, tok = FastLanguageModel.from_pretrained(
            model_name=path, max_seq_length=s.max_seq_length, dtype=None, load_in_4bit=s.load_in_4bit
        )
        model = FastLanguageModel.get_peft_model(
            model, **lora_kwargs(s), use_gradient_checkpointing="unsloth", random_state=s.seed
        )
        tok = getattr(tok, "tokenizer", tok)
        if s.init_adapter:  # Continue training: the parent's A and B instead of new factors
            load_parent_weights(model, s.init_adapter)
        return model, tok
    import torch
    from peft import get_peft_model, prepare_model_for_kbit_training

    torch.manual_seed(s.seed)
    # Weights stay fp32 on CPU: autocast (bf16 where the CPU has it) does the fast matmuls, while the frozen
    # weights and the LoRA factors keep full precision.
    dtype = plan.precision if plan.device == "cuda" else "fp32"
    lm = load_model(s.model, dtype=dtype, device=plan.device, load_in_4bit=s.load_in_4bit)
    model = lm.model
    if s.load_in_4bit:
        # Non-reentrant checkpointing: DDP cannot mark a LoRA weight ready twice, as the reentrant kind would.
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=plan.device == "cuda",
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    model = get_peft_model(model, lora_config(s))
    if s.init_adapter:  # Continue training: the parent's A and B instead of new factors
        load_parent_weights(model, s.init_adapter)
    return model, lm.tokenizer


def build_dataset(rows: list[dict], tok, s):
    """Pre-tokenized rows with labels from build_example (the Dataset tab's preview uses the same function)."""
    from datasets import Dataset

    examples = [
        build_example(r, tok, s.template, s.max_seq_length, s.train_on_responses_only, s.enable_thinking) for r in rows
    ]
    # A row left without a trained token (its prompt fills max_seq_length) adds no loss: dropped, as TRL drops it when
    # it truncates (padding-free runs leave truncation to build_example, so TRL does not).
    examples = [e for e in examples if any(x != -100 for x in e.labels)]
    return Dataset.from_list([{"input_ids": e.input_ids, "labels": e.labels} for e in examples])


def trainer_class(backend: str):
    """TRL's SFTTrainer, or on machines without Triton a subclass that uses Trainer's plain causal-LM loss.

    TRL 1.15 computes the SFT loss with a fused Triton kernel (trl.kernels.ChunkedLogProbFunction) and has no
    fallback when Triton is absent, as with a CPU-only torch: the first step dies with "'NoneType' object has no
    attribute 'apply'". transformers' Trainer.compute_loss gives the same token-averaged cross-entropy there.
    """
    from trl import SFTTrainer
    from trl.trainer import utils as trl_utils

    if backend == "unsloth":
        return SFTTrainer  # (Unsloth's patched SFTTrainer computes the loss in the model, without TRL's metrics)
    if getattr(trl_utils, "_ChunkedLogProbFunction", None) is not None:
        return lean_metrics(SFTTrainer)  # TRL's fused loss, its metrics read once per log instead of per micro-batch
    from transformers import Trainer

    class PlainLossSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return Trainer.compute_loss(
                self, model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )

    return PlainLossSFTTrainer


def sft_config(s, plan, run_dir: Path, has_eval: bool, save_every: int | None = None, model=None):
    from trl import SFTConfig

    optim = s.optimizer
    if plan.device == "cpu" and "8bit" in optim:
        optim = "adamw_torch"  # bitsandbytes' 8-bit optimizers need a GPU
    return SFTConfig(
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
        run_name=run_dir.name,  # TensorBoard in the run folder, + W&B/MLflow if asked
        bf16=plan.precision == "bf16",
        fp16=plan.precision == "fp16",
        use_cpu=plan.device == "cpu",
        dataloader_num_workers=0,
        **sft_batching_args(s, WORLD),  # padding-free/packing, token counting
        disable_tqdm=RANK != 0,
        logging_first_step=True,
        ddp_find_unused_parameters=False if WORLD > 1 else None,
        # A lost machine fails the others' next collective after this long (default 30 min); a slow load must fit.
        **({"ddp_timeout": 600} if NODES > 1 else {}),
        **fsdp_args(s, plan, model),
    )


def fsdp_args(s, plan, model) -> dict:
    """FSDP2 through accelerate (transformers' Trainer builds it from these): one shard unit per decoder layer,
    the full adapter gathered on rank 0 when it is saved."""
    if not s.fsdp or WORLD <= 1:
        return {}
    layers = list(getattr(model, "_no_split_modules", None) or getattr(model.get_base_model(), "_no_split_modules", []))
    # Checkpointing by FSDP's own wrapper (Trainer's gradient checkpointing would gather every layer twice).
    return {
        "fsdp": True,
        "gradient_checkpointing": False,
        "fsdp_config": {
            "version": 2,
            "transformer_layer_cls_to_wrap": layers,
            "state_dict_type": "FULL_STATE_DICT",
            "reshard_after_forward": True,
            "activation_checkpointing": plan.device == "cuda",
        },
    }


def run(run_dir: Path, resume: bool = False) -> str:
    """Train one run to completion (or stop); returns the final status. resume: from its newest whole checkpoint."""
    s = _run_settings(run_dir)
    train_rows, val_rows = _rows(RunDir(run_dir).train_rows_path), _rows(RunDir(run_dir).val_rows_path)
    ckpt = resume_point(run_dir) if resume else None
    plan = _device_plan(s)
    update_status(
        run_dir,
        status="loading",
        device=plan.device_name,
        backend=plan.backend,
        precision=plan.precision,
        num_processes=WORLD,
        **({"num_nodes": NODES} if NODES > 1 else {}),
    )
    model, tok = load_for_training(s, plan, resume)
    plan = _plan_for_model(run_dir, s, model, len(train_rows), len(val_rows))
    s, trainer, callback, milestones = _trainer_for_run(run_dir, s, plan, model, tok, train_rows, val_rows)
    # The last look at STOP before training: `prepared` first, so a Stop that finds it unset is sure to be seen here
    # and says "nothing will be saved" (runs.stop_notice). Under DDP the ranks agree on a stop at the first step.
    update_status(run_dir, prepared=True)
    if WORLD == 1 and stop_requested(run_dir):
        return _finish(run_dir, "stopped", error=msg("Stopped before training started: no adapter was saved."))
    check_same_job(run_dir)
    if FOLLOWER_LEAD:  # (rank 0's progress callback says so in node 0's folder; this one keeps the step there)
        update_status(run_dir, status="training")
        trainer.add_callback(node_heartbeat(run_dir))

    def save_so_far():  # GRPO: a reward that fails mid-run keeps the adapter trained so far (train/grpo.py)
        save_adapter(model, tok, run_dir, s.model)

    _train(trainer, s, ckpt, save_so_far)
    stopped = callback.stopped  # the same on every rank (the callback agrees on it): evaluate is collective
    if val_rows and not stopped:
        _evaluate(run_dir, trainer, s, save_so_far)
    return _save_and_finish(run_dir, s, trainer, model, tok, milestones, stopped)


def _run_settings(run_dir: Path):
    """The run's settings from its config.yaml, less the probes under FSDP."""

    s = TrainSettings.from_yaml(RunDir(run_dir).config_path)
    if s.fsdp and WORLD > 1 and s.probe_tokens:  # probes generate on rank 0 alone, which a sharded model cannot do
        s = type(s).from_dict({**s.to_dict(), "probe_tokens": 0})
        print("FSDP: probes are off (they generate on one process, and the model is sharded over all).", flush=True)
    return s


def _device_plan(s, work: int | None = None):
    """This rank's device plan for settings s and its method (DPO: preference pairs from an SFT adapter, train/
    dpo.py; GRPO: rewarded answers to prompts, train/grpo.py). work: the loaded model's parameters less its
    embeddings (before the load, detect's default)."""
    from lora_demo.device import detect  # (imports torch)

    tokens = s.micro_batch_size * s.max_seq_length
    plan = ddp_plan(detect(tokens_per_step=tokens) if work is None else detect(work, tokens))
    return dpo_plan(plan) if s.method == "dpo" else grpo_plan(plan) if s.method == "grpo" else plan


def _plan_for_model(run_dir: Path, s, model, train_rows: int, val_rows: int):
    """The device plan again, now that the model is loaded: threads and CPU precision follow the work of this model
    (the first plan assumed a 135M model)."""
    import torch

    work = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    plan = _device_plan(s, work)
    torch.set_num_threads(plan.cpu_threads)
    update_status(
        run_dir,
        cpu_threads=plan.cpu_threads,
        precision=plan.precision,
        train_rows=train_rows,
        val_rows=val_rows,
    )
    return plan


def _trainer_for_run(run_dir: Path, s, plan, model, tok, train_rows: list[dict], val_rows: list[dict]):
    """(settings, trainer, progress callback, milestones) of the run's method, ready to train: the batching set
    (SFT), the callbacks added, the tokens counted and the trackers last."""
    # (imported after load_for_training: these import transformers, which Unsloth must patch first)
    from lora_demo.train.callback import ProgressCallback  # deferred: transformers, after Unsloth has patched it

    if s.method not in ("dpo", "grpo"):  # (DPO batches pairs as set, GRPO its completions: TRL pads them)
        s = batching.for_run(run_dir, s, plan, model, tok, train_rows)  # padding-free, micro batch from free memory
    every = checkpoints.save_every(s.save_steps, _total_steps(s, len(train_rows)))
    callback = ProgressCallback(run_dir, compiles_first_step=plan.backend == "unsloth", save_on_stop=bool(every))
    milestones = _milestones(run_dir, s, plan, model, tok, train_rows, val_rows)
    callbacks = [callback, milestones, callback.clock]  # the clock last: see callback
    trainer = _method_trainer(s, plan, run_dir, model, tok, train_rows, val_rows, every, callbacks)
    update_status(run_dir, parallelism="fsdp" if trainer.is_fsdp_enabled else "ddp" if WORLD > 1 else "single")
    if s.method != "grpo":  # (GRPO counts its prompt and completion tokens itself)
        batching.count_tokens(trainer, run_dir)
    tracking.trackers_last(trainer, run_dir)  # TensorBoard (W&B, MLflow) after the callback that adds tokens/s
    return s, trainer, callback, milestones


def _total_steps(s, n_rows: int) -> int:
    """The run's optimizer steps, as its trainer counts them (GRPO: prompts per step, train/grpo.py)."""
    if s.method == "grpo":
        return grpo_steps(n_rows, s)["total_steps"]

    return optimizer_steps(n_rows, s)["total_steps"]


def _milestones(run_dir: Path, s, plan, model, tok, train_rows: list[dict], val_rows: list[dict]):
    """The callback that probes the model and keeps the milestones (DPO: probed with the pairs' prompts)."""
    from lora_demo.train.milestones import MilestoneCallback  # (imports transformers: after Unsloth)

    sources = (as_rows(train_rows), as_rows(val_rows)) if s.method == "dpo" else (train_rows, val_rows)
    return MilestoneCallback(
        run_dir,
        s,
        model,
        tok,
        probes.probe_rows(s.probe_prompts, *sources, s.probe_rows),
        unsloth=plan.backend == "unsloth",
    )


def _method_trainer(s, plan, run_dir: Path, model, tok, train_rows, val_rows, every, callbacks: list):
    """The trainer of the run's method: DPO's and GRPO's from their modules, else TRL's SFTTrainer."""
    if s.method == "dpo":
        return dpo.build_trainer(s, plan, run_dir, model, tok, train_rows, val_rows, every, callbacks=callbacks)
    if s.method == "grpo":
        return grpo.build_trainer(s, plan, run_dir, model, tok, train_rows, val_rows, every, callbacks=callbacks)
    return trainer_class(plan.backend)(
        model=model,
        args=sft_config(s, plan, run_dir, bool(val_rows), every, model),
        train_dataset=build_dataset(train_rows, tok, s),
        eval_dataset=build_dataset(val_rows, tok, s) if val_rows else None,
        processing_class=tok,
        callbacks=callbacks,
    )


def _train(trainer, s, ckpt: Path | None, save_so_far) -> None:
    """Train from the start or from checkpoint ckpt. GRPO: a reward that fails mid-run saves the adapter so far
    (save_so_far), then the run fails with its message."""
    resume_from = str(ckpt) if ckpt else None
    if s.method == "grpo":
        train_or_save(trainer, resume_from, save_so_far)
    else:
        trainer.train(resume_from_checkpoint=resume_from)


def _evaluate(run_dir: Path, trainer, s, save_so_far) -> None:
    """The held-out loss (and GRPO's reward) into the status. (GRPO's evaluate samples and scores too: a failing
    reward keeps the adapter.)"""
    metrics = evaluate_or_save(trainer, save_so_far) if s.method == "grpo" else trainer.evaluate()
    update_status(
        run_dir,
        eval_loss=float(metrics["eval_loss"]),
        **({"eval_reward": float(metrics["eval_reward"])} if "eval_reward" in metrics else {}),
    )


def _save_and_finish(run_dir: Path, s, trainer, model, tok, milestones, stopped: bool) -> str:
    """The adapter saved (gathered from the shards under FSDP), the last probes and the slimmed checkpoints; then
    the final status."""

    if trainer.is_fsdp_enabled:  # every rank takes part in gathering the sharded adapter; the main process writes
        trainer.save_model(str(run_dir))
    if RANK != 0:  # (on another machine its first process records how this machine's part ended)
        return _finish(run_dir, "stopped" if stopped else "completed", step=trainer.state.global_step)
    save_adapter(model, tok, run_dir, s.model, weights=not trainer.is_fsdp_enabled)
    if not stopped:  # nothing resumes a completed run: its checkpoints keep their adapters only
        milestones.final(trainer.state.global_step)  # after the save: a failing probe never costs the adapter
        checkpoints.slim(run_dir)
    return _finish(run_dir, "stopped" if stopped else "completed")


def node_heartbeat(run_dir: Path):
    """On another machine of a multi-node run: its folder's status follows the step (at most every 5 s), so its
    CLI's bar moves and a shared runs folder sees it alive. (A function: transformers is imported late here.)"""
    from transformers import TrainerCallback

    class NodeHeartbeat(TrainerCallback):
        last = 0.0

        def on_step_end(self, args, state, control, **kw):
            if time.time() - self.last >= 5.0 or state.global_step >= state.max_steps:
                self.last = time.time()
                update_status(run_dir, step=state.global_step, total_steps=state.max_steps)

    return NodeHeartbeat()


def check_same_job(run_dir: Path) -> None:
    """Several machines must train the same settings on the same rows, or their step counts differ and the first
    to finish waits for the others until the timeout: compare a fingerprint of config (less node_rank) and rows."""
    import hashlib

    if NODES <= 1:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        return
    folder = RunDir(run_dir)
    cfg = folder.read_config()
    cfg.pop("node_rank", None)
    digest = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode())
    for path in (folder.train_rows_path, folder.val_rows_path):
        digest.update(path.read_bytes() if path.is_file() else b"")
    prints = [None] * WORLD
    dist.all_gather_object(prints, (NODE, digest.hexdigest()))
    odd = sorted({node for node, h in prints if h != prints[0][1]})
    if odd:
        raise LoraLabError(
            msg(
                "Node(s) {nodes} would train other settings or rows than node 0: run the same command "
                "(the same config, dataset and flags, only --node-rank differs) on every machine.",
                nodes=", ".join(map(str, odd)),
            )
        )


def resume_point(run_dir: Path) -> Path:
    """The newest whole checkpoint; newer broken ones are set aside, and the resume is marked on the curve."""

    # Under DDP the Runner has set the broken ones aside before launching, so every rank reads the same folder.
    ckpt, skipped = pick_for_resume(run_dir) if WORLD == 1 else resumable(run_dir)
    skipped = skipped or read_status(run_dir).get("notices") or []  # the Runner set them aside before launching
    if ckpt is None:
        raise LoraLabError(msg("No whole checkpoint to resume from. {why}", why=joined(skipped, sep=" ")))
    for note in skipped:
        print(note, flush=True)
    if RANK == 0:
        append_jsonl(
            RunDir(run_dir).progress_path,
            {
                "type": "stage",
                "stage": "resumed",
                "step": step_of(ckpt),
                "time": round(time.time(), 3),
                "skipped": skipped,
            },
        )
        update_status(run_dir, resumed_from=step_of(ckpt), step=step_of(ckpt), notices=skipped)
    return ckpt


def ddp_plan(plan):
    """The device plan for this rank: under DDP the transformers backend (Unsloth does not train under DDP in this
    version), and the CPU's threads shared among the ranks."""
    from dataclasses import replace

    if WORLD <= 1:
        return plan
    local = int(os.environ.get("LOCAL_WORLD_SIZE", WORLD))  # the processes of this machine share its cores
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1  # (Slurm pins)
    threads = max(1, cores // local) if plan.device == "cpu" else plan.cpu_threads
    backend = "transformers"
    return replace(plan, backend=backend, cpu_threads=threads, backend_reason="DDP: transformers + PEFT on every rank")


def dpo_plan(plan):
    """A DPO run's device plan: the transformers backend (train/dpo.py says why)."""
    return dpo.device_plan(plan)


def grpo_plan(plan):
    """A GRPO run's device plan: the transformers backend (train/grpo.py says why)."""
    return grpo.device_plan(plan)


def save_adapter(model, tok, run_dir: Path, model_id: str, weights: bool = True) -> None:
    """PEFT adapter + tokenizer into the run folder, recording the registry id as the base model. weights=False:
    the adapter is already written (FSDP: Trainer.save_model gathered it from the shards)."""
    if weights:  # (a DPO run's frozen reference copy of its parent, adapter "ref", stays out: train/dpo.py)
        only = {"selected_adapters": ["default"]} if "ref" in (getattr(model, "peft_config", None) or {}) else {}
        model.save_pretrained(str(run_dir), **only)
    tok.save_pretrained(str(run_dir))
    cfg_file = RunDir(run_dir).adapter_config_path
    cfg = read_json(cfg_file)
    cfg["base_model_name_or_path"] = model_id
    write_atomic(cfg_file, json.dumps(cfg, indent=2))


def _finish(run_dir: Path, status: str, error: str | None = None, **more) -> str:

    fields = {"status": status, "ended": time.time(), **more}
    if error:
        fields.update(error_fields(error))  # the English text, and the message for the UI to translate
    if status == "failed" and WORLD > 1 and read_status(run_dir).get("status") in FINAL:
        return "failed"  # another rank already reported the first failure; later ones are its consequences
    if RANK == 0:  # the card first, as the status will read: whoever sees the final status finds the card made
        try:
            settings = RunDir(run_dir).read_config()
            write_atomic(RunDir(run_dir).card_path, model_card(run_dir, settings, {**read_status(run_dir), **fields}))
        except Exception:  # noqa: BLE001 - a card is never worth failing a finished run for
            traceback.print_exc()
    st = (_update_status if status == "failed" else update_status)(run_dir, **fields)  # any rank may report a failure
    return st["status"]


def explain_failure(exc: BaseException, run_dir: Path) -> Msg | str:
    """One message naming cause and fix, for the run's status and the UI."""

    if isinstance(exc, LoraLabError):
        return exc.args[0] if len(exc.args) == 1 and isinstance(exc.args[0], Msg) else str(exc)
    name = type(exc).__name__
    text = str(exc)
    if "OutOfMemory" in name or "out of memory" in text.lower() or isinstance(exc, MemoryError):
        try:
            s = RunDir(run_dir).read_config()
            return msg(
                "Out of memory. Lower the micro batch size (raise gradient accumulation to keep the effective "
                "batch), shorten the max sequence length, turn on 4-bit loading, or pick a smaller model (now "
                "micro batch {micro}, max length {max_len}, 4-bit {four_bit}).",
                micro=s["micro_batch_size"],
                max_len=s["max_seq_length"],
                four_bit=s["load_in_4bit"],
            )
        except Exception:  # noqa: BLE001
            return msg(
                "Out of memory. Lower the micro batch size (raise gradient accumulation to keep the effective "
                "batch), shorten the max sequence length, turn on 4-bit loading, or pick a smaller model."
            )
    first = (text.strip().splitlines() or [name])[0][:300]
    if WORLD > 1 and _peer_lost(exc) and NODES > 1:
        return msg(
            "A training process on another machine ended or could not be reached ({first}), so the run failed "
            "on every machine. Look at the other machines' train.log (node 0's run folder, or the one ending in "
            "-node<N> on the others); then start the run again, or continue from its last checkpoint with "
            "--continue-from.",
            first=first,
        )
    if WORLD > 1 and _peer_lost(exc):
        return msg(
            "Another training process of this run ended ({first}), so the run failed on every process; the "
            "first error is in train.log.",
            first=first,
        )
    return msg("Training failed ({kind}): {first}. The full trace is in train.log of this run.", kind=name, first=first)


def _peer_lost(exc: BaseException) -> bool:
    """Whether a collective failed because another rank went away: a torch.distributed error, or gloo's / NCCL's
    wording of a lost peer (never a download or tracker timeout that happens to say "timed out")."""
    try:
        from torch.distributed import DistError
    except ImportError:  # (a torch without distributed)
        DistError = ()  # noqa: N806
    low = str(exc).lower()
    dist = isinstance(exc, DistError) or any(k in low for k in ("gloo", "nccl", "c10d", "processgroup"))
    return dist and any(
        k in low
        for k in (
            "connection closed by peer",
            "connection reset by peer",
            "broken pipe",
            "remote",
            "aborted",
            "timed out",
            "timeout",
            "connection refused",
        )
    )


def owner_alive(pid: int, start: str | None) -> bool:
    """Whether the process that started this worker is still there (an exited one awaiting its reaper is not)."""
    try:
        zombie = psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.Error:  # gone, or not ours to see: pid_alive decides
        zombie = False
    return not zombie and pid_alive(pid, start)


def die_with_owner(run_dir: Path) -> None:
    """End this worker when the process named in $LORA_LAB_OWNER ends, however it ends (SIGKILL included): the CLI
    without --detach. Linux: PR_SET_PDEATHSIG sends SIGTERM when the parent ends; the owner is checked after setting
    it (it may have ended before), and a thread looks at it every 0.5 s, for the ranks under torchrun (whose parent
    is torchrun, not the owner) and where prctl is missing. The app's workers have no owner: they outlive an app
    restart, which re-attaches them."""
    import signal
    import threading

    owner = os.environ.get(OWNER_ENV, "")
    pid_text, _, start = owner.partition(":")
    if not pid_text.isdigit():
        return
    pid, start = int(pid_text), start or None

    def on_term(signum, frame):
        if owner_alive(pid, start):  # a SIGTERM from elsewhere (or torchrun ending): the usual end, as before
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        _owner_gone(run_dir)

    signal.signal(signal.SIGTERM, on_term)
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the thread below does it
    if not owner_alive(pid, start):  # it ended before prctl: no signal will come
        _owner_gone(run_dir)

    def watch():
        while owner_alive(pid, start) or _owner_gone(run_dir):
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True, name="owner-watch").start()


def _owner_gone(run_dir: Path) -> bool:
    """The owner ended: record why and end now, unless the adapter is being saved (it finishes, then the worker
    ends on its own). Returns True (to keep watching) only in that case."""

    stage = read_status(run_dir).get("status")
    if stage == "saving":
        return True
    if (RANK == 0 or FOLLOWER_LEAD) and stage in ACTIVE and NODES > 1:
        update_status(
            run_dir,
            status="failed",
            ended=time.time(),
            **error_fields(
                msg(
                    "The command that started this machine's part of the run (python -m lora_demo train) ended, so its "
                    "training processes ended too, and the run failed on every machine. Start it again, or continue from "
                    "its newest checkpoint with --continue-from, on every machine."
                )
            ),
        )
    elif RANK == 0 and stage in ACTIVE:
        update_status(
            run_dir,
            status="failed",
            ended=time.time(),
            **error_fields(
                msg(
                    "The command that started this run (python -m lora_demo train) ended, so its training process ended "
                    "too. Resume it: python -m lora_demo train --resume {path} (add --detach to let a run outlive the "
                    "terminal).",
                    path=str(run_dir),
                )
            ),
        )
    sys.stdout.flush()
    os._exit(1)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    run_dir = Path(argv[0])
    die_with_owner(run_dir)
    try:
        status = run(run_dir, resume="--resume" in argv[1:])
    except BaseException as exc:  # noqa: BLE001 - every failure ends as a status, never a silent death
        traceback.print_exc()
        why = explain_failure(exc, run_dir)
        _finish(
            run_dir,
            "failed",
            error=why if WORLD <= 1 else msg("Process {rank} of {world}: {why}", rank=RANK, world=WORLD, why=why),
        )
        return 1
    if WORLD > 1:  # torchrun takes any non-zero exit for a crash and ends the other ranks (rank 0 may be saving)
        return 0
    return 0 if status == "completed" else 3


if __name__ == "__main__":
    sys.exit(main())
