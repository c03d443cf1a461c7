"""Side-by-side chat: the base model and the adapted model answer the same prompt, streaming, from ONE model.

One PEFT model serves both sides, as ONE batch of two rows decoded together (mode "rows", the default):
every LoRA linear layer adds its update times a per-row scale (`rowscale.RowScale`): 0 for the base row (exactly
the base layer), the adapter-scale slider for the tuned row. Nothing is toggled on the model, so adapter state
cannot leak from one side to the other (Unsloth issue #4503: a "base" pane that was really the tuned model).
Decoding (`decode.PairDecoder`) runs on one long-lived thread (`decode.GenerationWorker`); on CUDA it uses one
static KV cache and a decoding step recorded once as a CUDA graph (its decoder layers compiled for it), at Load
(a visible warm-up stage), that no prompt length, turn, sampling setting or slider value records again. A 4-bit checkpoint is dequantized once to a 16-bit copy for
chat when memory allows.

Kept as fallbacks and benchmark baselines: "batch" (one `generate` with PEFT's per-row adapters,
`adapter_names=["__base__", "default"]`; also used when the adapter has layers the row scale cannot serve, e.g.
DoRA) and "sequential" (base inside `disable_adapter()`, then tuned, the plain-PEFT way).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lora_demo.chat.batcher import Batcher
from lora_demo.chat.registry import AdapterRegistry, adapter_key, run_template
from lora_demo.errors import InputError
from lora_demo.i18n import msg

__all__ = ["run_template"]  # (re-exported: callers read an adapter's prompt format here)


@dataclass
class GenSettings:
    max_new_tokens: int = 256
    greedy: bool = False
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 50
    repetition_penalty: float = 1.1
    seed: int = 0
    adapter_scale: float = 1.0  # 0 = base, 1 = as trained, up to 2 = exaggerated
    min_new_tokens: int = 0  # benchmarks force a fixed length with this

    def check(self) -> GenSettings:
        import math

        def bad(name, lo, hi):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
                raise InputError(msg("{name} must be a number from {lo} to {hi}; got {value!r}.", name=SETTING[name],
                                     lo=lo, hi=hi, value=v))  # fmt: skip

        bad("max_new_tokens", 1, 4096)
        bad("temperature", 0.01, 5)
        bad("top_p", 0.01, 1)
        bad("top_k", 0, 1000)
        bad("repetition_penalty", 0.5, 3)
        bad("seed", 0, 2**32 - 1)
        bad("adapter_scale", 0, 2)
        self.max_new_tokens, self.top_k, self.seed = int(self.max_new_tokens), int(self.top_k), int(self.seed)
        return self


# The settings' names in GenSettings.check's messages.
SETTING = {"max_new_tokens": msg("max new tokens"), "temperature": msg("temperature"), "top_p": msg("top p"),
           "top_k": msg("top k"), "repetition_penalty": msg("repetition penalty"), "seed": msg("seed"),
           "adapter_scale": msg("adapter scale")}  # fmt: skip


@dataclass
class SideResult:
    text: str = ""
    tokens: int = 0
    ttft_s: float | None = None
    seconds: float | None = None
    done: bool = False

    @property
    def tokens_per_s(self) -> float | None:
        if not self.seconds or self.tokens < 2 or self.ttft_s is None:
            return None
        return (self.tokens - 1) / max(self.seconds - self.ttft_s, 1e-9)


def flatten_content(content) -> str:
    """Gradio 6 gives message content as a list of blocks ([{'type': 'text', 'text': ...}]); make it a string."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text") or content.get("content") or "")
    if isinstance(content, (list, tuple)):
        return "".join(flatten_content(c) for c in content)
    return str(content)


def split_thinking(text: str) -> tuple[str, str]:
    """(thinking, answer) of a Qwen3 reply: the part inside <think>...</think>, and the rest."""
    if "<think>" in text:
        head, _, rest = text.partition("<think>")
        thought, closed, answer = rest.partition("</think>")
        return thought.strip(), (head + answer).strip() if closed else ""
    return "", text.strip()


def _free_memory_bytes(device: str) -> int:
    import torch

    if device == "cuda":
        return torch.cuda.mem_get_info()[0]
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _param_count(model, embeddings: bool = True) -> int:
    """Parameters as they would be in 16 bit (a bitsandbytes 4-bit layer counts in_features * out_features)."""
    import torch

    n = 0
    for m in model.modules():
        w = getattr(m, "weight", None)
        if not embeddings and isinstance(m, torch.nn.Embedding):
            continue
        if w is not None and type(w).__name__ in ("Params4bit", "Int8Params") and hasattr(m, "in_features"):
            n += m.in_features * m.out_features + (m.bias.numel() if getattr(m, "bias", None) is not None else 0)
        else:
            n += sum(p.numel() for p in m.parameters(recurse=False))
    return n


