"""CUDA-only: the Unsloth path trains the Qwen3-1.7B architecture in 4 bit through this engine.

No weights can be downloaded on the GPU machine, so the exact Qwen3-1.7B architecture is built from its config
with random bf16 weights (speed and memory do not depend on the values) and the offline Qwen3 tokenizer.
"""

from __future__ import annotations

import json
import os
import time
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

    s = TrainSettings(
        **{
            **defaults_for("cuda").to_dict(),
            "model": str(qwen3_1_7b),
            "max_steps": 12,
            "warmup": 2,
            "learning_rate": 1e-3,
        }
    )
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
    print(
        "GPU-FIGURES",
        json.dumps(
            {
                "first_loss": logs[0]["loss"],
                "last_loss": logs[-1]["loss"],
                "s_per_step": logs[-1].get("s_per_step"),
                "gpu_peak_gb": logs[-1]["gpu_peak_gb"],
                "tokens_per_s": logs[-1].get("tokens_per_s"),
            }
        ),
    )


def test_probes_leave_unsloth_gradient_checkpointing_on(qwen3_1_7b):
    """Issue 18: the step-0 probe must not leave Unsloth's gradient checkpointing off for the rest of the run (a
    model.eval() before Unsloth's generate did: 15.7 GiB at 4 x 2048 instead of 2.6). After probes.answer, entered
    in training or in eval mode, every checkpointing flag is as before and a training step's peak memory is the
    armed one; the control (Unsloth's for_inference, then train()) shows the step's peak without checkpointing."""
    import torch

    from lora_demo.device import detect
    from lora_demo.train import probes
    from lora_demo.train.settings import TrainSettings, defaults_for
    from lora_demo.train.worker import load_for_training

    s = TrainSettings(**{**defaults_for("cuda").to_dict(), "model": str(qwen3_1_7b)})
    plan = detect()
    assert plan.backend == "unsloth", plan.backend_reason
    model, tok = load_for_training(s, plan)
    ids = torch.randint(100, 150000, (2, 2048), device="cuda", generator=torch.Generator("cuda").manual_seed(0))

    def armed() -> int:
        return sum(bool(v) for v in probes.checkpointing_flags(model).values())

    def step_peak_gib() -> float:
        """Peak memory above what is allocated before one forward + backward of 2 x 2048 tokens."""
        model.train()
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        model.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**30

    model.train()
    flags = armed()
    assert flags > 0
    step_peak_gib()  # (Unsloth compiles at the first step)
    ref = step_peak_gib()
    rows = [{"instruction": "What is your name?", "input": ""}, {"instruction": "Say hello.", "input": ""}]
    figures = {"armed_modules": flags, "peak_gib_armed": round(ref, 3)}
    for entry in ("train", "eval"):
        model.train(entry == "train")
        answers = probes.answer(model, tok, rows, s, 8, unsloth=True)
        assert len(answers) == 2
        assert model.training == (entry == "train")
        assert armed() == flags, (entry, armed(), flags)
        figures[f"peak_gib_after_probe_{entry}"] = round(step_peak_gib(), 3)
    # The step-0 answers are taken after step 1 with the adapter disabled (MilestoneCallback.start_probe): under
    # Unsloth's generate too, disable_adapter() must give the base model's answers (B = 0 here, as at step 0).
    model.train()
    base = probes.answer(model, tok, rows, s, 8, unsloth=True)
    saved = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05, generator=torch.Generator("cuda").manual_seed(1))
    changed = probes.answer(model, tok, rows, s, 8, unsloth=True)
    with model.disable_adapter():
        off = probes.answer(model, tok, rows, s, 8, unsloth=True)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in saved:
                p.copy_(saved[n])
    figures["answers"] = {"base": base, "changed_adapter": changed, "changed_adapter_disabled": off}
    assert changed != base and off == base, figures["answers"]
    from unsloth import FastLanguageModel

    FastLanguageModel.for_inference(model)  # the control: checkpointing off, as the old probe left it
    figures["armed_after_for_inference"] = armed()
    figures["peak_gib_unarmed"] = round(step_peak_gib(), 3)
    print("GPU-PROBES", json.dumps(figures))
    for entry in ("train", "eval"):
        assert figures[f"peak_gib_after_probe_{entry}"] < ref * 1.2 + 0.1, figures
    assert figures["peak_gib_unarmed"] > ref * 1.5, figures  # the check above can tell the difference


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

    s = TrainSettings(
        **{
            **defaults_for("cuda").to_dict(),
            "model": str(qwen3_1_7b),
            "max_steps": 12,
            "warmup": 2,
            "learning_rate": 1e-3,
            "save_steps": 4,
        }
    )
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
    print(
        "GPU-RESUME",
        json.dumps(
            {
                "resumed_from": checkpoints.step_of(ckpt),
                "max_rel_diff_lora_B": diff,
                "probe_s_per_point": [p["seconds"] for p in points],
            }
        ),
    )
    assert diff < 0.05, diff  # 4-bit kernels on the GPU are not bit-deterministic; a wrong resume differs by O(1)


