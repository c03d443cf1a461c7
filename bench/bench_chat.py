"""Decode speed of the side-by-side chat: LoRA Lab's chat against plain PEFT and Unsloth, in one run.

    python bench/bench_chat.py [--json]          # CPU: SmolLM2-135M + an r=16 all-linear adapter, 64 tokens a side
    python bench/bench_chat.py --gpu [--json]    # CUDA: the Qwen3-1.7B architecture (random bf16) + r=16, 256 tokens

Same prompt, greedy, fixed length (min_new_tokens = max_new_tokens):
- ours: ChatEngine's default path, as the Chat tab calls it: both sides in one batch with a per-row LoRA scale,
  streaming at once (CUDA: static cache + the step compiled at Load, the warm-up reported as warmup_s); then a
  second prompt of another length (no recompile: dynamo's graph count is printed before and after);
- plain PEFT sequential: a PeftModel loaded in a fresh process (same weights dtype, torch's default threads),
  `generate` inside `disable_adapter()` for the base answer, then with the adapter for the tuned one;
- Unsloth (CUDA only, in a subprocess: it must be imported before transformers): `FastLanguageModel` with the
  adapter, `for_inference`, the tuned answer alone (its studio's compare runs the sides one after the other).
- ours, N-way: the base and N - 1 adapters of mixed ranks attached to the same base, N = 2, 3, 5 rows in one batch
  (the Chat tab's compare; ranks 16, 8, 16, 8), each timed after a first answer (which records that batch size).
`--json` ends with one JSON line: ours_tok_s_each, ours_vs_peft_faster_side, peft_sequential_tok_s [base, tuned],
unsloth_tok_s (null on the CPU), repeats (each timed answer's best of that many: 3 on the CPU by default), ttft_s, warmup_s, background_recording_s (CUDA: the 4- and 8-row steps, recorded after Load), n_way {rows_N: tok_s_each, step_ms, step_vs_2_rows, recompiles_after_first}, and the details (CUDA: where the warm-up's compile time went, and with --profile the GPU
kernels of one answer: kernels and GPU-busy milliseconds per decoding step, the costliest kernels).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PROMPT = "Explain in detail why low-rank adaptation works for fine-tuning large language models."

UNSLOTH = r"""
import json, sys, time
import unsloth  # noqa: F401  (before transformers)
import torch
from unsloth import FastLanguageModel
adapter, n, prompt = sys.argv[1], int(sys.argv[2]), sys.argv[3]
from peft import set_peft_model_state_dict
from safetensors.torch import load_file
cfg = json.load(open(adapter + "/adapter_config.json"))
model, tok = FastLanguageModel.from_pretrained(cfg["base_model_name_or_path"], dtype=torch.bfloat16,
                                               load_in_4bit=False, max_seq_length=2048)
model = FastLanguageModel.get_peft_model(model, r=cfg["r"], lora_alpha=cfg["lora_alpha"], lora_dropout=0,
                                         target_modules=sorted(cfg["target_modules"]))
set_peft_model_state_dict(model, load_file(adapter + "/adapter_model.safetensors"))
FastLanguageModel.for_inference(model)
ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt")
ids = (ids["input_ids"] if hasattr(ids, "keys") else ids).to("cuda")
def run(k):
    torch.cuda.synchronize(); t0 = time.perf_counter()
    model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=k, min_new_tokens=k,
                   do_sample=False, pad_token_id=tok.pad_token_id or 0)
    torch.cuda.synchronize(); return time.perf_counter() - t0
