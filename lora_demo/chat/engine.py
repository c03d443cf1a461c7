"""The chat engine: one loaded base model, the adapters attached to it, and batches whose rows each name their adapter.

One PEFT model serves every row as ONE batch decoded together (mode "rows", the default): each LoRA layer masks
its stacked adapters' rank columns per row (`rowscale.RowScale`): nothing for a base row (exactly the base layer),
the row's own adapter at its scale otherwise. Nothing is toggled on the model, so adapter state cannot leak from
one row to another (Unsloth issue #4503: a "base" pane that was really the tuned model). Requests wait for the
next batch together (`batcher.Batcher`); decoding (`decode.PairDecoder`) runs on one long-lived thread
(`decode.GenerationWorker`); on CUDA it uses one static KV cache and a decoding step recorded once per batch size
as a CUDA graph (its decoder layers compiled for it), at Load for two rows (a visible warm-up stage), that no
prompt length, turn, sampling setting, slider value or attached adapter that fits records again. A 4-bit
checkpoint is dequantized once to a 16-bit copy for chat when memory allows (`precision.py`).

The rest of the house: `pool.py` (bases by id), `registry.py` (attached adapters), `request.py` (settings and
results), `stream.py` (rows to readers), `compare.py` (answers on a run's own rows). Kept as a fallback and a
benchmark baseline: "batch" (one `generate` with PEFT's per-row `adapter_names`; used when an adapter has layers
the row masks cannot serve, e.g. DoRA) and "sequential" (row by row, the plain-PEFT way).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from concurrent import futures

from lora_demo import env
from lora_demo.adapters import check_adapter, check_adapter_fits, module_shapes
from lora_demo.chat.batcher import CUDA_SIZES, Batcher, Request
from lora_demo.chat.compare import CompareRow, compare_on_rows
from lora_demo.chat.precision import chat_precision
from lora_demo.chat.registry import AdapterRegistry, adapter_key, run_template
from lora_demo.chat.request import GenSettings, SideResult, flatten_content, split_thinking
from lora_demo.chat.stream import _drain, _PairStreamer, _stats
from lora_demo.data.templates import prompt_ids
from lora_demo.errors import InputError
from lora_demo.i18n import msg
from lora_demo.models import load_model, resolve_model

log = logging.getLogger(__name__)

# Re-exported: callers (the UI, the CLI, tests, benches) take these from the engine.
__all__ = [
    "ChatEngine",
    "CompareRow",
    "GenSettings",
    "SideResult",
    "chat_precision",
    "compare_on_rows",
    "flatten_content",
    "run_template",
    "split_thinking",
    "_PairStreamer",
    "_drain",
]


class ChatEngine:
    """Holds one loaded base model and the adapters attached to it (any number, up to a budget), and generates
    batches whose rows each name their adapter (or none: the base model)."""

    def __init__(self, full_precision: bool = False):
        self.full_precision = full_precision  # decode in fp32 on a CPU even where bf16 is faster (export/parity.py)
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
        self.more_rows = threading.Event()  # set when the 4- and 8-row steps are recorded (CUDA) or need none
        self.more_rows_s = 0.0  # how long recording them took
        self._more_rows_since: float | None = None  # when the first try began (tries give up after two minutes)

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
        adapter = (
            msg("adapter `{path}`", path=str(adapter_dir))
            if adapter_dir
            else msg("no adapter (both sides are the base model)")
        )
        fmt = (self.adapters.template(adapter_dir) or self.template).get("template", "chat")
        line = msg(
            "Loaded base `{model}` with {adapter}; prompt format: {fmt}; chat runs in {precision}.",
            model=self.model_id,
            adapter=adapter,
            fmt=fmt,
            precision=self.precision,
        )
        if len(self.adapters) > 1:
            line = msg(
                "{line} {n} adapters attached to this base (each visitor's own).", line=line, n=len(self.adapters)
            )
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
        from lora_demo.chat.decode import GenerationWorker  # deferred: decode imports torch
        from lora_demo.device import detect  # deferred: device imports torch

        info = check_adapter(adapter_dir) if adapter_dir else None  # one clear message for a missing or torn adapter
        model_id = resolve_model(model_id, adapter_dir)  # 'auto': the adapter's base, else this device's default
        with self.lock:
            self.unload()
            plan = detect()
            yield msg("Loading base model `{model}` on {device}…", model=model_id, device=plan.device)
            t0 = time.perf_counter()
            dtype = plan.precision if plan.device == "cuda" else "fp32"
            # The model is loaded and converted on the generation thread, which alone computes with every core
            # (device.one_thread_outside_chat says why the caller's thread should not).
            self.worker = GenerationWorker(threads=plan.cpu_threads if plan.device == "cpu" else None)
            lm = self.worker.run(lambda: load_model(model_id, dtype=dtype, device=plan.device))
            model, tok = lm.model, lm.tokenizer
            model, self.precision = self.worker.run(lambda: chat_precision(model, plan, self.full_precision))
            if "dequantized" in self.precision:
                yield msg("Dequantized the 4-bit weights once for chat: {precision}.", precision=self.precision)
            model.eval()
            tok.padding_side = "left"
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
        from lora_demo.chat.decode import GRAPH_MODES  # deferred: decode imports torch

        self.warmup_s = self._warm_up()
        if self.decoder is not None and self.decoder.step_mode in GRAPH_MODES and self.default_mode == "rows":
            self.more_rows.clear()
            self.more_rows_s, self._more_rows_since = 0.0, None
            self.worker.submit(self._record_more_rows)  # after Load: the first answer does not wait for it
            yield msg(
                "Ready in {seconds:.1f} s (warm-up {warmup:.1f} s); the steps for 3 to 8 rows at once (the "
                "compare with more adapters, visitors sharing a batch) are recorded in the background. "
                "{status}",
                seconds=time.perf_counter() - t0,
                warmup=self.warmup_s,
                status=self.status(),
            )
            return
        self.more_rows.set()
        yield msg(
            "Ready in {seconds:.1f} s (warm-up {warmup:.1f} s). {status}",
            seconds=time.perf_counter() - t0,
            warmup=self.warmup_s,
            status=self.status(),
        )

    def _record_more_rows(self) -> None:
        """CUDA, a job on the generation thread queued after Load: record the steps of the larger batch sizes (4
        and 8 rows: a batch is padded to one of CUDA_SIZES), one at a time under the model's lock, so a visitor's
        first 3- to 8-row answer records nothing. Requests come first: with one waiting, this job queues itself
        again behind it, so a request waits for one recording at most; so does a busy lock (an attach, a Load
        still being read), for two minutes, after which the sizes are left to their first answer, as before."""
        t0, again = time.perf_counter(), False
        self._more_rows_since = self._more_rows_since or t0
        try:
            for rows in CUDA_SIZES[2:]:
                if rows in self.decoders and self.decoders[rows]._graph is not None:
                    continue
                busy = bool(self.batcher.waiting) or not self.lock.acquire(timeout=1)
                if busy:
                    time.sleep(0.05)  # (a request's serve job is queued ahead of this one)
                    again = t0 - self._more_rows_since < 120
                    if again:
                        self.worker.submit(self._record_more_rows)
                    return
                try:
                    if self.model is None or self.default_mode != "rows":
                        return
                    warm = [self.tokenizer("Hello").input_ids or [self.tokenizer.pad_token_id]] * rows
                    self._decode(warm, GenSettings(max_new_tokens=4, min_new_tokens=4, greedy=True))
                finally:
                    self.lock.release()
        except Exception as e:  # noqa: BLE001 - the larger sizes then record at their first answer
            log.warning("chat: recording the larger batch sizes failed (%s: %s)", type(e).__name__, str(e)[:300])
        finally:
            self.more_rows_s += time.perf_counter() - t0
            if not again:
                self._more_rows_since = None
                self.more_rows.set()

    def attach(self, adapter_dir: str) -> Iterator[str]:
        """Make an adapter folder available to requests on this base (yields a stage line while it attaches; an
        attached one is only marked as recently used). Checked first: a torn adapter or one of another base is one
        clear message."""

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
        yield msg(
            "Attached in {seconds:.1f} s. {status}",
            seconds=time.perf_counter() - t0,
            status=self.status(adapter_key(adapter_dir)),
        )

    def _attach_locked(self, adapter_dir: str, info) -> None:
        """Attach (the lock held): check the adapter against the base's modules, load it into the PeftModel, detach
        the least recently used beyond the budget, and rebuild the row masks (a new stack of factors)."""

        check_adapter_fits(info, self.module_shapes or {}, self.model_id or "")
        self.model, detached = self.adapters.attach(self.model, adapter_dir, on_cuda=self.device == "cuda")
        if self.adapter_dir is not None and adapter_key(self.adapter_dir) in detached:
            self.adapter_dir = None
        self._rebuild_rows()

    def _rebuild_rows(self) -> None:
        """The per-row masks over every attached adapter (None when one has layers they cannot serve: then PEFT's
        mixed batch serves), and decoders that record their step again with the new factors."""
        from lora_demo.chat.rowscale import RowScale, lora_linear_layers  # deferred: imports torch

        if self.row_scale is not None and self.row_scale.refresh(self.model):
            return  # the same tensors refilled in place: recorded and compiled steps stay valid
        if self.row_scale is not None:
            self.row_scale.remove()
        # CUDA: rank columns in multiples of 64 per layer, so most attaches refill in place (no new CUDA graph or
        # compile); CPU: exact sizes (nothing is recorded there, and padding columns would cost time).
        bucket = env.chat_rank_bucket() or (64 if self.device == "cuda" else 1)
        self.row_scale = RowScale(self.model, rows=2, bucket=bucket) if lora_linear_layers(self.model) else None
        for decoder in self.decoders.values():
            decoder.forget_step()

    def _prepare_decoding(self) -> None:
        """The base model's decoders (made per batch size when first asked)."""
        self.decoders = {}
        self._decoder(1)

    def _decoder(self, rows: int):
        from lora_demo.chat.decode import PairDecoder  # deferred: decode imports torch

        if rows not in self.decoders:
            inner = self.model.base_model.model if hasattr(self.model, "peft_config") else self.model
            compiled = self.device == "cuda" if self.compile is None else self.compile
            threads = self.worker.threads if self.worker is not None else None
            self.decoders[rows] = PairDecoder(
                inner, rows, compiled=compiled, max_cache_len=self.max_cache_len, cpu_threads=threads
            )
        return self.decoders[rows]

    def _warm_up(self) -> float:
        """Short generations through the default path, on the generation thread. CUDA: records the decoding step's
        CUDA graph (compiling it first in the compile modes; graph trees record on the second call). CPU: a few
        answers, over which the decoder's ThreadTuner measures one thread and the plan's threads (it keeps
        measuring while people chat: the better count depends on the model, the machine and its load)."""
        t0 = time.perf_counter()
        if self.decoder is None or self.default_mode != "rows":
            return 0.0
        # A prompt of a typical length: the eager prefill's kernels for such shapes get warmed too (after a 'Hi'
        # warm-up alone, the first real answer on a GPU still waited for kernels to load before its first tokens).
        warm = " ".join(["Explain how low-rank adapters change a model's answers."] * 8)
        rows = [self.tokenizer(warm).input_ids[:96] or [self.tokenizer.pad_token_id]] * self.decoder.rows

        def gen(n):
            return lambda: self._decode(rows, GenSettings(max_new_tokens=n, min_new_tokens=n, greedy=True))

        if self.decoder.compiled:
            for _ in range(2):
                self.worker.run(gen(4))
            return time.perf_counter() - t0
        self.worker.run(gen(2))
        for _ in range(3):  # the decoder's ThreadTuner measures one thread and the plan's threads
            self.worker.run(gen(8))
        return time.perf_counter() - t0

    def unload(self) -> None:
        self.more_rows.set()  # (a background recording still queued will find no model and stop)
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
            with self.lock:  # not under an answer or the background recording of the larger batch sizes
                self.unload()

    def stop(self) -> None:
        self.stop_event.set()

    # --- prompting ---
    def prompt_ids(
        self,
        source: list[dict] | dict,
        system: str = "",
        enable_thinking: bool | None = None,
        adapter_dir: str | None = None,
    ) -> list[int]:
        """Token ids of the prompt for one side: a history ending with the user's turn, or a dataset row (prompted
        exactly as training prompted it: lora_demo.data.templates.prompt_ids, the masked part of build_example), in
        the prompt format of `adapter_dir`'s run (None: load()'s)."""

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
        yield from self.generate(
            [base_history, tuned_history],
            [None, adapter_dir],
            system,
            settings,
            enable_thinking,
            mode,
            every_s,
            prompt_adapter=adapter_dir,
        )

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
            raise InputError(
                msg("This adapter has layers the per-row scale cannot serve (e.g. DoRA): use mode 'batch'.")
            )
        return mode

    def _names_locked(self, adapters: list) -> list[str | None]:
        """Each row's PEFT adapter name; an adapter detached meanwhile (another visitor's attach pushed it out of
        the budget) is attached again here, the lock held."""

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

    def _decode(
        self,
        rows: list[list[int]],
        settings: GenSettings,
        sink=None,
        names: list | None = None,
        scales: list | None = None,
        should_stop=None,
        seeds: list | None = None,
    ):
        """The default path, on the generation thread: one batch, each row's LoRA masked to its adapter (None: the
        base row) at its scale (default: the slider's) and sampled with its seed (default: the settings')
        from its own generator. names=None: the base row and load()'s adapter."""
        if names is None:
            names = [None] + ([self.adapters.name(self.adapter_dir)] if self.adapter_dir else [])
            names = names[: len(rows)] + [names[-1]] * (len(rows) - len(names))
        scales = scales or [settings.adapter_scale] * len(rows)
        values = [(n, s if n else 0.0) for n, s in zip(names, scales, strict=True)]
        # The row masks whenever adapters are attached, also for a batch of base rows only: PEFT's own forward would
        # apply the active adapter to them (and a CUDA step recorded without the masks would ignore them later).
        if self.row_scale is not None:
            scaled = self.row_scale.on(values)
        elif len(self.adapters) and not any(names):
            scaled = self.model.disable_adapter()
        else:
            scaled = contextlib.nullcontext()
        with scaled:
            return self._decoder(len(rows)).generate(
                rows,
                self.tokenizer.pad_token_id,
                set(self._eos_ids()),
                settings.max_new_tokens,
                min_new_tokens=settings.min_new_tokens,
                greedy=settings.greedy,
                temperature=settings.temperature,
                top_p=settings.top_p,
                top_k=settings.top_k,
                repetition_penalty=settings.repetition_penalty,
                seed=seeds or settings.seed,
                sink=sink,
                should_stop=should_stop or self.stop_event.is_set,
            )

    def _rows(self, rows: list[list[int]], adapters: list, settings: GenSettings, every_s: float, stop=None):
        """A request of the default path: queued for the next batch (other requests with the same settings join
        it), streamed from its own rows; leaving early (a closed page) stops it and waits for its batch to let go."""

        if self.worker is None:
            from lora_demo.chat.decode import GenerationWorker  # deferred: decode imports torch

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

        # Sampling is done by decode.SeededSampling (each row from its own seeded generator, added per generate()
        # in _stream), so generate() itself runs greedy over the one token it leaves.
        kw = dict(
            max_new_tokens=settings.max_new_tokens,
            do_sample=False,
            eos_token_id=self._eos_ids(),
            pad_token_id=self.tokenizer.pad_token_id,
            repetition_penalty=settings.repetition_penalty,
            stopping_criteria=StoppingCriteriaList([_Stop()]),
            temperature=None,
            top_p=None,
            top_k=None,
        )
        if settings.min_new_tokens:
            kw["min_new_tokens"] = settings.min_new_tokens
        return kw

    def _batched(self, rows: list[list[int]], names: list, settings: GenSettings, every_s: float = 0.0):
        """PEFT's mixed batch: one generate() with adapter_names (a base row: LoRA bypassed)."""
        kw = self._gen_kwargs(settings)
        if any(names) or len(self.adapters):  # base rows bypass the LoRA (also when no row names an adapter)
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

    def _stream(
        self,
        rows: list[list[int]],
        kw: dict,
        results: list[SideResult],
        settings: GenSettings,
        base_only=False,
        every_s: float = 0.0,
    ) -> Iterator[None]:
        """One transformers generate() over left-padded rows, on the generation thread."""
        import torch

        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=self.model.device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=self.model.device)

        def job(streamer):
            from transformers import LogitsProcessorList

            from lora_demo.chat.decode import SeededSampling  # deferred: decode imports torch

            extra = {}
            if not settings.greedy:  # fresh generators for each generate(): every row starts from the seed
                extra["logits_processor"] = LogitsProcessorList(
                    [SeededSampling(settings.seed, settings.temperature, settings.top_p, settings.top_k)]
                )
            off = self.model.disable_adapter() if base_only and len(self.adapters) else contextlib.nullcontext()
            with torch.inference_mode(), off, self._scaled(settings.adapter_scale):
                self.model.generate(input_ids=ids, attention_mask=mask, streamer=streamer, **kw, **extra)

        yield from self._run_streaming(len(rows), job, results, every_s, prompt_first=True)

    def _run_streaming(
        self, n_rows: int, job, results: list[SideResult], every_s: float, prompt_first: bool = False
    ) -> Iterator[None]:
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
            from lora_demo.chat.decode import GenerationWorker  # deferred: decode imports torch

            self.worker = GenerationWorker()
        t0 = time.perf_counter()
        job_done = self.worker.submit(work)
        finished = False
        try:
            yield from _drain(streamer, results, t0, set(self._eos_ids()), self.tokenizer.decode, every_s)
            finished = True
        finally:
            if not finished:
                self.stop_event.set()  # honoured at the next token
            futures.wait([job_done])
        job_done.result()  # raises what the generation raised

    def _scaled(self, scale: float):
        if not len(self.adapters) or scale == 1.0:
            return contextlib.nullcontext()
        from peft.helpers import rescale_adapter_scale

        return rescale_adapter_scale(self.model, scale)

    def answer_pair(
        self,
        prompt: str | dict,
        settings: GenSettings | None = None,
        system: str = "",
        mode: str | None = None,
        adapter_dir: str | None = None,
    ) -> dict:
        """Both answers to one prompt, complete (for the CLI, the comparison table and tests). A dict prompt is a
        dataset row, prompted exactly as training prompted it. adapter_dir: the tuned side (None: load()'s)."""
        source = prompt if isinstance(prompt, dict) else [{"role": "user", "content": prompt}]
        results = None
        for results in self.generate_pair(source, None, system, settings, mode=mode, adapter_dir=adapter_dir):  # noqa: B007
            pass
        base, tuned = results
        return {"base": base.text, "tuned": tuned.text, "base_stats": _stats(base), "tuned_stats": _stats(tuned)}


def _as_list(x) -> list:
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple)) else [x]
