"""CUDA-only: the Unsloth path trains the Qwen3-1.7B architecture in 4 bit through this engine.

No weights can be downloaded on the GPU machine, so the exact Qwen3-1.7B architecture is built from its config
with random bf16 weights (speed and memory do not depend on the values) and the offline Qwen3 tokenizer.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu


def build_random_qwen3(out: Path, config_name: str = "Qwen3-1.7B") -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from lora_demo.models.qwen_tiny import build_qwen3_tokenizer
    from lora_demo.models.registry import CONFIG_DIR

    if (out / "config.json").is_file():
        return out
    cfg = json.loads((CONFIG_DIR / f"{config_name}.json").read_text())
    config = AutoConfig.for_model(**{k: v for k, v in cfg.items() if k != "torch_dtype"})
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out)
    build_qwen3_tokenizer().save_pretrained(out)
    del model
    torch.cuda.empty_cache()
    return out


@pytest.fixture(scope="session")
def qwen3_1_7b(tmp_path_factory):
    path = Path(os.environ.get("LORA_LAB_GPU_MODEL", tmp_path_factory.mktemp("m") / "qwen3-1.7b"))
    return build_random_qwen3(path)


def test_device_policy_picks_unsloth_bf16():
    from lora_demo.device import detect

    plan = detect()
    assert plan.device == "cuda" and plan.precision == "bf16" and plan.problem is None
    assert plan.backend == "unsloth", plan.backend_reason


def test_unsloth_trains_qwen3_1_7b_4bit(qwen3_1_7b, tmp_path):
    from lora_demo.train.runner import Runner
    from lora_demo.train.runs import read_progress
    from lora_demo.train.settings import TrainSettings, defaults_for

    s = TrainSettings(**{**defaults_for("cuda").to_dict(), "model": str(qwen3_1_7b), "max_steps": 12, "warmup": 2,
                         "learning_rate": 1e-3})  # fmt: skip
    runner = Runner(tmp_path / "runs", tmp_path / "data")
    run_dir = runner.start(s)
    st = runner.wait(540)
    log = (run_dir / "train.log").read_text()[-3000:]
    assert st["status"] == "completed", f"{st}\n{log}"
    assert st["backend"] == "unsloth"
    logs = [p for p in read_progress(run_dir) if p.get("type") == "log"]
    assert len(logs) == 12 and all(p["gpu_peak_gb"] < 20 for p in logs)
    cfg = json.loads((run_dir / "adapter_config.json").read_text())
    assert cfg["r"] == 16 and set(cfg["target_modules"]) == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    print("GPU-FIGURES", json.dumps({"first_loss": logs[0]["loss"], "last_loss": logs[-1]["loss"],
                                     "s_per_step": logs[-1].get("s_per_step"), "gpu_peak_gb": logs[-1]["gpu_peak_gb"],
                                     "tokens_per_s": logs[-1].get("tokens_per_s")}))  # fmt: skip


def test_unsloth_checkpoints_probes_and_resume_after_sigkill(qwen3_1_7b, tmp_path):
    """On the GPU with Unsloth: checkpoints are written whole, the probes answer (through Unsloth's generate, which
    switches to inference and back) at step 0, each checkpoint and the end, and a run SIGKILLed after a checkpoint
    resumes to the end. Its adapter is compared with an uninterrupted run of the same settings."""
    import time

    from safetensors.torch import load_file

    from lora_demo.train import checkpoints, probes
    from lora_demo.train.runner import Runner
    from lora_demo.train.runs import read_progress, read_status
    from lora_demo.train.settings import TrainSettings, defaults_for

    s = TrainSettings(**{**defaults_for("cuda").to_dict(), "model": str(qwen3_1_7b), "max_steps": 12, "warmup": 2,
                         "learning_rate": 1e-3, "save_steps": 4})  # fmt: skip
    ref = Runner(tmp_path / "ref", tmp_path / "data")
    ref_dir = ref.start(s)
    assert ref.wait(540)["status"] == "completed", (ref_dir / "train.log").read_text()[-3000:]
    runner = Runner(tmp_path / "runs", tmp_path / "data")
    run_dir = runner.start(s)
    marker = run_dir / "checkpoints" / "checkpoint-4" / checkpoints.MARKER
    deadline = time.time() + 400
    while not marker.is_file():
        assert time.time() < deadline and read_status(run_dir).get("status") not in ("failed", "completed")
        time.sleep(0.05)
    runner.kill()
    t0 = time.time()
    ckpt, skipped = Runner(tmp_path / "runs", tmp_path / "data").resume(run_dir)  # as after an app restart
    while read_status(run_dir).get("status") not in ("completed", "failed"):
        assert time.time() - t0 < 540
        time.sleep(0.5)
    st = read_status(run_dir)
    assert st["status"] == "completed" and st["step"] == 12, (run_dir / "train.log").read_text()[-3000:]
    points = probes.read(run_dir)
    assert [p["step"] for p in points] == [0, 4, 8, 12] and len(points[0]["answers"]) == 3
    logs = [p["step"] for p in read_progress(run_dir) if p.get("type") == "log"]
    assert logs == list(range(1, 13))
    a, b = load_file(str(run_dir / "adapter_model.safetensors")), load_file(str(ref_dir / "adapter_model.safetensors"))
    diff = max(
        float((a[k].float() - b[k].float()).norm() / b[k].float().norm().clamp_min(1e-12)) for k in b if "lora_B" in k
    )
    print("GPU-RESUME", json.dumps({"resumed_from": checkpoints.step_of(ckpt), "max_rel_diff_lora_B": diff,
                                    "probe_s_per_point": [p["seconds"] for p in points]}))  # fmt: skip
    assert diff < 0.05, diff  # 4-bit kernels on the GPU are not bit-deterministic; a wrong resume differs by O(1)


def test_chat_on_cuda_base_row_is_the_base(qwen3_1_7b, tmp_path):
    """On the GPU too, the mixed batch's base row equals the base model and the tuned row differs."""
    import torch
    from peft import LoraConfig, get_peft_model

    from lora_demo.chat.engine import ChatEngine, GenSettings
    from lora_demo.models import load_model
    from lora_demo.train.settings import ALL_LINEAR

    lm = load_model(str(qwen3_1_7b), dtype="bf16", device="cuda")
    pm = get_peft_model(lm.model, LoraConfig(r=16, lora_alpha=16, target_modules=ALL_LINEAR))
    torch.manual_seed(0)
    for name, p in pm.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.02)
    pm.save_pretrained(tmp_path / "adapter")
    del lm, pm
    engine = ChatEngine()
    list(engine.load(str(qwen3_1_7b), str(tmp_path / "adapter")))
    assert engine.device == "cuda"
    ids = torch.tensor([engine.prompt_ids([{"role": "user", "content": "Hello"}])] * 2, device="cuda")
    with torch.inference_mode():
        mixed = engine.model(input_ids=ids, adapter_names=["__base__", "default"]).logits.float()
        with engine.model.disable_adapter():
            base = engine.model(input_ids=ids[:1]).logits.float()
    assert (mixed[0] - base[0]).abs().max() < 0.1  # bf16 batch-vs-single rounding only
    assert (mixed[1] - base[0]).abs().max() > 0.1
    res = engine.answer_pair("Hello", GenSettings(max_new_tokens=16, min_new_tokens=16, greedy=True))
    assert res["base_stats"]["tokens"] == 16 and res["tuned_stats"]["tokens"] == 16


def test_merged_export_on_cuda(qwen3_1_7b, tmp_path):
    """Unsloth's merged 16-bit save, through lora_demo.export, loads with plain AutoModelForCausalLM."""
    import torch
    from transformers import AutoModelForCausalLM

    from lora_demo.export import export_merged
    from lora_demo.train.runner import Runner
    from lora_demo.train.settings import TrainSettings, defaults_for

    s = TrainSettings(**{**defaults_for("cuda").to_dict(), "model": str(qwen3_1_7b), "max_steps": 3, "warmup": 0})
    runner = Runner(tmp_path / "runs", tmp_path / "data")
    run_dir = runner.start(s)
    assert runner.wait(400)["status"] == "completed"
    out = export_merged(run_dir, tmp_path / "merged")
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16, device_map={"": 0})
    ids = torch.tensor([[9707, 1879, 0]], device="cuda")
    with torch.inference_mode():
        assert torch.isfinite(model(input_ids=ids).logits).all()
    assert (out / "README.md").is_file() and list(out.glob("*.safetensors"))
    print("MERGED-FILES", sorted(p.name for p in out.iterdir()))