def chat_precision(model, plan) -> tuple[object, str]:
    """The weights chat decodes with, and a line saying which.

    - A bitsandbytes 4/8-bit checkpoint is dequantized once to a 16-bit copy when free memory holds it (with room
      to spare): decoding is memory-bound, and 16-bit matmuls beat bitsandbytes' dequantize-per-step kernels.
    - On a CPU with native bf16 (AVX512-BF16/AMX) a model of >= 50M non-embedding parameters decodes in bf16:
      half the bytes per token (SmolLM2-135M, 2 cores: 20 vs 10.7 steps/s at batch 2, measured). Smaller models
      stay fp32, where the difference is noise and tests compare with a plain fp32 load.
    """
    import torch

    from lora_demo.device import SMALL_MODEL_PARAMS, cpu_has_native_bf16, torch_dtype

    if plan.device == "cuda":
        dtype = torch_dtype(plan.precision)
    elif cpu_has_native_bf16():
        dtype = torch.bfloat16
    else:
        dtype = torch.float32
    name = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}[dtype]
    if getattr(model, "hf_quantizer", None) is not None:
        bits = "8-bit" if getattr(model, "is_loaded_in_8bit", False) else "4-bit"
        need = _param_count(model) * 2
        free = _free_memory_bytes(plan.device)
        if free < need * 1.25 + 2**30:
            return model, msg("{bits} bitsandbytes weights (a 16-bit copy needs {need:.1f} GiB; {free:.1f} GiB free)",
                              bits=bits, need=need / 2**30, free=free / 2**30)  # fmt: skip
        dtype = torch.float16 if dtype == torch.float32 and plan.device == "cuda" else dtype
        name = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}[dtype]
        model = model.dequantize(dtype=dtype).to(dtype)  # the layers never quantized (norms, embeddings) too
        if getattr(model, "hf_quantizer", None) is not None:
            model.hf_quantizer = None
        for attr in ("is_loaded_in_4bit", "is_loaded_in_8bit", "is_quantized"):
            if getattr(model, attr, False):
                setattr(model, attr, False)
        return model, msg("{name} (a 16-bit copy dequantized once from the {bits} checkpoint)", name=name, bits=bits)
    if plan.device == "cpu":
        if dtype == torch.bfloat16 and _param_count(model, embeddings=False) >= SMALL_MODEL_PARAMS:
            bf16 = msg("bf16 (this CPU multiplies bf16 natively; decoding reads half the bytes)")
            return model.to(torch.bfloat16), bf16
        return model.float(), "fp32"
    return model, name


class _PairStreamer:
    """A generate() streamer for a batch: collects each row's new tokens and wakes the reader."""

    def __init__(self, rows: int):
        self.rows = rows
        self.tokens: list[list[int]] = [[] for _ in range(rows)]
        self.events: queue.Queue = queue.Queue()
        self._prompt_seen = False

    def put(self, value) -> None:
        if not self._prompt_seen:  # generate() first hands over the prompt ids
            self._prompt_seen = True
            return
        self.add(value.reshape(self.rows, -1).tolist())

    def add(self, chunk: list[list[int]]) -> None:
        """New tokens of each row (PairDecoder's sink)."""
        for i, row in enumerate(chunk):
            self.tokens[i].extend(row)
        self.events.put(time.perf_counter())

    def end(self) -> None:
        self.events.put(None)