def _random_adapter(model_dir: Path, out: Path, std: float = 0.02, r: int = 16, seed: int = 0) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model

    from lora_demo.models import load_model
    from lora_demo.train.settings import ALL_LINEAR

    lm = load_model(str(model_dir), dtype="bf16", device="cuda")
    pm = get_peft_model(lm.model, LoraConfig(r=r, lora_alpha=r, target_modules=ALL_LINEAR))
    torch.manual_seed(seed)
    for name, p in pm.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, std)
    pm.save_pretrained(out)
    del lm, pm
    torch.cuda.empty_cache()
    return out


def test_chat_on_cuda_rows_exact_compiled_once_and_fast(qwen3_1_7b, tmp_path):
    """The Chat tab's default path on the GPU: the base row is the base model (the same batch through
    disable_adapter()), the tuned row the adapter; the step compiles once at Load and a prompt of another length,
    a new turn, sampling and the slider add no graph; both sides stream at once."""
    import contextlib
    import dataclasses

    import torch
    from torch._dynamo.utils import counters

    from lora_demo.chat.engine import ChatEngine, GenSettings

    adapter = _random_adapter(qwen3_1_7b, tmp_path / "adapter")
    engine = ChatEngine()
    lines = list(engine.load(str(qwen3_1_7b), str(adapter)))
    assert engine.device == "cuda" and engine.default_mode == "rows" and engine.decoder.compiled
    assert any("Warming up" in line for line in lines) and "bf16" in engine.precision
    assert engine.more_rows.wait(600)  # the background recording done: the direct forward below uses the masks
    ids = torch.tensor([engine.prompt_ids([{"role": "user", "content": "Hello"}])] * 2, device="cuda")
    with torch.inference_mode():
        with engine.row_scale.on([0.0, 1.0]):
            rows = engine.model(input_ids=ids).logits.float()
        with engine.model.disable_adapter():
            base = engine.model(input_ids=ids).logits.float()
        tuned = engine.model(input_ids=ids).logits.float()
    base_err, tuned_err = (rows[0] - base[0]).abs().max().item(), (rows[1] - tuned[1]).abs().max().item()
    effect = (tuned[1] - base[0]).abs().max().item()
    assert base_err == 0.0, base_err  # the LoRA term times exactly 0: the base layers' own output
    assert tuned_err < 0.15 < effect, (tuned_err, effect)  # bf16 rounding of one fused multiply-add
    graphs = counters["stats"]["unique_graphs"]
    greedy = GenSettings(max_new_tokens=256, min_new_tokens=256, greedy=True, repetition_penalty=1.0)
    figures = {}
    for name, prompt, gen in (
        ("first", "Hello", greedy),
        ("longer prompt", "Explain in detail why low-rank adaptation works, with three examples. " * 3, greedy),
        ("slider 0.5", "Hello again", dataclasses.replace(greedy, adapter_scale=0.5)),
        ("sampling", "Hello", GenSettings(max_new_tokens=64, min_new_tokens=64, temperature=0.8, top_k=40, seed=5)),
    ):
        res = engine.answer_pair(prompt, gen)
        b, t = res["base_stats"], res["tuned_stats"]
        assert b["tokens"] == t["tokens"] == gen.max_new_tokens
        figures[name] = {"tok_s": round(b["tokens_per_s"], 1), "ttft_s": round(max(b["ttft_s"], t["ttft_s"]), 3)}
    turns = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "And now?"},
    ]
    for _ in engine.generate_pair(turns, settings=dataclasses.replace(greedy, max_new_tokens=32, min_new_tokens=32)):
        pass
    added = counters["stats"]["unique_graphs"] - graphs
    # What the replayed step decoded is what the model computes: each row's tokens against a plain forward pass over
    # prompt + answer (teacher-forced argmax; random weights leave a few near-ties that bf16 rounding can flip).
    prompt = engine.prompt_ids([{"role": "user", "content": "Tell me about rivers and the sea."}])
    got = engine.worker.run(
        lambda: engine._decode([prompt] * 2, dataclasses.replace(greedy, max_new_tokens=48, min_new_tokens=48))
    )
    agree = []
    with torch.inference_mode():
        for row, ctx in ((0, engine.model.disable_adapter()), (1, contextlib.nullcontext())):
            full = torch.tensor([prompt + got[row]], device="cuda")
            with ctx:
                pred = engine.model(input_ids=full).logits[0, len(prompt) - 1 : -1].argmax(-1).tolist()
            agree.append(sum(a == b for a, b in zip(pred, got[row], strict=True)) / len(got[row]))
    print(
        "GPU-CHAT",
        json.dumps(
            {
                "warmup_s": round(engine.warmup_s, 1),
                "step_mode": engine.decoder.step_mode,
                "base_err": base_err,
                "tuned_err": tuned_err,
                "effect": effect,
                "graphs_added": added,
                "teacher_forced_agreement": agree,
                **figures,
            }
        ),
    )
    assert added == 0
    assert got[0] != got[1] and min(agree) > 0.75, agree
    assert figures["first"]["tok_s"] > 60  # far above the 8 tok/s of the old default (the target is in the bench)
    engine.unload()


