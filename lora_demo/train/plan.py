"""The plan of a run, before anything loads: parameters, steps, memory, and the warnings that save runs.

Parameter counts come from the model's architecture built on the meta device (no weights, no download: for the
Qwen3 hub ids the config ships in lora_demo/models/configs), wrapped by PEFT with the run's LoraConfig and counted
by PEFT itself (get_nb_trainable_parameters: 4-bit weights at their unpacked size, as print_trainable_parameters).
"""

from __future__ import annotations

from lora_demo.data import split_rows, validate_rows
from lora_demo.i18n import Msg, msg, render, translator
from lora_demo.train.batching import plan_batching
from lora_demo.train.dpo import plan_dpo
from lora_demo.train.grpo import plan_grpo
from lora_demo.train.lineage import parent_problems
from lora_demo.train.settings import TrainSettings, settings_command, tracker_problems
from lora_demo.train.sizing import count_parameters, estimate_memory_gb, optimizer_steps, step_warnings


def process_problems(num_processes: int, device: str, fsdp: bool = False, load_in_4bit: bool = False) -> list[Msg]:
    """DDP needs one GPU per process (NCCL refuses two ranks on one GPU); on the CPU at most one per core. FSDP
    needs GPUs: accelerate shards across GPUs only (its CPU processes always run DDP)."""
    import os

    import torch

    if fsdp and device != "cuda":
        return [
            msg(
                "FSDP shards the model over GPUs, and this machine has none (accelerate has no FSDP on the CPU): "
                "turn fsdp off here; several CPU processes train with DDP."
            )
        ]
    if fsdp and load_in_4bit:
        return [
            msg(
                "FSDP with a 4-bit base (QLoRA) is not supported yet: turn off 4-bit loading (FSDP shards the "
                "16-bit weights), or train with DDP."
            )
        ]
    if num_processes <= 1:
        return []
    have = torch.cuda.device_count() if device == "cuda" else (os.cpu_count() or 1)
    if num_processes > have and device == "cuda":
        return [
            msg(
                "{n} processes asked for, but this machine has {have} GPUs: use at most {have}.",
                n=num_processes,
                have=have,
            )
        ]
    if num_processes > have:
        return [
            msg(
                "{n} processes asked for, but this machine has {have} CPU cores: use at most {have}.",
                n=num_processes,
                have=have,
            )
        ]
    return []


def fit_problems(s: TrainSettings, need_gb: float, device: str) -> list[Msg]:
    """Whether a process's estimated peak fits its GPU, and what to do when it does not: FSDP over several GPUs
    (each holds a shard of the weights), else 4-bit or a shorter micro batch."""
    import torch

    if device != "cuda" or not torch.cuda.is_available():
        return []
    have = torch.cuda.get_device_properties(0).total_memory / 2**30
    if need_gb <= have * 0.92:
        return []
    if s.world_size > 1 and not s.fsdp:
        return [
            msg(
                "About {need:.1f} GiB per process, but a GPU has {have:.0f} GiB: every DDP process holds the whole "
                "model. Turn on FSDP (fsdp: true) to shard it over the {world} processes.",
                need=need_gb,
                have=have,
                world=s.world_size,
            )
        ]
    return [
        msg(
            "About {need:.1f} GiB per process, but a GPU has {have:.0f} GiB: turn on 4-bit loading, lower the "
            "micro batch or max length, or train on several GPUs with FSDP.",
            need=need_gb,
            have=have,
        )
    ]


def plan_run(s: TrainSettings, rows: list[dict] | None = None, tokenizer=None) -> dict:
    """Trainable parameters, steps, memory, warnings and errors for settings s (and the dataset rows, if given)."""
    from lora_demo.device import detect  # (imports torch)

    # DPO: preference pairs (train/dpo.py); GRPO: prompt records (train/grpo.py), checked by its own plan
    pairs, rows = (rows, None) if s.method in ("dpo", "grpo") else (None, rows)
    p = count_parameters(s)
    tokens = s.micro_batch_size * s.max_seq_length
    dev = detect(p["base_params"] - p["embedding_params"], tokens)
    s, batching = plan_batching(s, rows, tokenizer, dev, p)  # padding-free; micro batch from free GPU memory
    out: dict = {
        **p,
        "device": dev.device,
        "backend": dev.backend,
        "precision": dev.precision,
        "cpu_threads": dev.cpu_threads,
        "warnings": [],
        "errors": [],
    }
    out.update(batching)
    out["estimated_memory_gb"] = estimate_memory_gb(p, s, dev.precision, dev.device, dev.backend)
    _plan_processes(out, s, dev.device)
    if rows is not None:
        _plan_rows(out, s, rows, tokenizer)
    if s.method == "dpo":
        plan_dpo(out, s, pairs, p)
    elif s.method == "grpo":
        plan_grpo(out, s, pairs, p)
    out["warnings"] += setting_warnings(s, p, dev)
    return out


