"""Issue 28, item 19: the top-level examples/ folder, where a newcomer looks first: every config in it is valid
TrainSettings whose dataset resolves, and the datasets it names live in one place (lora_demo/examples/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lora_demo.data import EXAMPLES_DIR
from lora_demo.train.runner import resolve_rows
from lora_demo.train.settings import TrainSettings

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "examples").glob("*.yaml"))


def test_the_examples_folder_has_the_ready_configs():
    names = {p.name for p in CONFIGS}
    assert {"cpu-demo.yaml", "qwen3-cuda-recipe.yaml", "continue-training.yaml"} <= names
    assert (ROOT / "examples" / "README.md").is_file()
    assert not list((ROOT / "examples").glob("*.jsonl"))  # the datasets have one home: lora_demo/examples/


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_example_config_is_valid_and_its_dataset_resolves(path, tmp_path):
    s = TrainSettings.from_yaml(path)
    rows = resolve_rows(s.dataset, tmp_path)
    assert rows, f"{path.name}: {s.dataset} has no rows"
    if s.dataset.startswith("example:"):
        assert (EXAMPLES_DIR / f"{s.dataset.split(':', 1)[1]}.jsonl").is_file()


def test_the_continue_config_continues_the_cpu_demo():
    demo = TrainSettings.from_yaml(ROOT / "examples" / "cpu-demo.yaml")
    cont = TrainSettings.from_yaml(ROOT / "examples" / "continue-training.yaml")
    assert cont.init_adapter == f"runs/{demo.run_name}"
    for k in ("model", "r", "lora_alpha", "target_modules", "use_rslora"):  # a parent's shape must match
        assert getattr(cont, k) == getattr(demo, k)