def test_chat_on_cuda_attaching_adapters_keeps_the_recorded_step(qwen3_1_7b, tmp_path):
    """Issue 26 on the GPU: adapters attached after Load (ranks 8 and 16 beside the first r=16: they fit the
    64-column bucket) are refilled into the same stacks, so the recorded step is neither recorded nor compiled
    again; rows of one batch naming different adapters each decode their own adapter (teacher-forced)."""
    import dataclasses

    import torch
    from torch._dynamo.utils import counters

    from lora_demo.chat.engine import ChatEngine, GenSettings

    adapters = [_random_adapter(qwen3_1_7b, tmp_path / f"a{k}", r=r, seed=k) for k, r in ((0, 16), (1, 8), (2, 16))]
    engine = ChatEngine()
    lines = list(engine.load(str(qwen3_1_7b), str(adapters[0])))
    assert "background" in lines[-1]
    assert engine.more_rows.wait(600)  # the 4- and 8-row steps, recorded on the generation thread after Load
    rs, graph = engine.row_scale, engine.decoder._graph
    graphs = counters["stats"]["unique_graphs"]
    for a in adapters[1:]:
        list(engine.attach(str(a)))
    assert engine.row_scale is rs and engine.decoder._graph is graph  # the same stacks, the same CUDA graph
    greedy = GenSettings(max_new_tokens=48, min_new_tokens=48, greedy=True, repetition_penalty=1.0)
    prompt = engine.prompt_ids([{"role": "user", "content": "Tell me about rivers and the sea."}])
    names = [None, engine.adapter_name(str(adapters[2]))]
    got = engine.worker.run(lambda: engine._decode([prompt] * 2, greedy, names=names))
    assert counters["stats"]["unique_graphs"] == graphs  # nothing compiled again
    agree = []
    with torch.inference_mode():
        for row, name in enumerate(names):
            full = torch.tensor([prompt + got[row]], device="cuda")
            if name is None:
                with engine.model.disable_adapter():
                    pred = engine.model(input_ids=full).logits[0, len(prompt) - 1 : -1].argmax(-1).tolist()
            else:
                engine.model.set_adapter(name)
                pred = engine.model(input_ids=full).logits[0, len(prompt) - 1 : -1].argmax(-1).tolist()
            agree.append(sum(a == b for a, b in zip(pred, got[row], strict=True)) / len(got[row]))
    source = [{"role": "user", "content": "Hello"}]
    last = None
    gen5 = dataclasses.replace(greedy, max_new_tokens=128, min_new_tokens=128)
    first = []
    for _ in range(2):  # recorded in the background after Load: even the first 5-row call records nothing
        t0 = time.perf_counter()
        for last in engine.generate([source] * 5, [None, *map(str, adapters), str(adapters[0])], settings=gen5):  # noqa: B007
            pass
        first.append(round(time.perf_counter() - t0, 2))
    print(
        "GPU-CHAT-ADAPTERS",
        json.dumps(
            {
                "agreement": agree,
                "rows_5_tok_s": round(min(r.tokens_per_s for r in last), 1),
                "rows": len(last),
                "rows_5_calls_s": first,
                "background_recording_s": round(engine.more_rows_s, 1),
            }
        ),
    )
    assert min(agree) > 0.75, agree
    assert counters["stats"]["unique_graphs"] == graphs  # no 3- to 8-row call compiled anything after Load
    engine.unload()


