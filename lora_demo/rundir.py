"""The layout of a run folder and of an adapter folder: the one place their files are named.

runs/<unique name>/ holds everything about one training run:

config.yaml            TrainSettings (repeat with: python -m lora_demo train --config runs/<name>/config.yaml)
status.json            status (starting/loading/compiling/training/saving/completed/stopped/failed), times, pid
progress.jsonl         one JSON record per logging step (written by the worker's TrainerCallback)
probes.jsonl           the model's answers to the probe prompts (train/probes.py)
tensorboard/           TensorBoard event files: train loss, learning rate, grad norm, tokens/s, validation loss, probe
                       answers as text (`tensorboard --logdir runs`)
train.log              the worker's stdout/stderr
data/train.jsonl, data/val.jsonl    the exact rows trained and validated on
checkpoints/checkpoint-<step>/      what Resume continues from and Chat can load (train/checkpoints.py)
adapter_config.json, adapter_model.safetensors, tokenizer files   the PEFT adapter
README.md              model card (Hugging Face layout)
votes.jsonl            blind A/B votes on the final adapter (votes-checkpoint-<step>.jsonl: on a checkpoint)
exports/, merged/      what the exports write (export/layout.py names the files inside)
STOP                   present when a stop was requested (the Train tab's Stop, `python -m lora_demo stop RUN_DIR`)

An adapter folder (a run, one of its checkpoints, a rank-k copy, any PEFT adapter) is AdapterDir: PEFT's two files,
and a config.yaml where LoRA Lab wrote one. A leaf module: the standard library, yaml and lora_demo.io only.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from lora_demo.io import read_json, read_text, write_json_atomic

# Any PEFT adapter folder.
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_WEIGHTS_BIN = "adapter_model.bin"  # PEFT's older format, which LoRA Lab does not read
TRUNCATED = "TRUNCATED.json"  # a rank-k copy made by the Low-rank lab: {"source", "rank"}
# A run folder (a checkpoint holds a copy of CONFIG too).
CONFIG = "config.yaml"
STATUS = "status.json"
PROGRESS = "progress.jsonl"
PROBES = "probes.jsonl"
LOG = "train.log"
MODEL_CARD = "README.md"
VOTES = "votes.jsonl"
STOP = "STOP"
DATA = "data"
TRAIN_ROWS = "train.jsonl"
VAL_ROWS = "val.jsonl"
CHECKPOINTS = "checkpoints"
CHECKPOINT_PREFIX = "checkpoint-"
CHECKPOINT_MARKER = "lora_lab_checkpoint.json"  # written last into a finished checkpoint
TENSORBOARD = "tensorboard"
EXPORTS = "exports"
MERGED = "merged"


def read_yaml(path: str | Path):
    """A YAML file's value (None when empty), read never through a symlink (io.read_text). OSError, a
    UnicodeDecodeError and yaml.YAMLError pass through for the caller to handle."""
    return yaml.safe_load(read_text(path))


class AdapterDir:
    """A folder that holds (or is to hold) a PEFT adapter: a run, a checkpoint, a rank-k copy."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def adapter_config_path(self) -> Path:
        return self.path / ADAPTER_CONFIG

    @property
    def weights_path(self) -> Path:
        return self.path / ADAPTER_WEIGHTS

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def truncated_path(self) -> Path:
        return self.path / TRUNCATED

    def has_adapter_config(self) -> bool:
        return self.adapter_config_path.is_file()

    def has_weights(self) -> bool:
        return self.weights_path.is_file()

    def read_config(self):
        """config.yaml's value as written (not validated; None when empty): see read_yaml for the errors."""
        return read_yaml(self.config_path)

    def read_adapter_config(self):
        """adapter_config.json's value (OSError, ValueError pass through)."""
        return read_json(self.adapter_config_path)


class RunDir(AdapterDir):
    """runs/<name>/, the folder of one training run (the module docstring lists its files)."""

    @property
    def status_path(self) -> Path:
        return self.path / STATUS

    @property
    def progress_path(self) -> Path:
        return self.path / PROGRESS

    @property
    def probes_path(self) -> Path:
        return self.path / PROBES

    @property
    def log_path(self) -> Path:
        return self.path / LOG

    @property
    def card_path(self) -> Path:
        return self.path / MODEL_CARD

    @property
    def stop_path(self) -> Path:
        return self.path / STOP

    @property
    def data_dir(self) -> Path:
        return self.path / DATA

    @property
    def train_rows_path(self) -> Path:
        return self.data_dir / TRAIN_ROWS

    @property
    def val_rows_path(self) -> Path:
        return self.data_dir / VAL_ROWS

    def rows_path(self, split: str) -> Path:
        """data/<split>.jsonl ("train" or "val")."""
        return self.data_dir / f"{split}.jsonl"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / TENSORBOARD

    @property
    def exports_dir(self) -> Path:
        return self.path / EXPORTS

    @property
    def merged_dir(self) -> Path:
        return self.path / MERGED

    @property
    def votes_path(self) -> Path:
        return self.path / VOTES

    def checkpoint_votes_path(self, checkpoint: str) -> Path:
        """Where the votes on one of the run's checkpoints go (a checkpoint folder is pruned; its votes stay)."""
        return self.path / f"votes-{checkpoint}.jsonl"

    def is_run(self) -> bool:
        """Whether the folder is a run folder (it has a status.json)."""
        return self.status_path.is_file()

    def read_status(self) -> dict:
        """status.json, {} when missing or unreadable."""
        try:
            return read_json(self.status_path)
        except (OSError, ValueError):
            return {}

    def write_status(self, status: dict) -> None:
        write_json_atomic(self.status_path, status)

    @classmethod
    def of_checkpoint(cls, path: str | Path) -> RunDir | None:
        """The run a checkpoint folder (<run>/checkpoints/checkpoint-N) belongs to, by its place; else None."""
        path = Path(path)
        if path.parent.name == CHECKPOINTS and path.name.startswith(CHECKPOINT_PREFIX):
            return cls(path.parent.parent)
        return None