run(8)
t = run(n)
print("UNSLOTH-JSON", json.dumps({"tok_s": n / t, "seconds": t}))
"""


def random_adapter(model_id: str, out: Path, r: int = 16, seed: int = 0) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model

    from lora_demo.models import load_model
    from lora_demo.train.settings import ALL_LINEAR

    lm = load_model(model_id, dtype="bf16" if torch.cuda.is_available() else "fp32")
    pm = get_peft_model(lm.model, LoraConfig(r=r, lora_alpha=r, target_modules=ALL_LINEAR))
    torch.manual_seed(seed)
    for n, p in pm.named_parameters():
        if "lora_B" in n:
            p.data.normal_(0, 0.01)
    pm.save_pretrained(out)
    cfg = json.loads((out / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = model_id
    (out / "adapter_config.json").write_text(json.dumps(cfg))
    return out


def plain_peft_sequential(model: str, adapter: Path, dtype, device: str, n: int, repeats: int = 1) -> list[float]:
    """tok/s of the base (inside disable_adapter) and the tuned answer, one after the other, plain PEFT generate
    (each side's best of `repeats` answers)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lora_demo.models import load_tokenizer
    from lora_demo.models.registry import model_path

    torch.set_num_threads(os.cpu_count() or 1)  # torch's default: every core (our generation thread has ended)
    tok = load_tokenizer(model)
    base = AutoModelForCausalLM.from_pretrained(model_path(model), dtype=dtype).to(device)
    pm = PeftModel.from_pretrained(base, str(adapter)).eval()
    ids = tok.apply_chat_template(
        [{"role": "user", "content": PROMPT}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"].to(device)
    kw = dict(
        max_new_tokens=n,
        min_new_tokens=n,
        do_sample=False,
        pad_token_id=tok.pad_token_id,
        attention_mask=torch.ones_like(ids),
    )
    rates = [0.0, 0.0]
    with torch.inference_mode():
        pm.generate(input_ids=ids, **{**kw, "max_new_tokens": 2, "min_new_tokens": 2})  # warm-up
        for side, off in [(i, off) for _ in range(repeats) for i, off in enumerate((True, False))]:
            ctx = pm.disable_adapter() if off else torch.inference_mode()
            with ctx:
                if device == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                pm.generate(input_ids=ids, **kw)
                if device == "cuda":
                    torch.cuda.synchronize()
                rates[side] = max(rates[side], n / (time.perf_counter() - t0))
    del pm, base
    if device == "cuda":
        torch.cuda.empty_cache()
    return rates


def peft_in_own_process(model: str, adapter: Path, dtype: str, n: int, repeats: int = 1) -> list[float]:
    """plain_peft_sequential in a fresh process: the plain library as a user runs it, with torch's default threads
    and no other thread's OpenMP team beside it (this process's generation thread had one)."""
    code = (
        "import json, sys, torch; sys.path.insert(0, sys.argv[1]); from bench_chat import plain_peft_sequential; "
        "dev = 'cuda' if torch.cuda.is_available() else 'cpu'; "
        "r = plain_peft_sequential(sys.argv[2], sys.argv[3], getattr(torch, sys.argv[4]), dev, int(sys.argv[5]), int(sys.argv[6])); "
        "print('PEFT-JSON', json.dumps(r))"
    )
    here = str(Path(__file__).resolve().parent)
    out = subprocess.run(
        [sys.executable, "-c", code, here, model, str(adapter), dtype, str(n), str(repeats)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    for line in out.stdout.splitlines():
        if line.startswith("PEFT-JSON "):
            return json.loads(line.split(" ", 1)[1])
    raise RuntimeError(f"the plain PEFT baseline failed: {(out.stderr or out.stdout).strip()[-500:]}")


def profile_answer(engine, n: int = 64) -> dict:
    """One answer of n tokens a side under torch.profiler (CUDA): kernels per decoding step, the GPU's busy time per
    step against the wall time per step (busy << wall: the CPU is the limit), and the costliest kernels."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from lora_demo.chat.engine import GenSettings

    gen = GenSettings(max_new_tokens=n, min_new_tokens=n, greedy=True, repetition_penalty=1.0)
    cuda = torch.cuda.is_available()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        sync()
        t0 = time.perf_counter()
        res = engine.answer_pair(PROMPT, gen)
        sync()
        wall = time.perf_counter() - t0
    kernels = [e for e in prof.key_averages() if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA]
    if not kernels:  # (kernels have device time and no CPU time of their own)
        kernels = [
            e for e in prof.key_averages() if e.device_time_total > 0 and not e.key.startswith(("aten::", "cuda"))
        ]
    busy_ms = sum(e.device_time_total for e in kernels) / 1000
    count = sum(e.count for e in kernels)
    top = sorted(kernels, key=lambda e: -e.device_time_total)[:12]
    ttft = max(res["base_stats"]["ttft_s"], res["tuned_stats"]["ttft_s"])
    return {
        "tokens": n,
        "wall_s": round(wall, 3),
        "ttft_s": round(ttft, 4),
        "wall_ms_per_step": round(1000 * (wall - ttft) / (n - 1), 3),
        "gpu_busy_ms_per_answer": round(busy_ms, 2),
        "kernels_per_answer": count,
        "kernels_per_step": round(count / n, 1),
        "gpu_busy_ms_per_step": round(busy_ms / n, 3),
        "top_kernels": [
            {"name": e.key[:90], "count": e.count, "ms": round(e.device_time_total / 1000, 2)} for e in top
        ],
    }


def env_ab(model: str, adapter: Path, n: int, var: str, values: list[str]) -> dict:
    """Our path once per value of an environment variable (LORA_LAB_CHAT_FUSE: each LoRA layer's own matmuls or the
    shared q/k/v and gate/up ones; LORA_LAB_CHAT_STEP: how a CUDA decoding step runs): each a fresh engine in this
    process (its own warm-up, so a later one also shows that a second model's generation thread works), three
    answers and a profiled one each."""

    from lora_demo.chat.engine import ChatEngine, GenSettings

    gen = GenSettings(max_new_tokens=n, min_new_tokens=n, greedy=True, repetition_penalty=1.0)
    out = {}
    for value in values:
        os.environ[var] = value
        engine = ChatEngine()
        try:
            list(engine.load(model, str(adapter)))
            answers = []
            for prompt in (PROMPT, PROMPT + " Give three examples and a short summary.", PROMPT):
                res = engine.answer_pair(prompt, gen)
                b, t = res["base_stats"], res["tuned_stats"]
                answers.append(
                    {
                        "tok_s": round(min(b["tokens_per_s"], t["tokens_per_s"]), 1),
                        "ttft_s": round(max(b["ttft_s"], t["ttft_s"]), 4),
                    }
                )
            prof = {}
            if engine.device == "cuda":
                prof = profile_answer(engine)
                prof.pop("top_kernels", None)
            out[value] = {
                "step_mode": engine.decoder.step_mode,
                "fused_groups": len(engine.row_scale.fused),
                "warmup_s": round(engine.warmup_s, 1),
                "answers": answers,
                "profile": prof,
            }
        except Exception as e:  # noqa: BLE001 - one failing variant must not hide the others' figures
            import traceback

            traceback.print_exc()
            out[value] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
        print(f"  {var}={value}: {json.dumps(out[value])}", flush=True)
        engine.unload()
    os.environ.pop(var, None)
    return out


def n_way(engine, model: str, first: Path, tmp: Path, n: int, counts=(2, 3, 5), repeats: int = 1) -> dict:
    """Our path with N rows in one batch: the base and N - 1 adapters (ranks 16, 8, 16, 8: mixed ranks, as the
    Chat tab's compare mixes runs; on CUDA they fit the first one's 64 rank columns, so attaching them refills the
    recorded step in place), each count timed after one warm-up answer (which records that batch size's step);
    tok/s is the slowest row's, and the step time is against the 2-row batch's."""
    from torch._dynamo.utils import counters

    from lora_demo.chat.engine import GenSettings

    extra = [random_adapter(model, tmp / f"adapter-{k}", r=r, seed=k) for k, r in ((1, 8), (2, 16), (3, 8))]
    t0 = time.perf_counter()
    for a in extra:
        list(engine.attach(str(a)))
    attach_s = time.perf_counter() - t0
    gen = GenSettings(max_new_tokens=n, min_new_tokens=n, greedy=True, repetition_penalty=1.0)
    source = [{"role": "user", "content": PROMPT}]
    out: dict = {"attach_3_adapters_s": round(attach_s, 2)}
    for rows in counts:
        adapters = [None, str(first), *map(str, extra)][:rows]
        t1 = time.perf_counter()
        for _ in engine.generate([source] * rows, adapters, settings=gen):
            pass
        warm = time.perf_counter() - t1
        graphs0 = counters["stats"]["unique_graphs"]
        slowest = 0.0
        for _ in range(repeats):
            last = None
            for last in engine.generate([source] * rows, adapters, settings=gen):  # noqa: B007
                pass
            slowest = max(slowest, min(r.tokens_per_s for r in last))
        out[f"rows_{rows}"] = {
            "tok_s_each": round(slowest, 2),
            "step_ms": round(1000 / slowest, 2),
            "first_call_s": round(warm, 2),
            "recompiles_after_first": counters["stats"]["unique_graphs"] - graphs0,
        }
        print(
            f"  ours, {rows} rows at once (base + {rows - 1} adapters): {slowest:.1f} tok/s each "
            f"(first call {warm:.1f} s)",
            flush=True,
        )
    two = out["rows_2"]["step_ms"]
    for rows in counts:
        out[f"rows_{rows}"]["step_vs_2_rows"] = round(out[f"rows_{rows}"]["step_ms"] / two, 3)
    return out


def unsloth_rate(adapter: Path, n: int) -> tuple[float | None, str | None]:
    out = subprocess.run(
        [sys.executable, "-c", UNSLOTH, str(adapter), str(n), PROMPT], capture_output=True, text=True, timeout=900
    )
    for line in out.stdout.splitlines():
        if line.startswith("UNSLOTH-JSON "):
            return json.loads(line.split(" ", 1)[1])["tok_s"], None
    tail = (out.stderr or out.stdout).strip().splitlines()
    return None, (tail[-1][:300] if tail else f"exit {out.returncode}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--model", help="model id/folder (default: smollm2 on CPU, a random Qwen3-1.7B on GPU)")
    ap.add_argument("--tokens", type=int, default=None, help="new tokens a side (default: 64 on CPU, 256 on GPU)")
    ap.add_argument("--no-unsloth", action="store_true", help="skip the Unsloth figure (CUDA)")
    ap.add_argument("--json", action="store_true", help="end with one JSON line of all figures")
    ap.add_argument("--profile", action="store_true", help="CUDA: profile one answer's kernels (after the timed ones)")
    ap.add_argument("--no-n-way", action="store_true", help="skip the N-way figures (2, 3 and 5 rows in one batch)")
    ap.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="each timed answer (ours, N-way, plain PEFT) this many times, the best kept (default: 3 on CPU, a "
        "shared VM's speed drifts; 1 on GPU)",
    )
    ap.add_argument(
        "--ab-fuse",
        action="store_true",
        help="only our path, without then with the shared LoRA matmuls: --ab LORA_LAB_CHAT_FUSE=0,1",
    )
    ap.add_argument(
        "--ab",
        metavar="VAR=V1,V2",
        help="only our path, once per value of an environment variable, fresh engines, e.g. "
        "LORA_LAB_CHAT_STEP=compile,graph,compile-graph",
    )
    args = ap.parse_args()
    import torch
    from torch._dynamo.utils import counters

    from lora_demo.chat.engine import ChatEngine, GenSettings
    from lora_demo.device import one_thread_outside_chat

    one_thread_outside_chat()  # as the app and `chat` do (the baseline below sets its own threads)
    tmp = Path(tempfile.mkdtemp())
    if args.gpu:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from test_gpu import build_random_qwen3

        model = args.model or str(build_random_qwen3(Path("/tmp/qwen3-1.7b")))
    else:
        model = args.model or "smollm2-135m-instruct"
    n = args.tokens or (256 if args.gpu else 64)
    repeats = max(1, args.repeats or (1 if args.gpu else 3))
    adapter = random_adapter(model, tmp / "adapter")
    if args.ab_fuse or args.ab:
        var, _, values = (args.ab or "LORA_LAB_CHAT_FUSE=0,1").partition("=")
        if not values:
            ap.error("--ab takes VAR=V1,V2 (e.g. LORA_LAB_CHAT_STEP=compile,graph)")
        result = {
            "model": model,
            "new_tokens_per_side": n,
            "ab": {var: env_ab(model, adapter, n, var, values.split(","))},
        }
        if args.json:
            print(json.dumps(result))
        return
    engine = ChatEngine()
    t0 = time.perf_counter()
    for line in engine.load(model, str(adapter)):
        print(" ", line, flush=True)
    load_s = time.perf_counter() - t0
    engine.more_rows.wait(1800)  # CUDA: the 4- and 8-row steps, recorded in the background after Load
    if engine.more_rows_s:
        print(f"  the 4- and 8-row steps were recorded in the background in {engine.more_rows_s:.1f} s", flush=True)
    print(
        f"{model} on {engine.device}, greedy, {n} new tokens a side; chat in {engine.precision}; decoding step: "
        f"{engine.decoder.step_mode}"
    )
    gen = GenSettings(max_new_tokens=n, min_new_tokens=n, greedy=True, repetition_penalty=1.0)
    graphs0 = counters["stats"]["unique_graphs"]
    ours = {}
    for key, prompt in (("first", PROMPT), ("other_length", PROMPT + " Give three examples and a short summary.")):
        best = None
        for _ in range(repeats):  # the best answer of `repeats` (the fastest wall time)
            t1 = time.perf_counter()
            res = engine.answer_pair(prompt, gen)
            took = time.perf_counter() - t1
            if best is None or took < best[0]:
                best = (took, res)
        wall, res = best
        b, t = res["base_stats"], res["tuned_stats"]
        ours[key] = {
            "wall_s": round(wall, 3),
            "base_tok_s": b["tokens_per_s"],
            "tuned_tok_s": t["tokens_per_s"],
            "ttft_s": max(b["ttft_s"], t["ttft_s"]),
            "tokens": [b["tokens"], t["tokens"]],
        }
        print(
            f"  ours ({key}): both answers in {wall:.2f} s; base {b['tokens_per_s']:.1f} tok/s, tuned "
            f"{t['tokens_per_s']:.1f} tok/s at once; first tokens after {ours[key]['ttft_s'] * 1000:.0f} ms",
            flush=True,
        )
    recompiles = counters["stats"]["unique_graphs"] - graphs0
    print(
        f"  compiled graphs added after the warm-up: {recompiles} (graphs in all: "
        f"{counters['stats']['unique_graphs']}, graph breaks: {sum(counters['graph_break'].values())})"
    )
    compile_s = {}
    try:
        from torch._dynamo.utils import compilation_time_metrics

        if engine.decoder.compiled:
            compile_s = {k: round(sum(v), 2) for k, v in compilation_time_metrics.items()}
    except Exception as e:  # noqa: BLE001 - a diagnostic only
        compile_s = {"error": f"{type(e).__name__}: {e}"}
    if compile_s:
        top = sorted(((v, k) for k, v in compile_s.items() if isinstance(v, float)), reverse=True)[:8]
        print("  compile time by phase (s): " + ", ".join(f"{k} {v}" for v, k in top), flush=True)
    prof = None
    if args.profile and engine.device == "cuda":
        try:
            prof = profile_answer(engine)
            print(
                f"  profile of one {prof['tokens']}-token answer: {prof['wall_ms_per_step']} ms a step (wall), GPU busy "
                f"{prof['gpu_busy_ms_per_step']} ms a step, {prof['kernels_per_step']} kernels a step",
                flush=True,
            )
            for k in prof["top_kernels"]:
                print(f"    {k['ms']:8.2f} ms  {k['count']:6d}x  {k['name']}")
        except Exception as e:  # noqa: BLE001 - a diagnostic only
            prof = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
            print(f"  profile failed: {prof['error']}")
    dtype, device, warmup, step_mode = engine.model.dtype, engine.device, engine.warmup_s, engine.decoder.step_mode
    engine_more_rows_s = engine.more_rows_s
    nway = None
    if not args.no_n_way:
        try:
            nway = n_way(engine, model, adapter, tmp, n, repeats=repeats)
        except Exception as e:  # noqa: BLE001 - the 2-row figures above still count
            import traceback

            traceback.print_exc()
            nway = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
    engine.unload()
    seq = peft_in_own_process(model, adapter, str(dtype).replace("torch.", ""), n, repeats)
    print(f"  plain PEFT sequential: base {seq[0]:.1f} tok/s, then tuned {seq[1]:.1f} tok/s", flush=True)
    each = min(ours["first"]["base_tok_s"], ours["first"]["tuned_tok_s"])
    print(f"  ours, each side at once, against plain PEFT's faster side: {each / max(seq):.2f}x", flush=True)
    uns, uns_err = None, None
    if device == "cuda" and not args.no_unsloth:
        uns, uns_err = unsloth_rate(adapter, n)
        print(f"  Unsloth for_inference (tuned, batch 1): {uns:.1f} tok/s" if uns else f"  Unsloth failed: {uns_err}")
    first = ours["first"]
    result = {
        "ours_tok_s_each": min(first["base_tok_s"], first["tuned_tok_s"]),
        "ours_vs_peft_faster_side": round(each / max(seq), 3),
        "peft_sequential_tok_s": [round(seq[0], 2), round(seq[1], 2)],
        "unsloth_tok_s": round(uns, 2) if uns else None,
        "ttft_s": round(first["ttft_s"], 4),
        "warmup_s": round(warmup, 2),
        "model": model,
        "device": device,
        "precision": str(dtype).replace("torch.", ""),
        "new_tokens_per_side": n,
        "adapter_r": 16,
        "repeats": repeats,
        "step_mode": step_mode,
        "ours": ours,
        "recompiles_after_warmup": recompiles,
        "load_s": round(load_s, 2),
        "unsloth_error": uns_err,
        "torch": torch.__version__,
        "graphs": counters["stats"]["unique_graphs"],
        "graph_breaks": sum(counters["graph_break"].values()),
        "compile_s": compile_s,
        "profile": prof,
        "n_way": nway,
        "background_recording_s": round(engine_more_rows_s, 2),
        "two_rows_vs_peft_faster_side": round(min(first["base_tok_s"], first["tuned_tok_s"]) / max(seq), 3),
    }
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