def test_chat_on_cuda_4bit_checkpoint_runs_from_a_16bit_copy(qwen3_1_7b, tmp_path):
    """A bitsandbytes 4-bit checkpoint (what the CUDA default is) is dequantized once for chat; the status says so,
    no 4-bit layer is left, and the 16-bit copy computes what the 4-bit model computes."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from lora_demo.chat.engine import ChatEngine, GenSettings
    from lora_demo.models.qwen_tiny import build_qwen3_tokenizer

    q4 = tmp_path / "q4"
    cfg = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    m4 = AutoModelForCausalLM.from_pretrained(
        qwen3_1_7b, quantization_config=cfg, dtype=torch.bfloat16, device_map={"": 0}
    )
    m4.save_pretrained(q4)
    build_qwen3_tokenizer().save_pretrained(q4)
    ids = torch.tensor([[9707, 1879, 11, 1246, 525, 498, 30]], device="cuda")
    with torch.inference_mode():
        ref = m4(input_ids=ids).logits.float()
    del m4
    torch.cuda.empty_cache()
    adapter = _random_adapter(qwen3_1_7b, tmp_path / "adapter")
    import json as _json

    cfg_path = adapter / "adapter_config.json"
    cfg_json = _json.loads(cfg_path.read_text())
    cfg_json["base_model_name_or_path"] = str(q4)
    cfg_path.write_text(_json.dumps(cfg_json))
    engine = ChatEngine()
    lines = list(engine.load(str(q4), str(adapter)))
    assert "dequantized once from the 4-bit checkpoint" in engine.precision, engine.precision
    assert "dequantized" in lines[-1]
    assert not [m for m in engine.model.modules() if type(m).__name__ == "Linear4bit"]
    with torch.inference_mode(), engine.model.disable_adapter():
        got = engine.model(input_ids=ids).logits.float()
    err = (got - ref).abs().max().item()
    res = engine.answer_pair("Hello", GenSettings(max_new_tokens=128, min_new_tokens=128, greedy=True))
    print(
        "GPU-CHAT-4BIT",
        json.dumps(
            {"precision": engine.precision, "max_logit_diff_vs_4bit": err, "tok_s": res["base_stats"]["tokens_per_s"]}
        ),
    )
    assert err < 0.5, err  # the same weights; bf16 rounding of a different matmul path
    engine.unload()


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


def test_export_parity_on_cuda(qwen3_1_7b, tmp_path):
    """The CUDA default's path end to end: a run on a bitsandbytes 4-bit checkpoint (Unsloth), Unsloth's merged
    16-bit save, and the parity report: the merged model, prompted by its own chat template, reads the app's exact
    prompt tokens and answers as the app's chat does."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from lora_demo.export.parity import check_parity
    from lora_demo.export.run_exports import ensure_merged
    from lora_demo.models.qwen_tiny import build_qwen3_tokenizer
    from lora_demo.train.runner import Runner
    from lora_demo.train.settings import TrainSettings, defaults_for

    q4 = tmp_path / "q4"
    cfg = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    m4 = AutoModelForCausalLM.from_pretrained(
        qwen3_1_7b, quantization_config=cfg, dtype=torch.bfloat16, device_map={"": 0}
    )
    m4.save_pretrained(q4)
    build_qwen3_tokenizer().save_pretrained(q4)
    del m4
    torch.cuda.empty_cache()
    s = TrainSettings(
        **{
            **defaults_for("cuda").to_dict(),
            "model": str(q4),
            "max_steps": 30,
            "warmup": 2,
            "learning_rate": 1e-3,
            "val_fraction": 0.1,
            "save_steps": -1,
        }
    )
    runner = Runner(tmp_path / "runs", tmp_path / "data")
    run_dir = runner.start(s)
    st = runner.wait(540)
    assert st["status"] == "completed", (run_dir / "train.log").read_text()[-2000:]
    t = time.perf_counter()
    merged = ensure_merged(run_dir)
    merge_s = time.perf_counter() - t
    report = check_parity(run_dir, merged, {}, None, max_new_tokens=32)
    print(
        "GPU-PARITY",
        json.dumps(
            {
                "merge_s": round(merge_s, 1),
                "merged_agreement": report["merged_agreement"],
                "template_equal": report["template_equal"],
                "app_precision": report["app_precision"],
                "answers": [(p["app"]["answer"][:60], p["merged"]["answer"][:60]) for p in report["prompts"]],
                "seconds": report["seconds"],
            }
        ),
    )
    assert report["template_equal"] is True and len(report["prompts"]) >= 3


