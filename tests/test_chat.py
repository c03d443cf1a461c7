"""Chat engine: one model, two sides that never leak into each other, Gradio 6 history, Qwen3 template."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest
import torch

from lora_demo.chat.engine import ChatEngine, GenSettings, compare_on_rows, flatten_content, split_thinking
from lora_demo.data.templates import build_example
from lora_demo.errors import InputError
from lora_demo.models import cached_tokenizer

PROMPT = "What is your name?"


@pytest.fixture(scope="module")
def engine(tiny_run):
    e = ChatEngine()
    lines = list(e.load("auto", str(tiny_run)))
    assert "Ready" in lines[-1] and e.model_id == "qwen3-tiny" and e.template["template"] == "chat"
    return e


def _fresh_base_greedy(ids: list[int], n: int) -> list[int]:
    from lora_demo.models import load_model

    lm = load_model("qwen3-tiny")
    out = lm.model.generate(
        torch.tensor([ids]),
        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        max_new_tokens=n,
        do_sample=False,
        eos_token_id=[151645, 151643],
        pad_token_id=151643,
    )
    return out[0, len(ids) :].tolist()


@pytest.mark.parametrize("mode", ["rows", "batch", "sequential"])
def test_tuned_differs_and_base_equals_fresh_base(engine, mode):
    gen = GenSettings(max_new_tokens=12, greedy=True, repetition_penalty=1.0)
    res = engine.answer_pair(PROMPT, gen, mode=mode)
    assert res["tuned"] != res["base"]
    ids = engine.prompt_ids([{"role": "user", "content": PROMPT}])
    fresh = _fresh_base_greedy(ids, 12)
    cut = next((i for i, t in enumerate(fresh) if t in (151645, 151643)), len(fresh))
    assert res["base"] == engine.tokenizer.decode(fresh[:cut], skip_special_tokens=True)


def test_base_row_logits_equal_fresh_base_in_one_forward(engine):
    """The mixed batch's base row is the base model: logits equal a freshly loaded one's."""
    from lora_demo.models import load_model

    ids = torch.tensor([engine.prompt_ids([{"role": "user", "content": PROMPT}])] * 2)
    with torch.inference_mode():
        mixed = engine.model(input_ids=ids, adapter_names=["__base__", engine.adapter_name()]).logits
        fresh = load_model("qwen3-tiny").model(input_ids=ids[:1]).logits
    assert torch.allclose(mixed[0], fresh[0], atol=1e-4)
    assert (mixed[1] - fresh[0]).abs().max() > 1e-2  # the tuned row really is different


def test_rows_mode_is_the_default_and_its_rows_are_exact(engine):
    """The per-row LoRA scale: the base row equals disable_adapter()'s logits, the tuned row the adapter's (at the
    slider's 1 and 0.5), and outside a chat generation every layer is PEFT's own again."""
    from peft.helpers import rescale_adapter_scale

    assert engine.default_mode == "rows" and engine.row_scale is not None and len(engine.row_scale.layers) > 0
    ids = engine.prompt_ids([{"role": "user", "content": PROMPT}])
    x = torch.tensor([ids, ids])
    with torch.inference_mode():
        with engine.model.disable_adapter():
            base = engine.model(input_ids=x[:1]).logits
        tuned = engine.model(input_ids=x[:1]).logits
        with rescale_adapter_scale(engine.model, 0.5):
            half = engine.model(input_ids=x[:1]).logits
        with engine.row_scale.on([0.0, 1.0]):
            rows = engine.model(input_ids=x).logits
        with engine.row_scale.on([0.0, 0.5]):
            rows_half = engine.model(input_ids=x).logits
        after = engine.model(input_ids=x[:1]).logits
    assert (tuned - base).abs().max() > 1e-2  # the adapter really changes the logits
    assert torch.allclose(rows[0], base[0], atol=1e-5) and torch.allclose(rows_half[0], base[0], atol=1e-5)
    assert torch.allclose(rows[1], tuned[0], atol=1e-4)
    assert torch.allclose(rows_half[1], half[0], atol=1e-4)
    assert not torch.allclose(rows_half[1], tuned[0], atol=1e-3)
    assert torch.equal(after, tuned)


def test_rows_mode_answers_equal_the_plain_peft_answers(engine):
    """Greedy, the default path (one batch, per-row scale, own decoding loop) answers what plain PEFT generate()
    answers one side after the other, for prompts of different lengths (left padding is masked, positions per row)."""
    gen = GenSettings(max_new_tokens=12, greedy=True, repetition_penalty=1.3)
    short = [{"role": "user", "content": "Hi"}]
    long = [{"role": "user", "content": PROMPT + " Please answer in one sentence, and tell me who made you."}]
    for base_hist, tuned_hist in ((short, long), (long, short)):
        got = [[r.text for r in res] for res in engine.generate_pair(base_hist, tuned_hist, settings=gen)][-1]
        want = [
            [r.text for r in res]
            for res in engine.generate_pair(base_hist, tuned_hist, settings=gen, mode="sequential")
        ][-1]
        assert got == want


def test_throttled_stream_sends_fewer_bigger_updates():
    """every_s: one update for all waiting chunks, then at most one per every_s, besides the first token and the
    end (what the page gets: fewer, bigger updates)."""
    from lora_demo.chat.engine import SideResult, _drain, _PairStreamer

    streamer, results = _PairStreamer(2), [SideResult(), SideResult()]
    streamer._prompt_seen = True
    for i in range(40):  # a token a row every 10 ms, as timestamps, all waiting before the reader looks
        for row in streamer.tokens:
            row.append(5)
        streamer.events.put(100.0 + 0.01 * i)
    it = _drain(streamer, results, 100.0, {0}, lambda ids, **kw: "x" * len(ids), 0.0)
    next(it)  # every waiting chunk folded into one update
    assert results[0].tokens == results[1].tokens == 40 and not results[0].done
    assert results[0].ttft_s == pytest.approx(0.39) and results[0].text == "x" * 40
    streamer.end()
    next(it)
    assert results[0].done and results[1].done
    with pytest.raises(StopIteration):
        next(it)
    from lora_demo.chat import engine as engine_mod

    streamer, results = _PairStreamer(1), [SideResult()]
    streamer._prompt_seen = True
    out = []

    def feed():
        for _ in range(30):
            streamer.add([[7]])
            time.sleep(0.01)
        streamer.end()

    t = threading.Thread(target=feed)
    t.start()
    for _ in engine_mod._drain(streamer, results, time.perf_counter(), {0}, lambda ids, **kw: "", 0.1):
        out.append(results[0].tokens)
    t.join()
    assert out[0] >= 1 and out[-1] == 30 and results[0].done
    assert 2 <= len(out) <= 8, out  # ~0.3 s of tokens: about one update per 0.1 s, not 30


def test_layer_compile_matches_eager_and_compiles_one_layer_for_all(tiny_run):
    """layers-graph's compiled decoder layers (the CUDA default records its graph through them): only inside on(),
    the decoding step they compute equals the eager one, and inductor compiled one layer's code for all layers
    (the others hit its FX graph cache); outside on() the layers stay eager (no compile for prompts)."""
    from torch._dynamo.utils import counters
    from transformers import StaticCache

    from lora_demo.chat.decode import LayerCompile
    from lora_demo.models import load_model

    model = load_model("qwen3-tiny", dtype="fp32").model.eval()
    layers = model.config.num_hidden_layers
    assert layers >= 2
    compiled = LayerCompile(model)
    cache = StaticCache(config=model.config, max_cache_len=32)
    valid = torch.zeros(1, 32, dtype=torch.bool)
    valid[:, :5] = True
    prompt = dict(
        input_ids=torch.tensor([[1, 2, 3, 4]]),
        position_ids=torch.arange(4).view(1, 4),
        attention_mask=((torch.arange(32) <= torch.arange(4).unsqueeze(1)) & valid).view(1, 1, 4, 32),
    )
    step = dict(input_ids=torch.tensor([[5]]), position_ids=torch.tensor([[4]]), attention_mask=valid.view(1, 1, 1, 32))
    graphs, misses = counters["stats"]["unique_graphs"], counters["inductor"]["fxgraph_cache_miss"]
    with torch.inference_mode():
        model(**prompt, past_key_values=cache)
        assert counters["stats"]["unique_graphs"] == graphs  # prompts stay eager
        with compiled.on():
            other = threading.Thread(  # another thread meanwhile (a tab's loss, colouring) stays eager
                target=lambda: model(**prompt, past_key_values=StaticCache(config=model.config, max_cache_len=32))
            )
            other.start()
            other.join()
            assert counters["stats"]["unique_graphs"] == graphs
            fast = model(**step, past_key_values=cache).logits
        cache.reset()
        model(**prompt, past_key_values=cache)
        eager = model(**step, past_key_values=cache).logits
    torch.testing.assert_close(fast, eager, rtol=1e-4, atol=1e-4)
    assert counters["stats"]["unique_graphs"] - graphs == layers  # one dynamo entry a layer...
    assert counters["inductor"]["fxgraph_cache_miss"] - misses <= 1  # ...one inductor compile for them all


@pytest.mark.slow
def test_compiled_decoding_does_not_recompile(tiny_run):
    """With the decoding step compiled (the CUDA path; forced here on the CPU), a second prompt of another length,
    a new turn, sampling settings and the slider cause no recompile (torch._dynamo's counters), and greedy answers
    equal the eager path's."""
    from torch._dynamo.utils import counters

    eager, compiled = ChatEngine(), ChatEngine()
    compiled.compile = True
    list(eager.load("auto", str(tiny_run)))
    before = counters["stats"]["unique_graphs"]
    list(compiled.load("auto", str(tiny_run)))  # the warm-up compiles
    after_warmup = counters["stats"]["unique_graphs"]
    assert after_warmup > before and compiled.decoder.compiled and compiled.warmup_s > 0
    # as on CUDA: prompts left-padded to a multiple of 64, the common prefill widths run once at the next call
    compiled.decoder.prefill_multiple, compiled.decoder.prefills_warm = 64, False
    greedy = GenSettings(max_new_tokens=8, greedy=True, repetition_penalty=1.0)
    cases = [
        ("Hi", greedy),
        (PROMPT + " Tell me about yourself in two sentences, please.", greedy),
        (PROMPT, dataclasses.replace(greedy, adapter_scale=0.5)),
        (PROMPT, GenSettings(max_new_tokens=8, temperature=0.9, top_k=20, top_p=0.8, seed=3)),
    ]
    for prompt, gen in cases:
        got = compiled.answer_pair(prompt, gen)
        if gen.greedy:
            want = eager.answer_pair(prompt, gen)
            assert (got["base"], got["tuned"]) == (want["base"], want["tuned"]), prompt
    turns = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": PROMPT},
    ]
    for _ in compiled.generate_pair(turns, settings=greedy):
        pass
    assert counters["stats"]["unique_graphs"] == after_warmup and compiled.decoder.prefills_warm
    compiled.unload()
    eager.unload()


def test_generation_thread_gets_cuda_graph_thread_state(monkeypatch):
    """CUDA graph trees keep their state per thread; torch 2.11 created it only in the thread that imported them, so
    a second model's generation thread failed its first compiled step on the H200. The worker thread prepares it:
    checked here against torch 2.11's lookup (it asserts in a thread without that state)."""
    trees = pytest.importorskip("torch._inductor.cudagraph_trees")
    from lora_demo.chat import decode

    def get_obj_2_11(local, attr):
        if hasattr(local, attr):
            return getattr(local, attr)
        assert torch._C._is_key_in_tls(attr)
        return torch._C._get_obj_in_tls(attr)

    for without_initializer in (False, True):  # newer torch, then torch 2.11 (no _initialize_tls)
        if without_initializer:
            monkeypatch.delattr(trees, "_initialize_tls", raising=False)
        found = {}

        def look(prepare, found=found):
            if prepare:
                decode._cudagraph_thread_state()
            try:
                found[prepare] = [
                    type(get_obj_2_11(trees.local, a)) for a in ("tree_manager_containers", "tree_manager_locks")
                ]
            except AssertionError:
                found[prepare] = None

        for prepare in (False, True):
            thread = threading.Thread(target=look, args=(prepare,))
            thread.start()
            thread.join()
        assert found[False] is None and found[True] is not None, found


def test_generation_worker_runs_every_job_on_its_one_thread_and_hands_back_errors():
    """Every job runs in order on the worker's one named daemon thread (torch keeps per-thread state: the CPU thread
    count, CUDA graphs that replay only where they were recorded), a job may queue another, and what a job raises
    (BaseException too) reaches its submitter unchanged while the thread goes on serving."""
    from lora_demo.chat.decode import GenerationWorker

    main_threads = torch.get_num_threads()
    worker = GenerationWorker(name="lora-lab-test-generate", threads=1)
    try:
        seen = []

        def job(k):
            seen.append((k, threading.current_thread()))
            return k

        queued = [worker.submit(lambda k=k: job(k)) for k in range(5)]
        assert [f.result(timeout=30) for f in queued] == list(range(5))
        assert worker.run(lambda: worker.submit(lambda: job(5))).result(timeout=30) == 5  # queued from a job
        assert [k for k, _ in seen] == list(range(6))
        assert {t for _, t in seen} == {worker.thread}
        assert worker.thread.name == "lora-lab-test-generate" and worker.thread.daemon
        assert worker.run(torch.get_num_threads) == 1 and torch.get_num_threads() == main_threads
        for error in (ValueError("bad row"), KeyboardInterrupt(), SystemExit(3), GeneratorExit()):

            def fail(error=error):
                raise error

            with pytest.raises(type(error)) as caught:
                worker.run(fail)
            assert caught.value is error
        assert worker.run(threading.current_thread) is worker.thread
    finally:
        worker.close()
    assert not worker.thread.is_alive()
    with pytest.raises(RuntimeError):
        worker.submit(lambda: None)


def test_adapter_active_again_after_every_base_generation(engine):
    ids = torch.tensor([engine.prompt_ids([{"role": "user", "content": PROMPT}])])
    with torch.inference_mode():
        tuned_before = engine.model(input_ids=ids).logits
    for mode in ("rows", "sequential", "batch"):
        engine.answer_pair(PROMPT, GenSettings(max_new_tokens=4, greedy=True), mode=mode)
        with torch.inference_mode():
            assert torch.equal(engine.model(input_ids=ids).logits, tuned_before), mode


def test_adapter_scale_zero_is_the_base(engine):
    gen0 = GenSettings(max_new_tokens=10, greedy=True, repetition_penalty=1.0, adapter_scale=0.0)
    res = engine.answer_pair(PROMPT, gen0)
    assert res["tuned"] == res["base"]


@pytest.mark.parametrize("mode", ["rows", "batch", "sequential"])
def test_adapter_scale_zero_is_the_base_when_sampling(engine, mode):
    """Issue 28: with sampling on, scale 0 answered differently from the base despite the shared seed (both rows
    drew from one generator, so the tuned row got the base row's next random numbers). Each row now samples from
    its own generator seeded with the seed: the same seed and the same logits give the same answer."""
    sampled = GenSettings(
        max_new_tokens=16,
        greedy=False,
        temperature=1.5,
        top_p=1.0,
        top_k=0,
        repetition_penalty=1.0,
        seed=11,
        adapter_scale=0.0,
    )
    res = engine.answer_pair(PROMPT, sampled, mode=mode)
    assert res["base"] and res["tuned"] == res["base"]
    # really sampled (not greedy), and a row's draws depend on the seed and its own logits only: the base row
    # alone answers what it answered beside the tuned row
    greedy = engine.answer_pair(PROMPT, dataclasses.replace(sampled, greedy=True), mode=mode)
    assert greedy["base"] != res["base"]
    (alone,) = list(engine.generate([[{"role": "user", "content": PROMPT}]], [None], settings=sampled, mode=mode))[-1]
    assert alone.text == res["base"]


def test_gradio6_history_blocks_and_multi_turn(engine):
    hist = [
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello!"}]},
        {"role": "user", "content": [{"type": "text", "text": PROMPT}]},
    ]
    assert flatten_content(hist[0]["content"]) == "Hi"
    ids = engine.prompt_ids(hist)
    text = engine.tokenizer.decode(ids)
    assert text.endswith(
        "<|im_start|>user\nWhat is your name?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    assert "<|im_start|>assistant\nHello!<|im_end|>" in text
    last = None
    for last in engine.generate_pair(hist, hist, settings=GenSettings(max_new_tokens=5, greedy=True)):  # noqa: B007
        pass
    assert last[0].done and last[1].done


def test_thinking_on_changes_the_prompt(engine):
    on = engine.tokenizer.decode(engine.prompt_ids([{"role": "user", "content": "x"}], enable_thinking=True))
    assert on.endswith("<|im_start|>assistant\n")
    assert split_thinking("<think>\nwhy\n</think>\n\nAnswer") == ("why", "Answer")


def test_stop_mid_stream(engine):
    seen = 0
    for _base, _tuned in engine.generate_pair(
        [{"role": "user", "content": PROMPT}], settings=GenSettings(max_new_tokens=400, seed=1)
    ):
        seen += 1
        if seen == 3:
            engine.stop()
    assert seen < 50
    engine.answer_pair(PROMPT, GenSettings(max_new_tokens=3, greedy=True))  # the engine works again afterwards


def test_compare_on_rows(engine, tiny_run):
    rows = compare_on_rows(engine, tiny_run, limit=2, max_new_tokens=8)
    assert {r.split for r in rows} == {"train", "val"} and all(r.expected for r in rows)


@pytest.mark.parametrize("mode", ["rows", "batch", "sequential"])
def test_closed_stream_stops_and_joins_the_generate_thread(engine, mode):
    """A page closed mid-stream (the generator closed): the generate thread is stopped and joined, then the lock
    is free."""
    before = set(threading.enumerate())
    long = GenSettings(max_new_tokens=4000, min_new_tokens=4000, seed=1)
    stream = engine.generate_pair([{"role": "user", "content": PROMPT}], settings=long, mode=mode)
    next(stream)
    stream.close()
    left = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert left == [], left
    assert engine.lock.acquire(blocking=False)
    engine.lock.release()
    t0 = time.perf_counter()
    engine.worker.run(lambda: None)  # the generation thread is idle: nothing is still decoding
    assert time.perf_counter() - t0 < 2
    res = engine.answer_pair(PROMPT, GenSettings(max_new_tokens=3, min_new_tokens=3, greedy=True))
    assert res["base_stats"]["tokens"] == 3 and res["tuned_stats"]["tokens"] == 3  # not left stopped


class _RecordingModel:
    """Stands in for the model: records the prompt ids generate() is given and generates nothing."""

    device = torch.device("cpu")
    generation_config = SimpleNamespace(eos_token_id=None)

    def __init__(self):
        self.prompts: list[list[int]] = []

    def generate(self, input_ids, attention_mask, streamer, **kw):
        for row, mask in zip(input_ids.tolist(), attention_mask.tolist(), strict=True):
            self.prompts.append([t for t, m in zip(row, mask, strict=True) if m])
        streamer.put(input_ids)
        streamer.end()


@pytest.mark.parametrize("model_id", ["qwen3-tiny", "smollm2-135m-instruct"])
@pytest.mark.parametrize("template", ["alpaca", "chat"])
def test_chat_and_comparison_prompt_rows_as_training_did(model_id, template, tmp_path):
    """What the chat and the comparison table feed to generate is the masked prompt of build_example, for a row
    WITH an input (the comparison once folded the input into the instruction)."""
    row = {"instruction": "Translate to French", "input": "Good morning", "output": "Bonjour"}
    tok = cached_tokenizer(model_id)
    ex = build_example(row, tok, template)
    trained = ex.input_ids[: ex.n_prompt]
    engine = ChatEngine()
    engine.model, engine.tokenizer, engine.template = _RecordingModel(), tok, {"template": template}
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text(json.dumps(row) + "\n")
    assert [r.instruction for r in compare_on_rows(engine, tmp_path)] == ["Translate to French\n\nGood morning"]
    if template == "alpaca":  # the chat's Alpaca prompt: the message is the instruction, the system text its input
        engine.answer_pair(row["instruction"], system=row["input"])
        assert "### Input:\nGood morning" in tok.decode(trained)
    else:
        engine.answer_pair(f"{row['instruction']}\n\n{row['input']}")
    assert engine.model.prompts == [trained, trained]
    assert engine.prompt_ids(row) == trained


def test_release_for_training_keeps_the_model_without_cuda():
    engine = ChatEngine()
    engine.model = sentinel = object()
    engine.release_for_training()
    assert engine.model is (None if torch.cuda.is_available() else sentinel)


def test_bad_input(engine, tmp_path):
    with pytest.raises(InputError, match="Type a message"):
        engine.answer_pair("   ")
    with pytest.raises(InputError, match="max new tokens must be a number from 1"):
        engine.answer_pair(PROMPT, GenSettings(max_new_tokens=0))
    with pytest.raises(InputError, match="holds no adapter"):
        list(ChatEngine().load("qwen3-tiny", str(tmp_path)))


def test_cli_chat_json(tiny_run):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "lora_demo",
            "chat",
            "--adapter",
            str(tiny_run),
            "--prompt",
            PROMPT,
            "--max-new-tokens",
            "8",
            "--greedy",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert set(res) == {"base", "tuned", tiny_run.name} and res["base"] != res["tuned"]  # (one adapter: "tuned" too)
    assert res[tiny_run.name] == res["tuned"]


def test_4bit_checkpoint_chats_from_a_dequantized_copy(tmp_path):
    """A bitsandbytes 4-bit checkpoint (the CUDA default's kind) is dequantized once for chat when memory allows:
    no 4-bit layer is left, the status says which precision chat runs in, and the copy computes what the 4-bit
    model computes (within 16-bit rounding)."""
    pytest.importorskip("bitsandbytes")
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from lora_demo.models import load_tokenizer
    from lora_demo.models.registry import model_path

    cfg = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
    )
    m4 = AutoModelForCausalLM.from_pretrained(model_path("qwen3-tiny"), quantization_config=cfg, dtype=torch.float32)
    assert type(m4.model.layers[0].mlp.up_proj).__name__ == "Linear4bit"
    m4.save_pretrained(tmp_path / "q4")
    load_tokenizer("qwen3-tiny").save_pretrained(tmp_path / "q4")
    ids = torch.tensor([[9707, 1879, 11, 1246, 525]])
    with torch.inference_mode():
        ref = m4(input_ids=ids).logits
    engine = ChatEngine()
    lines = list(engine.load(str(tmp_path / "q4")))
    assert "dequantized once from the 4-bit checkpoint" in engine.precision
    assert engine.precision in lines[-1]
    assert not [m for m in engine.model.modules() if "4bit" in type(m).__name__]
    with torch.inference_mode():
        got = engine.model(input_ids=ids).logits.float()
    assert (got - ref).abs().max() < 0.25, (got - ref).abs().max()
    res = engine.answer_pair("Hi", GenSettings(max_new_tokens=4, min_new_tokens=4, greedy=True))
    assert res["base_stats"]["tokens"] == 4
    engine.unload()


def test_load_lines_status_and_errors_render_in_chinese(engine, tiny_run):
    """Issue 14: the engine's lines stay English (CLI, logs) and keep what the UI needs to show them in Chinese:
    the status line with its adapter and precision parts, a settings error, and a load stage."""
    import pickle

    from lora_demo.i18n import render

    status = engine.status()
    assert status.startswith("Loaded base `qwen3-tiny` with adapter `") and "chat runs in" in status
    zh = render(status, "zh")
    assert zh.startswith("已加载基座模型 `qwen3-tiny`；适配器 `") and str(tiny_run) in zh and "对话推理精度" in zh, zh
    assert render(pickle.loads(pickle.dumps(status)), "zh") == zh  # a copy (gr.State, a worker) keeps the template
    with pytest.raises(InputError) as err:
        GenSettings(max_new_tokens=0).check()
    assert str(err.value) == "max new tokens must be a number from 1 to 4096; got 0."
    assert render(err.value.args[0], "zh") == "最大新词元数 必须是 1 到 4096 之间的数，收到的是 0。"
    e = ChatEngine()
    stages = e.load("qwen3-tiny")
    first = next(stages)  # the first stage, before anything is loaded
    stages.close()
    assert first == f"Loading base model `qwen3-tiny` on {e.device}…"
    assert render(first, "zh") == f"正在 {e.device} 上加载基座模型 `qwen3-tiny`…"
    assert render(ChatEngine().status(), "zh") == "尚未加载模型。"


def test_thread_tuner_follows_the_cheaper_count_and_looks_again():
    """The CPU decoder's thread count follows the measured step cost: a bug that kept the first count (or never
    looked at the other again after the load changed) leaves chat 2-10x slower beside a busy process."""
    from lora_demo.chat.decode import ThreadTuner

    before = torch.get_num_threads()
    try:
        t = ThreadTuner(2, probe_every=4)
        t.start()
        assert t.now == 1 and torch.get_num_threads() == 1  # unknown counts are measured first
        t.record(4, 0.4)  # 0.1 s a step on one thread
        assert t.now == 2 and torch.get_num_threads() == 2  # the other is still unknown: measure it
        t.record(4, 0.2)  # two threads: 0.05 s a step
        assert t.now == 2
        t.record(2, 1.0)  # the machine got busy: two threads now cost 0.5 s a step (smoothed 0.275)
        assert t.now == 1 and torch.get_num_threads() == 1  # switched within the same call
        t.start()  # the next call starts on the cheaper
        assert t.now == 1
        t.record(4, 0.4)
        t.start()
        t.start()  # every 4th call looks at the other count again
        assert t.now == 2
        assert ThreadTuner(1).options == [1]
    finally:
        torch.set_num_threads(before)


def test_row_draws_sample_each_row_from_its_own_seed_with_the_right_frequencies():
    """The batched sampler: a row's tokens depend on its seed alone (not on its neighbours or its place in the
    batch), the same seed repeats, and token i comes with probability p_i (a biased hash or a wrong race, e.g.
    argmax(p * u), would skew the counts far outside the tolerance below)."""
    from lora_demo.chat.decode import RowDraws

    p = torch.tensor([0.5, 0.3, 0.15, 0.05, 0.0])
    n = 20000
    draws = RowDraws([7, 8], "cpu")
    both = torch.stack([draws(p.expand(2, -1).clone()) for _ in range(n)])  # [n, 2]
    for row in range(2):
        freq = torch.bincount(both[:, row], minlength=5).float() / n
        assert torch.allclose(freq, p, atol=0.012), freq  # ~3.5 standard errors at p = 0.5
    assert (both[:, 0] != both[:, 1]).float().mean() > 0.4  # two seeds: two streams
    alone = RowDraws([8], "cpu")
    assert torch.equal(torch.stack([alone(p.view(1, -1)) for _ in range(50)])[:, 0], both[:50, 1])
    flipped = RowDraws([8, 7], "cpu")
    assert torch.equal(torch.stack([flipped(p.expand(2, -1).clone()) for _ in range(50)]), both[:50].flip(1))
    assert int(RowDraws([2**64 - 1], "cpu")(p.view(1, -1))[0]) < 4  # any seed; a zero-probability token never
    wide = torch.zeros(8, 151936)  # a Qwen-sized vocabulary with all the mass on 3 tokens (top-k 3)
    wide[:, :3] = torch.tensor([0.6, 0.3, 0.1])
    many = RowDraws(list(range(8)), "cpu")
    assert all(int(many(wide).max()) < 3 for _ in range(200))  # a uniform of exactly 1.0 once let p = 0 win