class ChatEngine:
    """Holds one loaded base model and the adapters attached to it (any number, up to a budget), and generates
    batches whose rows each name their adapter (or none: the base model)."""

    def __init__(self):
        self.lock = threading.Lock()  # generation (and attaching, which changes the model) is serialized per model
        self.stop_event = threading.Event()  # stops the generation running now (the CLI's Ctrl-C, tests)
        self._should_stop = self.stop_event.is_set  # this generation's stop (the engine's, or its request's)
        self.model = None
        self.tokenizer = None
        self.model_id: str | None = None
        self.adapter_dir: str | None = None  # the adapter load() was given: what a request naming none gets
        self.adapters = AdapterRegistry()
        self.module_shapes: dict | None = None  # the base model's modules, to check an adapter before attaching
        self.template: dict = {}
        self.device = "cpu"
        self.compile: bool | None = None  # compile the decoding step: None = on CUDA only (set before load)
        self.max_cache_len = 1280  # the static KV cache's length on CUDA (prompt + answer); grows when needed
        self.precision: str = ""  # what chat computes in, said in the status line (a Msg when it explains)
        self.row_scale = None  # rowscale.RowScale when every attached adapter's layers allow it
        self.decoders: dict = {}  # rows -> decode.PairDecoder (one static cache and step per batch size)
        self.batcher = Batcher(self)  # requests waiting for the next batch (several visitors share one)
        self.worker = None  # decode.GenerationWorker: the one thread every generation of this model runs on
        self.warmup_s: float | None = None

    @property
    def decoder(self):
        """The two-row (base + tuned) decoder, made at load."""
        return self.decoders.get(2 if self.adapter_dir is not None else 1)

    # --- loading ---
    def status(self, adapter_dir: str | None = None) -> str:
        """The status line for a request with this adapter (None: load()'s); a Msg the UI renders per session."""
        if self.model is None:
            return msg("No model loaded.")
        adapter_dir = self.adapter_dir if adapter_dir is None else adapter_dir
        adapter = (msg("adapter `{path}`", path=str(adapter_dir)) if adapter_dir
                   else msg("no adapter (both sides are the base model)"))  # fmt: skip
        fmt = (self.adapters.template(adapter_dir) or self.template).get("template", "chat")
        line = msg("Loaded base `{model}` with {adapter}; prompt format: {fmt}; chat runs in {precision}.",
                   model=self.model_id, adapter=adapter, fmt=fmt, precision=self.precision)  # fmt: skip
        if len(self.adapters) > 1:
            line = msg("{line} {n} adapters attached to this base (each visitor's own).", line=line,
                       n=len(self.adapters))  # fmt: skip
        return line

    def adapter_name(self, adapter_dir: str | None = None) -> str:
        """The PEFT name under which an attached adapter (None: load()'s) lives in the model (for `adapter_names=`,
        `set_adapter`)."""
        return self.adapters.name(adapter_dir or self.adapter_dir)

    @property
    def default_mode(self) -> str:
        """'rows' (one batch, per-row adapters) unless an attached adapter has layers the row masks cannot serve."""
        if self.decoder is None and not self.decoders:  # a model set by hand (tests), not through load()
            return "batch"
        return "rows" if not len(self.adapters) or self.row_scale is not None else "batch"

    def load(self, model_id: str | None, adapter_dir: str | None = None) -> Iterator[str]:
        """Load a base model and (optionally) an adapter, yielding progress lines (Msgs: English text that the UI
        renders in the session's language)."""
        import torch

        from lora_demo.adapters import check_adapter, module_shapes
        from lora_demo.device import detect
        from lora_demo.models import load_model, resolve_model

        info = check_adapter(adapter_dir) if adapter_dir else None  # one clear message for a missing or torn adapter
        model_id = resolve_model(model_id, adapter_dir)  # 'auto': the adapter's base, else this device's default
        with self.lock:
            self.unload()
            plan = detect()
            yield msg("Loading base model `{model}` on {device}…", model=model_id, device=plan.device)
            t0 = time.perf_counter()
            dtype = plan.precision if plan.device == "cuda" else "fp32"
            lm = load_model(model_id, dtype=dtype, device=plan.device)
            model, tok = lm.model, lm.tokenizer
            model, self.precision = chat_precision(model, plan)
            if "dequantized" in self.precision:
                yield msg("Dequantized the 4-bit weights once for chat: {precision}.", precision=self.precision)
            model.eval()
            tok.padding_side = "left"
            if plan.device == "cpu":
                torch.set_num_threads(plan.cpu_threads)
            self.model, self.tokenizer, self.model_id, self.device = model, tok, model_id, plan.device
            self.module_shapes = module_shapes(model)
            self.template = {"template": "chat" if tok.chat_template else "alpaca"}
            self._prepare_decoding()
            if info is not None:
                yield msg("Loading adapter `{path}`…", path=str(adapter_dir))
                self._attach_locked(adapter_dir, info)
                self.adapter_dir = adapter_key(adapter_dir)
                self.template = self.adapters.template(adapter_dir) or self.template
                self._decoder(2)  # the base + tuned batch, warmed up below
            yield msg("Loaded in {seconds:.1f} s. {status}", seconds=time.perf_counter() - t0, status=self.status())
            yield from self._warm_up_stages(t0)

    def _warm_up_stages(self, t0: float) -> Iterator[str]:
        if self.decoder is not None and self.decoder.step_mode == "graph":
            yield msg("Warming up: recording the decoding step as one CUDA graph (a few seconds)…")
        elif self.decoder is not None and self.decoder.compiled:
            yield msg("Warming up: compiling the decoding step once for this model (up to a minute)…")
        self.warmup_s = self._warm_up()
        yield msg("Ready in {seconds:.1f} s (warm-up {warmup:.1f} s). {status}", seconds=time.perf_counter() - t0,
                  warmup=self.warmup_s, status=self.status())  # fmt: skip

    def attach(self, adapter_dir: str) -> Iterator[str]:
        """Make an adapter folder available to requests on this base (yields a stage line while it attaches; an
        attached one is only marked as recently used). Checked first: a torn adapter or one of another base is one
        clear message."""
        from lora_demo.adapters import check_adapter

        if self.model is None:
            raise InputError(msg("Load a model first (Chat tab: pick a model and an adapter, then Load)."))
        if adapter_dir in self.adapters:
            self.adapters.name(adapter_dir)
            return
        info = check_adapter(adapter_dir)
        yield msg("Attaching adapter `{path}` to `{model}`…", path=str(adapter_dir), model=self.model_id)
        t0 = time.perf_counter()
        if not self.lock.acquire(timeout=600):
            raise InputError(msg("The model is busy with another generation; try again in a moment."))
        try:
            if adapter_dir not in self.adapters:
                self._attach_locked(adapter_dir, info)
        finally:
            self.lock.release()
        yield msg("Attached in {seconds:.1f} s. {status}", seconds=time.perf_counter() - t0,
                  status=self.status(adapter_key(adapter_dir)))  # fmt: skip

    def _attach_locked(self, adapter_dir: str, info) -> None:
        """Attach (the lock held): check the adapter against the base's modules, load it into the PeftModel, detach
        the least recently used beyond the budget, and rebuild the row masks (a new stack of factors)."""
        from lora_demo.adapters import check_adapter_fits

        check_adapter_fits(info, self.module_shapes or {}, self.model_id or "")
        self.model, detached = self.adapters.attach(self.model, adapter_dir, on_cuda=self.device == "cuda")
        if self.adapter_dir is not None and adapter_key(self.adapter_dir) in detached:
            self.adapter_dir = None
        self._rebuild_rows()

    def _rebuild_rows(self) -> None:
        """The per-row masks over every attached adapter (None when one has layers they cannot serve: then PEFT's
        mixed batch serves), and decoders that record their step again with the new factors."""
        import os

        from lora_demo.chat.rowscale import RowScale, lora_linear_layers

        if self.row_scale is not None and self.row_scale.refresh(self.model):
            return  # the same tensors refilled in place: recorded and compiled steps stay valid
        if self.row_scale is not None:
            self.row_scale.remove()
        # CUDA: rank columns in multiples of 64 per layer, so most attaches refill in place (no new CUDA graph or
        # compile); CPU: exact sizes (nothing is recorded there, and padding columns would cost time).
        env = os.environ.get("LORA_LAB_CHAT_RANK_BUCKET", "").strip()
        bucket = int(env) if env.isdigit() and int(env) > 0 else (64 if self.device == "cuda" else 1)
        self.row_scale = RowScale(self.model, rows=2, bucket=bucket) if lora_linear_layers(self.model) else None
        for decoder in self.decoders.values():
            decoder.forget_step()

    def _prepare_decoding(self) -> None:
        """The base model's decoders (made per batch size when first asked) and its one generation thread."""
        from lora_demo.chat.decode import GenerationWorker

        self.decoders = {}
        self._decoder(1)
        self.worker = GenerationWorker()

    def _decoder(self, rows: int):
        from lora_demo.chat.decode import PairDecoder

        if rows not in self.decoders:
            inner = self.model.base_model.model if hasattr(self.model, "peft_config") else self.model
            compiled = self.device == "cuda" if self.compile is None else self.compile
            self.decoders[rows] = PairDecoder(inner, rows, compiled=compiled, max_cache_len=self.max_cache_len)
        return self.decoders[rows]

    def _warm_up(self) -> float:
        """Short generations through the default path, on the generation thread. CUDA: records the decoding step's
        CUDA graph (compiling it first in the compile modes; graph trees record on the second call). CPU: times 1 and all cores for this model on this thread
        and keeps the faster (2 threads were slower than 1 for SmolLM2-135M on 2 cores; it depends on the model
        and the machine)."""
        import torch

        t0 = time.perf_counter()
        if self.decoder is None or self.default_mode != "rows":
            return 0.0
        # A prompt of a typical length: the eager prefill's kernels for such shapes get warmed too (on the H200 the
        # first answer after a 'Hi' warm-up waited 0.85 s for its first tokens, the next one 0.1 s).
        warm = " ".join(["Explain how low-rank adapters change a model's answers."] * 8)
        rows = [self.tokenizer(warm).input_ids[:96] or [self.tokenizer.pad_token_id]] * self.decoder.rows

        def gen(n):
            return lambda: self._decode(rows, GenSettings(max_new_tokens=n, min_new_tokens=n, greedy=True))

        if self.decoder.compiled:
            for _ in range(2):
                self.worker.run(gen(4))
            return time.perf_counter() - t0
        self.worker.run(gen(2))
        timings = {}
        for threads in sorted({1, max(1, torch.get_num_threads())}):
            self.worker.run(lambda t=threads: torch.set_num_threads(t))
            t1 = time.perf_counter()
            self.worker.run(gen(8))
            timings[threads] = time.perf_counter() - t1
        best = min(timings, key=timings.get)
        self.worker.run(lambda: torch.set_num_threads(best))
        self.worker.threads = best
        return time.perf_counter() - t0

    def unload(self) -> None:
        compiled = any("compile" in d.step_mode for d in self.decoders.values())
        if self.worker is not None:
            self.worker.close()
        if self.row_scale is not None:
            self.row_scale.remove()
        self.worker = self.row_scale = None
        self.decoders = {}
        self.adapters.detach_all()
        self.model = self.tokenizer = self.module_shapes = None
        self.model_id = self.adapter_dir = None
        self.precision, self.warmup_s = "", None
        if compiled:
            import torch._dynamo

            torch._dynamo.reset()  # the next model compiles afresh (and old graphs free their memory)
        import gc

        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001
            pass

    def release_for_training(self) -> None:
        """Before training on CUDA, free the GPU memory this model holds (a GPU holds one model at a time)."""
        import torch

        if torch.cuda.is_available() and self.model is not None:
            self.unload()

    def stop(self) -> None:
        self.stop_event.set()

    # --- prompting ---
    def prompt_ids(self, source: list[dict] | dict, system: str = "", enable_thinking: bool | None = None,
                   adapter_dir: str | None = None) -> list[int]:  # fmt: skip
        """Token ids of the prompt for one side: a history ending with the user's turn, or a dataset row (prompted
        exactly as training prompted it: lora_demo.data.templates.prompt_ids, the masked part of build_example), in
        the prompt format of `adapter_dir`'s run (None: load()'s)."""
        from lora_demo.data.templates import prompt_ids

        fmt = self.adapters.template(adapter_dir) or self.template
        think = fmt.get("enable_thinking", False) if enable_thinking is None else enable_thinking
        template = fmt.get("template", "chat")
        if isinstance(source, dict):
            if not str(source.get("instruction") or "").strip():
                raise InputError(msg("This row has no instruction to prompt with."))
            return prompt_ids(source, self.tokenizer, template, bool(think), system or None)
        msgs = [
            {"role": m["role"], "content": flatten_content(m.get("content"))}
            for m in source
            if m.get("role") in ("user", "assistant")
        ]
        if not msgs or msgs[-1]["role"] != "user" or not msgs[-1]["content"].strip():
            raise InputError(msg("Type a message first."))
        return prompt_ids(msgs, self.tokenizer, template, bool(think), system or None)

    # --- generation ---
    def generate_pair(
        self,
        base_history: list[dict] | dict,
        tuned_history: list[dict] | dict | None = None,
        system: str = "",
        settings: GenSettings | None = None,
        enable_thinking: bool | None = None,
        mode: str | None = None,
        every_s: float = 0.0,
        adapter_dir: str | None = None,
    ) -> Iterator[tuple[SideResult, SideResult]]:
        """Stream (base, tuned) results; tuned: `adapter_dir` (None: load()'s adapter). Without any adapter the
        tuned side stays empty. See generate() for mode and every_s."""
        adapter_dir = adapter_dir or self.adapter_dir
        tuned_history = base_history if tuned_history is None else tuned_history
        if adapter_dir is None:
            for (base,) in self.generate([base_history], [None], system, settings, enable_thinking, mode, every_s):
                yield base, SideResult(done=True)
            return
        yield from self.generate([base_history, tuned_history], [None, adapter_dir], system, settings,
                                 enable_thinking, mode, every_s, prompt_adapter=adapter_dir)  # fmt: skip

    def generate(
        self,
        sources: list,
        adapters: list[str | None],
        system: str = "",
        settings: GenSettings | None = None,
        enable_thinking: bool | None = None,
        mode: str | None = None,
        every_s: float = 0.0,
        prompt_adapter: str | None = None,
        stop: threading.Event | None = None,
    ) -> Iterator[list[SideResult]]:
        """Stream one result per row: row i answers sources[i] (a history ending with the user's turn, or a dataset
        row) with adapters[i] (an attached adapter's folder, or None: the base model), all rows decoded as ONE
        batch. Each row is prompted in its adapter's format; base rows in `prompt_adapter`'s (so base and tuned
        read the same prompt), else the first adapter's.

        mode: None (the default path: 'rows', or 'batch' for adapters the row masks cannot serve), 'rows', 'batch'
        or 'sequential'. every_s: yield at most that often (besides the first token and the end), so a page gets
        fewer, bigger updates; 0 yields on every new chunk. When the consumer stops iterating (a closed page:
        GeneratorExit), generation is stopped and waited for before the model lock is released. stop: an Event that
        stops this request (a visitor's Stop button), besides the engine's stop()."""
        if self.model is None:
            raise InputError(msg("Load a model first (Chat tab: pick a model and an adapter, then Load)."))
        settings = (settings or GenSettings()).check()
        mode = self._mode(mode, adapters)
        first = prompt_adapter or next((a for a in adapters if a), None)
        rows = [
            self.prompt_ids(src, system, enable_thinking, a or first) for src, a in zip(sources, adapters, strict=True)
        ]
        if mode == "rows":  # the default: joins the batch other visitors' requests share (chat/batcher.py)
            yield from self._rows(rows, adapters, settings, every_s, stop)
            return
        if not self.lock.acquire(timeout=600):
            raise InputError(msg("The model is busy with another generation; try again in a moment."))
        try:
            names = self._names_locked(adapters)
            self.stop_event.clear()
            own = stop if stop is not None else threading.Event()
            self._should_stop = lambda: self.stop_event.is_set() or own.is_set()
            if mode == "sequential":
                yield from self._sequential(rows, names, settings, every_s)
            else:
                yield from self._batched(rows, names, settings, every_s)
        finally:
            self.lock.release()

    def _mode(self, mode: str | None, adapters: list) -> str:
        mode = mode or self.default_mode
        if mode not in ("rows", "batch", "sequential"):
            raise InputError(msg("Unknown chat mode {mode!r}: rows, batch or sequential.", mode=mode))
        if mode == "rows" and not self.decoders:
            raise InputError(msg("Mode 'rows' needs a model loaded with ChatEngine.load()."))
        if mode == "rows" and any(adapters) and self.row_scale is None:
            raise InputError(msg("This adapter has layers the per-row scale cannot serve (e.g. DoRA): use mode "
                                 "'batch'."))  # fmt: skip
        return mode

    def _names_locked(self, adapters: list) -> list[str | None]:
        """Each row's PEFT adapter name; an adapter detached meanwhile (another visitor's attach pushed it out of
        the budget) is attached again here, the lock held."""
        from lora_demo.adapters import check_adapter

        names = []
        for a in adapters:
            if a is not None and a not in self.adapters:
                self._attach_locked(a, check_adapter(a))
            names.append(None if a is None else self.adapters.name(a))
        return names

    def _eos_ids(self) -> list[int]:
        tok = self.tokenizer
        gen_eos = _as_list(getattr(self.model.generation_config, "eos_token_id", None))
        return sorted({i for i in (tok.eos_token_id, *gen_eos) if i is not None})

    def _decode(self, rows: list[list[int]], settings: GenSettings, sink=None, names: list | None = None,
                scales: list | None = None, should_stop=None):  # fmt: skip
        """The default path, on the generation thread: one batch, each row's LoRA masked to its adapter (None: the
        base row) at its scale (default: the slider's). names=None: the base row and load()'s adapter."""
        if names is None:
            names = [None] + ([self.adapters.name(self.adapter_dir)] if self.adapter_dir else [])
            names = names[: len(rows)] + [names[-1]] * (len(rows) - len(names))
        scales = scales or [settings.adapter_scale] * len(rows)
        values = [(n, s if n else 0.0) for n, s in zip(names, scales, strict=True)]
        scaled = self.row_scale.on(values) if self.row_scale is not None and any(names) else None
        with scaled or contextlib.nullcontext():
            return self._decoder(len(rows)).generate(
                rows, self.tokenizer.pad_token_id, set(self._eos_ids()), settings.max_new_tokens,
                min_new_tokens=settings.min_new_tokens, greedy=settings.greedy, temperature=settings.temperature,
                top_p=settings.top_p, top_k=settings.top_k, repetition_penalty=settings.repetition_penalty,
                seed=settings.seed, sink=sink, should_stop=should_stop or self.stop_event.is_set,
            )  # fmt: skip

    def _rows(self, rows: list[list[int]], adapters: list, settings: GenSettings, every_s: float, stop=None):
        """A request of the default path: queued for the next batch (other requests with the same settings join
        it), streamed from its own rows; leaving early (a closed page) stops it and waits for its batch to let go."""
        from lora_demo.chat.batcher import Request

        if self.worker is None:
            from lora_demo.chat.decode import GenerationWorker

            self.worker = GenerationWorker()
        results = [SideResult() for _ in rows]
        streamer = _PairStreamer(len(rows))
        streamer._prompt_seen = True
        req = Request(rows, list(adapters), settings, streamer, stop=stop if stop is not None else threading.Event())
        self.batcher.submit(req)
        finished = False
        try:
            for _ in _drain(streamer, results, req.queued_at, set(self._eos_ids()), self.tokenizer.decode, every_s):
                if req.error is None:
                    yield results
            finished = True
        finally:
            if not finished:
                req.stop.set()  # honoured at the batch's next look at the tokens
            req.done.wait()
        if req.error is not None:
            raise req.error

    def _gen_kwargs(self, settings: GenSettings) -> dict:
        from transformers import StoppingCriteria, StoppingCriteriaList

        should_stop = self._should_stop

        class _Stop(StoppingCriteria):
            def __call__(self, input_ids, scores, **kw):
                return should_stop()

        kw = dict(max_new_tokens=settings.max_new_tokens, do_sample=not settings.greedy, eos_token_id=self._eos_ids(),
                  pad_token_id=self.tokenizer.pad_token_id, repetition_penalty=settings.repetition_penalty,
                  stopping_criteria=StoppingCriteriaList([_Stop()]))  # fmt: skip
        if settings.min_new_tokens:
            kw["min_new_tokens"] = settings.min_new_tokens
        if not settings.greedy:
            kw.update(temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k)
        else:
            kw.update(temperature=None, top_p=None, top_k=None)
        return kw

    def _batched(self, rows: list[list[int]], names: list, settings: GenSettings, every_s: float = 0.0):
        """PEFT's mixed batch: one generate() with adapter_names (a base row: LoRA bypassed)."""
        kw = self._gen_kwargs(settings)
        if any(names):
            kw["adapter_names"] = [n or "__base__" for n in names]
        results = [SideResult() for _ in rows]
        for _ in self._stream(rows, kw, results, settings, every_s=every_s):
            yield results

    def _sequential(self, rows: list[list[int]], names: list, settings: GenSettings, every_s: float = 0.0):
        """Row by row: a base row with the adapters disabled, an adapter row with that adapter active (the
        plain-PEFT way, the benchmark baseline)."""
        kw = self._gen_kwargs(settings)
        results = [SideResult() for _ in rows]
        for k, name in enumerate(names):
            if name is not None:
                self.model.set_adapter(name)
            for _ in self._stream([rows[k]], kw, [results[k]], settings, base_only=name is None, every_s=every_s):
                yield results

    def _stream(self, rows: list[list[int]], kw: dict, results: list[SideResult], settings: GenSettings,
                base_only=False, every_s: float = 0.0) -> Iterator[None]:  # fmt: skip
        """One transformers generate() over left-padded rows, on the generation thread."""
        import torch

        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=self.model.device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=self.model.device)

        def job(streamer):
            torch.manual_seed(settings.seed)
            off = self.model.disable_adapter() if base_only and len(self.adapters) else contextlib.nullcontext()
            with torch.inference_mode(), off, self._scaled(settings.adapter_scale):
                self.model.generate(input_ids=ids, attention_mask=mask, streamer=streamer, **kw)

        yield from self._run_streaming(len(rows), job, results, every_s, prompt_first=True)

    def _run_streaming(self, n_rows: int, job, results: list[SideResult], every_s: float,
                       prompt_first: bool = False) -> Iterator[None]:  # fmt: skip
        """Run job(streamer) on the generation thread and yield as `results` change.

        However the consumer leaves (done, an error, GeneratorExit from a closed page), generation is stopped and
        waited for before this returns, so the caller's model lock is never released under a running generation."""
        streamer = _PairStreamer(n_rows)
        streamer._prompt_seen = not prompt_first

        def work():
            try:
                job(streamer)
            finally:
                streamer.end()

        if self.worker is None:
            from lora_demo.chat.decode import GenerationWorker

            self.worker = GenerationWorker()
        t0 = time.perf_counter()
        done, box = self.worker.submit(work)
        finished = False
        try:
            yield from _drain(streamer, results, t0, set(self._eos_ids()), self.tokenizer.decode, every_s)
            finished = True
        finally:
            if not finished:
                self.stop_event.set()  # honoured at the next token
            done.wait()
        if "error" in box:
            raise box["error"]

    def _scaled(self, scale: float):
        if not len(self.adapters) or scale == 1.0:
            return contextlib.nullcontext()
        from peft.helpers import rescale_adapter_scale

        return rescale_adapter_scale(self.model, scale)

    def answer_pair(self, prompt: str | dict, settings: GenSettings | None = None, system: str = "",
                    mode: str | None = None, adapter_dir: str | None = None) -> dict:  # fmt: skip
        """Both answers to one prompt, complete (for the CLI, the comparison table and tests). A dict prompt is a
        dataset row, prompted exactly as training prompted it. adapter_dir: the tuned side (None: load()'s)."""
        source = prompt if isinstance(prompt, dict) else [{"role": "user", "content": prompt}]
        results = None
        for results in self.generate_pair(source, None, system, settings, mode=mode, adapter_dir=adapter_dir):  # noqa: B007
            pass
        base, tuned = results
        return {"base": base.text, "tuned": tuned.text, "base_stats": _stats(base), "tuned_stats": _stats(tuned)}