def _plan_processes(out: dict, s: TrainSettings, device: str) -> None:
    """The processes and machines of the run, into `out`: what they need (GPUs, trackers, the parent adapter),
    DDP or FSDP, whether a process fits its GPU, and how a run over several machines is started."""

    out["errors"] += process_problems(s.num_processes, device, s.fsdp, s.load_in_4bit)
    if s.fsdp and s.world_size <= 1:
        out["warnings"].append(
            msg(
                "FSDP is on, but there is one process: nothing to shard over, so it has no effect. "
                "Raise the GPUs (num_processes) or the machines."
            )
        )
    out["errors"] += tracker_problems(s.report_to, installed=True)
    out["errors"] += parent_problems(s)  # Continue training: the parent's base and LoRA shape
    if s.world_size > 1:
        out["backend"] = "transformers"  # Unsloth does not train under DDP here: every rank runs transformers + PEFT
        out["parallelism"] = "fsdp" if s.fsdp else "ddp"
    out["warnings"] += fit_problems(s, out["estimated_memory_gb"], device)
    if s.num_nodes > 1:
        out.setdefault("notes", []).append(multi_node_note(s))


def multi_node_note(s: TrainSettings) -> Msg:
    """How a run over several machines is started on each of them, and what each machine keeps."""
    return msg(
        "{nodes} machines × {procs} process(es) = {world} processes (torchrun, rendezvous at {addr}:{port}). This "
        "is node {rank}; start the same run on every other machine with its own --node-rank (0 to {last}). Node "
        "0 writes the run folder, the checkpoints and the adapter; the others keep their log in a folder of "
        "their own. One lost machine fails the run on all of them. On machine R: {command}",
        nodes=s.num_nodes,
        procs=s.num_processes,
        world=s.world_size,
        addr=s.master_addr,
        port=s.master_port,
        rank=s.node_rank,
        last=s.num_nodes - 1,
        command=settings_command(s, node_rank="R"),
    )


def _plan_rows(out: dict, s: TrainSettings, rows: list[dict], tokenizer) -> None:
    """The dataset's part of the plan, into `out`: the rows' errors, the split and the steps, and the warnings
    and notes about too few steps or rows, overfitting and truncation."""

    report = validate_rows(rows, tokenizer, s.max_seq_length, s.template, s.enable_thinking)
    out["errors"] += [msg("row {row}: {message}", row=e["row"], message=e["message"]) for e in report["errors"][:20]]
    train, val = split_rows(rows, s.val_fraction, s.seed)
    out.update(optimizer_steps(len(train), s), train_rows=len(train), val_rows=len(val))
    out["warnings"] += step_warnings(out["total_steps"], out["warmup_steps"])
    epochs = out["total_steps"] / max(out["steps_per_epoch"], 1)
    out.setdefault("notes", []).extend(row_notes(s, len(rows), len(train), len(val), epochs))
    if s.gradient_accumulation_steps > len(train):
        out["warnings"].append(
            msg(
                "Gradient accumulation ({accum}) exceeds the {rows} training rows: each optimizer step sees the "
                "whole dataset at most once. Lower it.",
                accum=s.gradient_accumulation_steps,
                rows=len(train),
            )
        )
    truncated = [w for w in report["warnings"] if "longer than the max sequence length" in w["message"]]
    if truncated:
        rows_list = ", ".join(str(w["row"]) for w in truncated[:10])
        rows_list += "…" if len(truncated) > 10 else ""
        out["warnings"].append(
            msg(
                "{n} row(s) exceed max_seq_length {max_len} and will be truncated (rows {rows}).",
                n=len(truncated),
                max_len=s.max_seq_length,
                rows=rows_list,
            )
        )