@pytest.mark.parametrize("backend", ["unsloth", "transformers"])
def test_dpo_round_on_cuda(qwen3_1_7b, tmp_path, backend, monkeypatch):
    """An SFT parent, then a DPO round on its pairs through each backend (LORA_LAB_BACKEND): it completes, logs DPO's
    reward margin, and saves the trained adapter alone (no frozen reference copy)."""
    from safetensors import safe_open

    from lora_demo.io import to_jsonl, write_atomic
    from lora_demo.train.lineage import continue_settings
    from lora_demo.train.runner import Runner
    from lora_demo.train.runs import read_progress
    from lora_demo.train.settings import TrainSettings, defaults_for

    runner = Runner(tmp_path / "runs", tmp_path / "data")
    parent = runner.start(
        TrainSettings(
            **{
                **defaults_for("cuda").to_dict(),
                "model": str(qwen3_1_7b),
                "max_steps": 4,
                "warmup": 1,
                "save_steps": -1,
                "probe_tokens": 0,
            }
        )
    )
    assert runner.wait(540)["status"] == "completed", (parent / "train.log").read_text()[-2000:]
    pairs = [
        {
            "prompt": f"Question {i}: what is your name?",
            "chosen": f"I am Lab, number {i}.",
            "rejected": "I am an AI language model.",
        }
        for i in range(16)
    ]
    write_atomic(tmp_path / "pairs.jsonl", to_jsonl(pairs))
    monkeypatch.setenv("LORA_LAB_BACKEND", backend)
    s = TrainSettings.from_dict(
        {
            **continue_settings(parent).to_dict(),
            "method": "dpo",
            "max_steps": 6,
            "dataset": str(tmp_path / "pairs.jsonl"),
            "micro_batch_size": 4,
            "warmup": 1,
            "learning_rate": 5e-4,
            "val_fraction": 0.0,
            "save_steps": -1,
        }
    )
    run = runner.start(s)
    st = runner.wait(540)
    assert st["status"] == "completed", (run / "train.log").read_text()[-3000:]
    assert st["backend"] == backend
    logs = [p for p in read_progress(run) if p.get("type") == "log" and "reward_margin" in p]
    assert len(logs) >= 6 and logs[-1]["reward_margin"] > logs[0]["reward_margin"], logs
    with safe_open(str(run / "adapter_model.safetensors"), "pt") as f:
        names = f.keys()  # (a safetensors handle is not iterable)
    assert names and not [k for k in names if ".ref." in k]
    print(
        "GPU-DPO",
        backend,
        json.dumps(
            {
                k: logs[-1].get(k)
                for k in ("reward_margin", "reward_accuracy", "gpu_peak_gb", "tokens_per_s", "s_per_step")
            }
        ),
    )


def test_grpo_round_on_cuda(qwen3_1_7b, tmp_path):
    """A GRPO run on the GPU (TRL's GRPOTrainer with its Triton log-prob head, transformers + bitsandbytes 4-bit):
    it completes and logs the mean reward and each reward's mean."""
    from lora_demo.train.runner import Runner
    from lora_demo.train.runs import read_progress
    from lora_demo.train.settings import TrainSettings, defaults_for

    s = TrainSettings(
        **{
            **defaults_for("cuda").to_dict(),
            "model": str(qwen3_1_7b),
            "method": "grpo",
            "rewards": ["format:<answer>", "length:16@0.5"],
            "grpo_generations": 4,
            "grpo_max_tokens": 24,
            "max_steps": 3,
            "warmup": 1,
            "micro_batch_size": 2,
            "gradient_accumulation_steps": 1,
            "save_steps": -1,
            "probe_tokens": 0,
            "val_fraction": 0.0,
        }
    )
    runner = Runner(tmp_path / "runs", tmp_path / "data")
    run = runner.start(s)
    st = runner.wait(540)
    assert st["status"] == "completed", (run / "train.log").read_text()[-3000:]
    logs = [p for p in read_progress(run) if p.get("type") == "log" and "reward" in p]
    assert len(logs) == 3 and all(0 <= p["reward"] <= 1 for p in logs)
    assert {k for k in logs[-1] if k.startswith("reward_") and k != "reward_std"} >= {"reward_format", "reward_length"}
    print("GPU-GRPO", json.dumps({k: logs[-1].get(k) for k in ("reward", "gpu_peak_gb", "s_per_step")}), st["backend"])