def _stats(r: SideResult) -> dict:
    return {"tokens": r.tokens, "ttft_s": r.ttft_s, "seconds": r.seconds, "tokens_per_s": r.tokens_per_s}


def _drain(
    streamer: _PairStreamer, results: list[SideResult], t0: float, eos: set, decode, every_s: float = 0.0
) -> Iterator[None]:
    """Read a streamer's events until generation ends, updating each row's result (text up to its first EOS,
    token count, time to first token, elapsed time). Yields after an event when a row got its first token, a row
    finished, or every_s has passed since the last yield (0: after every event); the last yield has all rows done."""
    last_yield = None
    while True:
        event = streamer.events.get()
        end = event is None
        while not end:  # take every event already waiting: one update for all of them
            try:
                nxt = streamer.events.get_nowait()
            except queue.Empty:
                break
            end, event = nxt is None, (nxt if nxt is not None else event)
        now = event if event is not None and not end else time.perf_counter()
        news = False
        for toks, res in zip(streamer.tokens, results, strict=True):
            if res.done:
                continue
            cut = next((j for j, t in enumerate(toks) if t in eos), None)
            kept = toks if cut is None else toks[:cut]
            if kept and res.ttft_s is None:
                res.ttft_s, news = now - t0, True
            if len(kept) != res.tokens or not res.text:
                res.text = decode(kept, skip_special_tokens=True)
            res.tokens, res.seconds = len(kept), now - t0
            res.done = cut is not None or end
            news = news or res.done
        if end or news or last_yield is None or now - last_yield >= every_s:
            last_yield = now
            yield
        if end:
            return


