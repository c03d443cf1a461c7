"""TrainSettings: every knob of a run, with help text, checked on creation, saved as YAML in every run.

The same dataclass drives the Train tab, `python -m lora_demo train --config run.yaml` and the config.yaml that
sits beside each adapter, so any run made in the UI can be repeated from the command line.
A new setting is added here only: its field, whose _f(...) gives its help text and how the Train tab's form shows
it (label, section, widget, limits); the form, the CLI's flags and config.yaml follow.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Literal, get_origin, get_type_hints

import yaml

from lora_demo.errors import InputError
from lora_demo.i18n import Msg, joined, msg
from lora_demo.models import default_model_id, resolve_model
from lora_demo.rundir import read_yaml
from lora_demo.train.rewards import spec_problem

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TARGET_PRESETS = {"all linear": ALL_LINEAR, "attention": ALL_LINEAR[:4], "q,v": ["q_proj", "v_proj"]}
SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")
OPTIMIZERS = ("adamw_8bit", "adamw_torch", "adamw_torch_fused", "paged_adamw_8bit", "sgd")
# Trackers a run may also report to (transformers' report_to names → the package each needs). TensorBoard is always
# on (its event files go into the run folder); "all" is never passed: it would pick up whatever happens to be installed.
TRACKERS = {"wandb": "wandb", "mlflow": "mlflow"}
# Training methods: supervised fine-tuning on instruction rows, DPO on preference pairs from an SFT adapter, or GRPO
# (reward-tuned: sampled answers scored by train/rewards.py, from the base or an adapter).
METHODS = ("sft", "dpo", "grpo")


# Ready-made GRPO rewards for the form's list (train/rewards.py reads them; any other spec may be typed in).
REWARD_PRESETS = [
    "format:<answer>",
    r"format:^[A-Z].*[.!?]$",
    "length:40",
    "match:fuzzy",
    "match:exact",
    "not_contains:As an AI",
    "contains:",
]
# Each field → how the Train tab shows it (see _f). Kept apart from the fields' metadata, which transformers'
# HfArgumentParser passes to argparse as they are (the CLI's flags: help and choices only).
_FORM: dict = {}


def _f(default, help: str, *, label: str, group: str, arg: int, choices=None, **form):
    """A setting: its default, its help text (the CLI's --help, the form's info line) and its choices (checked by the
    CLI's flag and offered by the form), then how the Train tab's form shows it:

    - label: its name on the form (translated by the language switch; an empty field's error names it by it);
    - group: the form's section it sits in (ui/train_tab.py lays the sections out, each in `arg` order);
    - arg: its place among the /train_plan and /train_start endpoints' arguments (API clients pass them by
      position: a new setting takes the next number);
    - widget: number, checkbox, text, dropdown, radio or checkboxes (default: from its type and choices);
    - options: the form's choices where the CLI takes any value (names: their shown names); info=False: no help
      line under it; method: the one training method that uses it (another method's run ignores it);
    - the widget's own arguments: elem_id, minimum, maximum, lines, scale, multiselect, allow_custom_value.
    """
    meta = {"help": help} if choices is None else {"help": help, "choices": choices}
    if isinstance(default, list):
        made = field(default_factory=lambda: list(default), metadata=meta)
    else:
        made = field(default=default, metadata=meta)
    _FORM[made] = {"label": label, "group": group, "arg": arg, "options": choices, **form}
    return made


@dataclass
class TrainSettings:
    # --- what to train ---
    model: str = _f(
        "smollm2-135m-instruct",
        "Base model: a registry id, a hub id, a local folder, or 'auto' (this device's default).",
        label="model",
        group="base",
        arg=0,
        widget="dropdown",
        allow_custom_value=True,
        elem_id="train-model",
    )
    dataset: str = _f(
        "example:persona",
        "Saved dataset name, 'example:<name>', or a .json/.jsonl/.csv/.parquet file. DPO: votes:<run> (the blind "
        "votes cast on a run; votes: alone for the run it continues from) or a prompt/chosen/rejected file. GRPO: "
        "instruction rows or a file of prompts (prompt or instruction, optional input and output).",
        label="dataset",
        group="base",
        arg=1,
        widget="dropdown",
        allow_custom_value=True,
    )
    method: str = _f(
        "sft",
        "Training method: sft (supervised: learn the rows' answers), dpo (preference tuning: make the chosen answer "
        "likelier than the rejected one, continuing from an SFT adapter) or grpo (reward tuning: sample answers to "
        "the prompts and make the better-rewarded ones likelier; from the base or an adapter).",
        choices=METHODS,
        label="training method",
        group="method",
        arg=42,
        widget="radio",
        names={"sft": "SFT", "dpo": "DPO", "grpo": "GRPO"},
        elem_id="train-method",
    )
    dpo_beta: float = _f(
        0.1,
        "DPO beta: how strongly the model is held to its reference (the SFT adapter it starts from); 0.1 is usual.",
        label="DPO beta",
        group="method",
        arg=43,
        method="dpo",
        minimum=0,
        elem_id="train-dpo-beta",
    )
    rewards: list[str] = _f(
        [],
        "GRPO: the rewards, each KIND:ARG with an optional weight @W at the end (default 1), every one scoring an "
        "answer from 0 to 1: format:REGEX (the answer matches) or format:<TAG> (inside <TAG>...</TAG>, partial "
        "credit), length:N (N tokens; falls linearly to 0 at 0 and 2N), contains:TEXT, not_contains:TEXT "
        "(case-insensitive), match:exact|fuzzy (against the row's output; fuzzy compares the first 500 characters of "
        "each), python:FILE.py[:FUNC] (a local function; refused when the app is shared). The run's reward is their "
        "weighted mean.",
        label="rewards (pick presets or type KIND:ARG@WEIGHT)",
        group="grpo",
        arg=44,
        method="grpo",
        widget="dropdown",
        options=REWARD_PRESETS,
        multiselect=True,
        allow_custom_value=True,
        elem_id="train-rewards",
        scale=3,
    )
    grpo_generations: int = _f(
        4,
        "GRPO: answers sampled per prompt (≥ 2); each is scored against the others of its group.",
        label="answers per prompt",
        group="grpo",
        arg=45,
        method="grpo",
    )
    grpo_max_tokens: int = _f(
        48,
        "GRPO: the longest answer sampled, in new tokens.",
        label="answer tokens",
        group="grpo",
        arg=46,
        method="grpo",
    )
    grpo_temperature: float = _f(
        1.0,
        "GRPO: sampling temperature of the answers (higher: more varied).",
        label="sampling temperature",
        group="grpo",
        arg=47,
        method="grpo",
    )
    template: Literal["alpaca", "chat"] = _f(
        "alpaca",
        "Prompt format: the Alpaca template + EOS, or the model's chat template.",
        label="template",
        group="base",
        arg=2,
        widget="radio",
        options=("alpaca", "chat"),
    )
    enable_thinking: bool = _f(
        False,
        "Qwen3 chat template: thinking mode on (trains on an empty think block when off).",
        label="Qwen3 thinking",
        group="base",
        arg=3,
        info=False,
        elem_id="train-thinking",
    )
    max_seq_length: int = _f(
        512,
        "Longest example in tokens; longer ones are truncated (the end of the answer is lost).",
        label="max sequence length",
        group="base",
        arg=4,
    )
    # --- LoRA ---
    r: int = _f(
        16, "LoRA rank: the inner dimension of B (d×r) and A (r×n). 8-64 is usual.", label="rank r", group="lora", arg=5
    )
    lora_alpha: float = _f(
        16,
        "LoRA alpha: the update is scaled by alpha/r (alpha/sqrt(r) with rsLoRA).",
        label="alpha",
        group="lora",
        arg=6,
    )
    lora_dropout: float = _f(
        0.0, "Dropout on the LoRA input. Unsloth's fast path needs 0.", label="dropout", group="lora", arg=7
    )
    target_modules: list[str] = _f(
        ALL_LINEAR,
        "Linear layers that get LoRA factors ('all linear' = q/k/v/o/gate/up/down).",
        label="target modules",
        group="lora",
        arg=8,
        options=ALL_LINEAR,
        info=False,
    )
    use_rslora: bool = _f(
        False,
        "Rank-stabilised LoRA: scale by alpha/sqrt(r) instead of alpha/r.",
        label="rsLoRA",
        group="lora",
        arg=9,
        info=False,
    )
    load_in_4bit: bool = _f(
        False,
        "Load the base model in 4 bit (QLoRA, bitsandbytes nf4). Default on CUDA.",
        label="4-bit (QLoRA)",
        group="lora",
        arg=10,
        info=False,
    )
    # --- optimisation ---
    learning_rate: float = _f(
        1e-3,
        "Peak learning rate. 2e-4 is usual for LoRA on GPU; small models on CPU like 1e-3.",
        label="learning rate",
        group="optimisation",
        arg=11,
    )
    num_epochs: float = _f(
        3.0,
        "Passes over the training rows (ignored when max_steps > 0).",
        label="epochs",
        group="optimisation",
        arg=12,
    )
    max_steps: int = _f(
        -1,
        "Stop after this many optimizer steps (-1: use num_epochs).",
        label="max steps (-1: epochs)",
        group="optimisation",
        arg=13,
    )
    micro_batch_size: int = _f(
        2,
        "Rows per forward pass (per_device_train_batch_size).",
        label="micro batch",
        group="optimisation",
        arg=14,
    )
    gradient_accumulation_steps: int = _f(
        1,
        "Micro-batches per optimizer step. Effective batch = micro batch × this.",
        label="grad. accumulation",
        group="optimisation",
        arg=15,
    )
    warmup: float = _f(
        5,
        "Learning-rate warmup: whole steps when ≥ 1, a fraction of all steps when below 1.",
        label="warmup (steps, or ratio < 1)",
        group="optimisation",
        arg=16,
    )
    lr_scheduler: str = _f(
        "linear",
        "Learning-rate schedule after warmup.",
        choices=SCHEDULERS,
        label="scheduler",
        group="optimisation",
        arg=17,
        info=False,
    )
    weight_decay: float = _f(
        0.01, "AdamW weight decay on the LoRA weights.", label="weight decay", group="optimisation", arg=18
    )
    optimizer: str = _f(
        "adamw_torch",
        "Optimizer. adamw_8bit (bitsandbytes) saves memory on CUDA.",
        choices=OPTIMIZERS,
        label="optimizer",
        group="optimisation",
        arg=19,
        info=False,
    )
    seed: int = _f(
        3407, "Random seed for LoRA init, shuffling and the split.", label="seed", group="optimisation", arg=20
    )
    # --- data handling ---
    train_on_responses_only: bool = _f(
        True,
        "Mask the prompt (label -100): learn only the answers.",
        label="train on responses only",
        group="data-switches",
        arg=21,
        info=False,
    )
    packing: bool = _f(
        False,
        "Pack several short examples into one sequence (faster on GPU, changes batches).",
        label="packing",
        group="data-switches",
        arg=22,
    )
    padding_free: bool = _f(
        True,
        "Concatenate each micro-batch's rows without padding; position ids keep the rows independent, so the loss "
        "is the padded batch's while no pad token is computed.",
        label="padding-free batches",
        group="data-switches",
        arg=34,
    )
    auto_micro_batch: bool = _f(
        True,
        "CUDA: choose the micro batch from free GPU memory and adjust accumulation so the effective batch (micro "
        "batch × accumulation) stays as set. The plan shows the choice.",
        label="auto micro batch (CUDA)",
        group="data-switches",
        arg=35,
    )
    val_fraction: float = _f(
        0.0,
        "Fraction of rows held out for validation loss (0: none).",
        label="validation fraction",
        group="data-numbers",
        arg=23,
    )
    # --- logging and saving ---
    logging_steps: int = _f(
        1,
        "Log loss, learning rate and grad norm every N optimizer steps.",
        label="logging steps",
        group="data-numbers",
        arg=24,
    )
    eval_steps: int = _f(
        10,
        "Compute the validation loss every N steps (when val_fraction > 0).",
        label="eval steps",
        group="data-numbers",
        arg=25,
    )
    save_steps: int = _f(
        0,
        "Save a checkpoint (adapter, optimizer, scheduler, RNG state, data position) every N steps: what Resume "
        "continues from and Chat can load. 0: about 5 over the run; -1: none (only the final adapter).",
        label="checkpoint every N steps (0: auto, about 5; -1: none)",
        group="data-numbers",
        arg=26,
    )
    keep_checkpoints: int = _f(
        3,
        "Keep the newest N (≥ 2) checkpoints; older ones are deleted as new ones are saved.",
        label="keep the newest N checkpoints",
        group="data-numbers",
        arg=29,
    )
    run_name: str = _f(
        "",
        "Optional name for the run folder (a unique name is made from it).",
        label="run name (optional)",
        group="data-name",
        arg=27,
        info=False,
    )
    num_processes: int = _f(
        1,
        "Data-parallel processes (torchrun DDP: one per GPU, NCCL; gloo on the CPU). The effective batch is micro "
        "batch × accumulation × processes. Above 1, training uses transformers + PEFT (Unsloth does not train "
        "under DDP here).",
        label="GPUs",
        group="gpus",
        arg=28,
        minimum=1,
    )
    fsdp: bool = _f(
        False,
        "Above 1 process: shard the weights, gradients and optimizer state across the processes (FSDP2 through "
        "accelerate) instead of a whole copy of the model in each (DDP). For a base that does not fit one GPU.",
        label="FSDP (shard the model over the GPUs)",
        group="machines",
        arg=41,
    )
    # --- several machines (torchrun's static rendezvous: node 0's global rank 0 writes the run folder) ---
    num_nodes: int = _f(
        1,
        "Machines training together (torchrun --nnodes). Run the same command on each, with its own node_rank; "
        "num_processes is per machine, the effective batch counts every process of every machine.",
        label="machines (nodes)",
        group="machines",
        arg=37,
        minimum=1,
    )
    node_rank: int = _f(
        0,
        "This machine's number, 0 to num_nodes - 1. Node 0 writes the run folder and the adapter.",
        label="this machine's node rank",
        group="machines",
        arg=38,
        minimum=0,
    )
    master_addr: str = _f(
        "",
        "Host name or address of node 0, reachable from every node (needed above 1 node).",
        label="node 0's address",
        group="machines",
        arg=39,
    )
    master_port: int = _f(
        29500,
        "A free TCP port on node 0 for the rendezvous (the same on every node).",
        label="rendezvous port",
        group="machines",
        arg=40,
        minimum=1,
        maximum=65535,
    )
    # --- continue and watch ---
    init_adapter: str = _f(
        "",
        "Continue training: start from this adapter (a run folder) instead of new LoRA factors. Its base model, "
        "rank, alpha and target modules are kept; the run records it as its parent.",
        label="continue from (parent adapter)",
        group="continue",
        arg=30,
        widget="dropdown",
        allow_custom_value=True,
        elem_id="train-parent",
    )
    probe_prompts: list[str] = _f(
        [],
        "Up to 3 prompts the model answers at step 0, at each checkpoint and at the end (empty: the first "
        "validation rows, else the first training rows).",
        label="probe prompts (one per line)",
        group="continue",
        arg=31,
        widget="text",
        lines=3,
        elem_id="train-probes",
    )
    probe_rows: int = _f(
        3,
        "Without probe prompts: how many of the first validation (else training) rows to probe.",
        label="rows to probe (no prompts given)",
        group="continue",
        arg=33,
        minimum=1,
        maximum=3,
    )
    probe_tokens: int = _f(
        32,
        "New tokens per probe answer (greedy); 0 turns probes off.",
        label="probe answer tokens (0: off)",
        group="continue",
        arg=32,
    )
    # --- tracking (every run also writes TensorBoard event files into its folder) ---
    report_to: list[str] = _f(
        [],
        "Also send the logged metrics to these trackers, as you have them configured: wandb (W&B: WANDB_API_KEY or "
        "`wandb login`), mlflow (MLFLOW_TRACKING_URI). Empty: TensorBoard in the run folder only, no network.",
        label="also report to",
        group="data-tracking",
        arg=36,
        options=list(TRACKERS),
        elem_id="train-report-to",
    )

    def __post_init__(self):
        if isinstance(self.model, str) and self.model.strip() == "auto":  # the same 'auto' as every tab and command
            self.model = resolve_model("auto")
        problems = self.problems()
        if problems:
            raise InputError(msg("Invalid settings: {problems}.", problems=joined(problems)))

    def problems(self) -> list[Msg]:
        """Every invalid value, each with what is allowed."""
        p = []

        def num(name, lo=None, hi=None, integer=False, lo_open=False):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                p.append(msg("{name} must be a number (got {value!r})", name=name, value=v))
                return
            if integer and int(v) != v:
                p.append(msg("{name} must be a whole number (got {value})", name=name, value=v))
            if lo is not None and (v <= lo if lo_open else v < lo):
                if lo_open:
                    p.append(msg("{name} must be > {lo} (got {value})", name=name, lo=lo, value=v))
                else:
                    p.append(msg("{name} must be ≥ {lo} (got {value})", name=name, lo=lo, value=v))
            if hi is not None and v > hi:
                p.append(msg("{name} must be ≤ {hi} (got {value})", name=name, hi=hi, value=v))

        num("max_seq_length", 16, 131072, True)
        num("r", 1, 1024, True)
        num("lora_alpha", 0, None, lo_open=True)
        num("lora_dropout", 0, 0.9)
        num("learning_rate", 0, 1, lo_open=True)
        num("num_epochs", 0, 1000, lo_open=True)
        num("max_steps", -1, 1_000_000, True)
        num("micro_batch_size", 1, 1024, True)
        num("gradient_accumulation_steps", 1, 4096, True)
        num("warmup", 0, 100_000)
        num("weight_decay", 0, 1)
        num("seed", 0, 2**32 - 1, True)
        num("val_fraction", 0, 0.9)
        num("logging_steps", 1, 100_000, True)
        num("eval_steps", 1, 100_000, True)
        num("save_steps", -1, 100_000, True)
        num("keep_checkpoints", 2, 1000, True)  # the Trainer prunes before the new one is marked whole
        num("probe_tokens", 0, 512, True)
        num("probe_rows", 1, 3, True)
        num("num_processes", 1, 64, True)
        num("num_nodes", 1, 1024, True)
        num("node_rank", 0, None, True)
        num("master_port", 1, 65535, True)
        if self.method == "dpo":  # (a method's own fields only: another's, hidden in the form, never block a run)
            num("dpo_beta", 0, 100, lo_open=True)
        if self.method == "grpo":
            num("grpo_generations", 2, 64, True)
            num("grpo_max_tokens", 1, 4096, True)
            num("grpo_temperature", 0, 10, lo_open=True)
        p += self._node_problems()
        p += self._method_problems()
        if self.max_steps == 0:
            p.append(msg("max_steps must be -1 (use epochs) or ≥ 1"))
        if self.template not in ("alpaca", "chat"):
            p.append(msg("template must be 'alpaca' or 'chat' (got {value!r})", value=self.template))
        if self.lr_scheduler not in SCHEDULERS:
            p.append(msg("lr_scheduler must be one of {choices}", choices=", ".join(SCHEDULERS)))
        if self.optimizer not in OPTIMIZERS:
            p.append(msg("optimizer must be one of {choices}", choices=", ".join(OPTIMIZERS)))
        p += self._list_problems()
        p += tracker_problems(self.report_to)
        return p

    @property
    def world_size(self) -> int:
        """Training processes in all: per machine × machines."""
        return self.num_processes * self.num_nodes

    def _node_problems(self) -> list[Msg]:
        p = []
        nodes, rank = self.num_nodes, self.node_rank
        if isinstance(nodes, int) and isinstance(rank, int) and not isinstance(rank, bool) and rank >= nodes >= 1:
            p.append(
                msg(
                    "node_rank must be below num_nodes ({nodes}): 0 to {last} (got {value})",
                    nodes=nodes,
                    last=nodes - 1,
                    value=rank,
                )
            )
        if not isinstance(self.master_addr, str) or any(c.isspace() for c in str(self.master_addr)):
            p.append(
                msg("master_addr must be a host name or address without spaces (got {value!r})", value=self.master_addr)
            )
        elif isinstance(nodes, int) and nodes > 1 and not self.master_addr.strip():
            p.append(
                msg(
                    "master_addr is needed with {nodes} nodes: the host name or address of node 0, reachable "
                    "from every node",
                    nodes=nodes,
                )
            )
        return p

    def _method_problems(self) -> list[Msg]:
        if self.method not in METHODS:
            return [
                msg("method must be one of {choices} (got {value!r})", choices=", ".join(METHODS), value=self.method)
            ]
        p = []
        if self.method == "dpo" and isinstance(self.init_adapter, str) and not self.init_adapter.strip():
            p.append(
                msg(
                    "method dpo starts from an SFT adapter and none is given: add --continue-from RUN (the SFT run "
                    "whose answers were voted on), or set init_adapter"
                )
            )
        procs, nodes = self.num_processes, self.num_nodes
        if self.method == "dpo" and isinstance(procs, int) and isinstance(nodes, int) and procs * nodes > 1:
            p.append(msg("method dpo trains in one process here: set num_processes and num_nodes to 1"))
        if self.method == "grpo" and isinstance(procs, int) and isinstance(nodes, int) and procs * nodes > 1:
            p.append(msg("method grpo trains in one process here: set num_processes and num_nodes to 1"))
        p += self._reward_problems()
        return p

    def _reward_problems(self) -> list[Msg]:

        if not isinstance(self.rewards, list):
            return [msg("rewards must be a list of reward specs, e.g. format:<answer> length:40@0.5")]
        if self.method != "grpo":  # (only grpo reads them: another method keeps whatever the form held)
            return []
        if not self.rewards:
            return [
                msg(
                    "method grpo needs at least one reward: add --reward KIND:ARG (e.g. --reward format:<answer> "
                    "--reward length:40), or set rewards"
                )
            ]
        return [p for p in map(spec_problem, self.rewards) if p is not None]  # (python rewards: grpo.checked_rewards)

    def _list_problems(self) -> list[Msg]:
        p = []
        if not isinstance(self.target_modules, list) or not self.target_modules:
            p.append(msg("target_modules must list at least one module, e.g. q_proj, v_proj"))
        elif any(not isinstance(t, str) or not t.replace("_", "").isalnum() for t in self.target_modules):
            p.append(msg("target_modules must be plain module names like q_proj (letters, digits, _)"))
        if not isinstance(self.probe_prompts, list) or any(not isinstance(t, str) for t in self.probe_prompts):
            p.append(msg("probe_prompts must be a list of prompts (text)"))
        elif len([t for t in self.probe_prompts if t.strip()]) > 3:
            p.append(msg("probe_prompts takes at most 3 prompts (got {count})", count=len(self.probe_prompts)))
        if not isinstance(self.init_adapter, str):
            p.append(msg("init_adapter must be a folder path (text), or empty"))
        if not str(self.model).strip():
            p.append(msg("model is empty"))
        if not str(self.dataset).strip():
            p.append(msg("dataset is empty"))
        return p

    # --- (de)serialisation ---
    def to_dict(self) -> dict:
        return asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    @classmethod
    def from_dict(cls, data: dict) -> TrainSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(
                msg(
                    "Unknown setting(s) {unknown}; the settings are: {known}.",
                    unknown=", ".join(unknown),
                    known=", ".join(sorted(known)),
                )
            )
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainSettings:
        try:
            data = read_yaml(path)
        except (OSError, yaml.YAMLError) as e:
            raise InputError(msg("Cannot read {path}: {why}", path=str(path), why=str(e).splitlines()[0])) from None
        if not isinstance(data, dict):
            raise InputError(msg("{path} must hold a mapping of settings (key: value lines).", path=str(path)))
        return cls.from_dict(data)

    @staticmethod
    def help() -> dict[str, str]:
        return {f.name: f.metadata.get("help", "") for f in fields(TrainSettings)}


def tracker_problems(report_to, installed: bool = False) -> list[Msg]:
    """What is wrong with report_to: a name LoRA Lab does not pass on, or (installed=True: at the start of a run
    and in its plan, never when a saved config is read, e.g. to export a run made on another machine) a tracker
    whose package is missing here."""
    if not isinstance(report_to, list) or any(not isinstance(t, str) for t in report_to):
        return [msg("report_to must be a list of tracker names: {choices} (or empty)", choices=", ".join(TRACKERS))]
    p = []
    for name in dict.fromkeys(report_to):
        if name not in TRACKERS:
            p.append(
                msg(
                    "report_to: unknown tracker {name!r}; the choices are {choices} (TensorBoard is always on)",
                    name=name,
                    choices=", ".join(TRACKERS),
                )
            )
        elif installed and not _installed(TRACKERS[name]) and name == "wandb":
            p.append(
                msg(
                    "report_to wandb needs the wandb package: pip install wandb (W&B then reads WANDB_API_KEY, "
                    "or the key saved by `wandb login`)"
                )
            )
        elif installed and not _installed(TRACKERS[name]):
            p.append(
                msg(
                    "report_to {name} needs the {package} package: pip install {package}",
                    name=name,
                    package=TRACKERS[name],
                )
            )
    return p


def _installed(package: str) -> bool:
    """Whether the package can be imported (a bare folder of that name, e.g. the `wandb/` runs folder W&B leaves in
    the working directory, is not the package)."""
    from importlib.util import find_spec

    try:
        spec = find_spec(package)
    except (ImportError, ValueError):
        return False
    return spec is not None and spec.origin is not None


def defaults_for(device: str, model: str | None = None) -> TrainSettings:
    """Defaults that really train on this device.

    CUDA: the seed's recipe (r=16, alpha=16, dropout 0, all linear, lr 2e-4, adamw_8bit, seed 3407, 4-bit), but
    with batch 2 × accumulation 4, 3 epochs and warmup 10% so a small dataset gets enough steps at a real
    learning rate (the seed's own run, 2 rows × accumulation 8 with warmup 5, trained at lr 0).
    CPU: SmolLM2-135M learns the 44-row persona example in about two minutes: lr 1e-3, batch 2, 3 epochs.
    Both hold out 10% of the rows for validation (held-out loss, the row votes); a dataset too small to split
    keeps every row for training, and the plan says so.
    """

    if device == "cuda":
        return TrainSettings(
            model=model or default_model_id(True),
            template="chat",
            max_seq_length=2048,
            learning_rate=2e-4,
            micro_batch_size=2,
            gradient_accumulation_steps=4,
            num_epochs=3,
            warmup=0.1,
            optimizer="adamw_8bit",
            load_in_4bit=True,
            val_fraction=0.1,
        )
    # Probes on 2 CPU cores: one row, 24 tokens, so they cost the run little (bench/bench_checkpoints.py); a GPU
    # does 3 × 32.
    return TrainSettings(model=model or default_model_id(False), probe_rows=1, probe_tokens=24, val_fraction=0.1)


def field_defaults() -> dict:
    out = {}
    for f in fields(TrainSettings):
        out[f.name] = f.default if f.default is not MISSING else f.default_factory()
    return out


def _type_name(annotation) -> str:
    """A setting's type as the form reads it: bool, int, float, str (a Literal too) or list."""
    origin = get_origin(annotation)
    return "str" if origin is Literal else (origin or annotation).__name__


def _widget(type_name: str, options) -> str:
    """The form's widget for a setting that names none: from its type, and whether the form offers choices."""
    if type_name == "bool":
        return "checkbox"
    if type_name in ("int", "float"):
        return "number"
    if type_name == "list":
        return "checkboxes"
    return "dropdown" if options else "text"


def form_fields() -> list[dict]:
    """The Train form's fields, in the order its endpoints take them (`arg`): each setting's name, type, default and
    help, and how the form shows it (_f's keywords; widget always set)."""
    types, defaults = get_type_hints(TrainSettings), field_defaults()
    out = []
    for f in fields(TrainSettings):
        form, type_name = _FORM[f], _type_name(types[f.name])
        widget = form.get("widget") or _widget(type_name, form["options"])
        out.append(
            {**form, "name": f.name, "type": type_name, "default": defaults[f.name], "help": f.metadata["help"]}
            | {"widget": widget}
        )
    return sorted(out, key=lambda e: e["arg"])


def settings_from_form(values: dict) -> TrainSettings:
    """TrainSettings from the Train form's values, by setting name: whole numbers may arrive as floats, an empty
    field as None (an error naming it by its label, except another method's hidden field: its default, unused),
    the probe prompts as text, one per line."""
    form = {e["name"]: e for e in form_fields()}
    data, defaults, method = dict(values), field_defaults(), values.get("method")
    for k, v in data.items():
        if v is None and form[k].get("method", method) != method:
            data[k] = defaults[k]
        elif v is None and k != "run_name":
            raise InputError(msg("{name} is empty: fill it in.", name=msg(form[k]["label"])))
        if form[k]["type"] == "int" and isinstance(v, float) and v.is_integer():
            data[k] = int(v)
    data["run_name"] = data["run_name"] or ""
    data["init_adapter"] = data["init_adapter"] or ""
    prompts = data["probe_prompts"]
    data["probe_prompts"] = (
        [t.strip() for t in prompts.splitlines() if t.strip()] if isinstance(prompts, str) else prompts
    )
    return TrainSettings.from_dict(data)


def settings_command(settings: TrainSettings, **override) -> str:
    """`python -m lora_demo train` with a flag for every setting that differs from a default the command could
    start from (the dataclass's, the CPU's or CUDA's: the other machine may be either), so it trains exactly these
    settings there (override: e.g. node_rank=1 for the command another machine runs)."""
    data, parts = {**settings.to_dict(), **override}, ["python -m lora_demo train"]
    bases = [field_defaults(), defaults_for("cpu").to_dict(), defaults_for("cuda").to_dict()]
    for k, v in data.items():
        if all(v == base[k] for base in bases):
            continue
        flag = "--" + k.replace("_", "-")
        if isinstance(v, list):
            parts.append(f"{flag} {' '.join(shlex.quote(str(x)) for x in v)}" if v else "")
        else:
            parts.append(f"{flag} {shlex.quote(str(v).lower() if isinstance(v, bool) else str(v))}")
    return " ".join(p for p in parts if p)