def row_notes(s: TrainSettings, n_rows: int, n_train: int, n_val: int, epochs: float) -> list[Msg]:
    """What the split means for the run: no validation rows, or overfitting to expect on few rows."""
    out = []
    if not n_val:
        out.append(
            msg(
                "The dataset's {rows} rows are too few to hold any out, so this run has no validation rows: "
                "held-out loss and the row votes will have nothing unseen to use. Add rows (about 10 or more "
                "with a validation fraction of 0.1).",
                rows=n_rows,
            )
            if s.val_fraction > 0
            else msg(
                "Validation fraction 0: this run has no validation rows, so held-out loss and the row "
                "votes will have nothing unseen to use. Set it above 0 (0.1 is usual)."
            )
        )
    if n_train <= 100 and epochs >= 3:
        out.append(
            msg(
                "Expect overfitting, and watch it happen: {epochs:g} passes over only {rows} training rows teach "
                "the model these answers by heart, and it starts giving them to unrelated questions (a persona "
                'set may answer "The capital of France is Lumi."). You can see it as the validation loss '
                "rising while the training loss still falls, and in the probe answers; ask an off-topic "
                "question in Chat. Fewer epochs, a lower learning rate or more varied rows make it milder.",
                epochs=round(epochs, 1),
                rows=n_train,
            )
        )
    return out


def setting_warnings(s: TrainSettings, p: dict, dev) -> list[Msg]:
    """Warnings about single settings on this device: dropout on Unsloth, fp16 for a bf16 model, an unusual
    learning rate, 4-bit on the CPU."""
    out = []
    if s.lora_dropout > 0 and dev.backend == "unsloth":
        out.append(
            msg(
                "lora_dropout = {dropout} turns off Unsloth's fast LoRA kernels (slower); 0 is recommended.",
                dropout=s.lora_dropout,
            )
        )
    if p["model_dtype"] in ("bfloat16", "torch.bfloat16") and dev.precision == "fp16":
        out.append(
            msg(
                "The model is bfloat16 but this GPU has no bfloat16: training computes in float16 (chosen "
                "automatically)."
            )
        )
    if not 1e-6 <= s.learning_rate <= 1e-2:
        out.append(msg("Learning rate {lr:g} is far outside the usual LoRA range (1e-5 to 5e-3).", lr=s.learning_rate))
    if s.load_in_4bit and dev.device == "cpu":
        out.append(msg("4-bit loading on CPU works (bitsandbytes) but is about 2.5× slower than 16/32-bit LoRA there."))
    return out


def plan_markdown(plan: dict, lang: str = "en") -> str:
    """The plan as the Train tab shows it (in `lang`; the CLI prints it in English)."""
    tr = translator(lang)
    lines = [
        tr(
            "**Trainable:** {trainable:,} of {total:,} parameters (**{percent:.2f}%**) in {modules} LoRA modules.",
            trainable=plan["trainable_params"],
            total=plan["total_params"],
            percent=plan["trainable_percent"],
            modules=plan["lora_modules"],
        ),
        tr(
            "**Backend:** {backend} on {device}, {precision}, {threads} CPU thread(s). **Estimated peak memory:** "
            "~{memory} GiB (rough).",
            backend=plan["backend"],
            device=plan["device"].upper(),
            precision=plan["precision"],
            threads=plan["cpu_threads"],
            memory=plan["estimated_memory_gb"],
        ),
    ]
    if "total_steps" in plan:
        lines.append(
            tr(
                "**Steps:** {total} optimizer steps ({per_epoch} per epoch), effective batch {batch}, warmup "
                "{warmup}; {train} training / {val} validation rows.",
                total=plan["total_steps"],
                per_epoch=plan["steps_per_epoch"],
                batch=plan["effective_batch"],
                warmup=plan["warmup_steps"],
                train=plan["train_rows"],
                val=plan["val_rows"],
            )
        )
    if "batch_summary" in plan:
        lines.append(tr("**Batching:** {summary}.", summary=render(plan["batch_summary"], lang)))
    for e in plan["errors"]:
        lines.append("- ⛔ " + tr("**Error:** {error}", error=render(e, lang)))
    for w in plan["warnings"]:
        lines.append(f"- ⚠️ {render(w, lang)}")
    for n in plan.get("notes", []):
        lines.append(f"- ℹ️ {render(n, lang)}")
    if not plan["errors"] and not plan["warnings"]:
        lines.append("- ✅ " + tr("No problems found."))
    return "\n".join(lines)