def _as_list(x) -> list:
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple)) else [x]


@dataclass
class CompareRow:
    split: str
    instruction: str
    expected: str
    base: str = ""
    tuned: str = ""
    extra: dict = field(default_factory=dict)


def compare_on_rows(
    engine: ChatEngine, run_dir: str | Path, limit: int = 6, max_new_tokens: int = 64
) -> list[CompareRow]:
    """Greedy base and tuned answers on the run's own training and validation rows, beside the expected output.

    Each row is prompted as training prompted it (an Alpaca row's input stays its input)."""
    from lora_demo.io import read_jsonl

    out: list[CompareRow] = []
    gen = GenSettings(max_new_tokens=max_new_tokens, greedy=True, repetition_penalty=1.0)
    adapter = str(run_dir) if (Path(run_dir) / "adapter_config.json").is_file() else None  # else: load()'s
    for split in ("train", "val"):
        from lora_demo.adapters import run_folder

        rows = read_jsonl(run_folder(run_dir) / "data" / f"{split}.jsonl")  # a checkpoint: its run's rows
        for row in rows[: limit if split == "train" else max(2, limit // 2)]:
            shown = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
            res = engine.answer_pair(row, gen, adapter_dir=adapter)
            out.append(CompareRow(split, shown, row["output"], res["base"], res["tuned"]))
    if not out:
        raise InputError(msg("{run_dir} has no data/train.jsonl: pick an adapter trained in LoRA Lab to compare on "
                             "its rows.", run_dir=str(run_dir)))  # fmt: skip
    return out
