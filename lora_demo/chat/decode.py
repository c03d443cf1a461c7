"""The chat's decoding loop: both rows of one batch, one token each per step, straight on the model.

- The prompt (prefill) runs eagerly, whatever its length; each row keeps its own positions (left padding is
  masked out and does not shift positions), so a row is what the model computes for that prompt alone. On CUDA the
  prompt is left-padded to a multiple of 64 tokens, and the first call also runs the prefill once at each common
  width (64-512 tokens): a prefill of a width never seen before waits for new kernels to load, and this way no
  visitor's answer is the one that waits.
- Decoding steps have fixed shapes: one token a row, the positions, a 4-D boolean mask over the whole cache. On
  CUDA the cache is one `StaticCache` made once (reset per call), and the step is replayed from a CUDA graph
  (`step_mode`, env `LORA_LAB_CHAT_STEP`; README's Performance section has each mode's tok/s and warm-up):
  - "layers-graph" (the default): the step recorded once into one `torch.cuda.CUDAGraph` over static input
    buffers (token, positions, the mask's validity row, the cache), with each decoder layer compiled by inductor
    (fused kernels) for the recording. Each step is then one replay, so the CPU's per-step work no longer bounds
    decoding; the layers' graphs are alike, so inductor's code for the first is reused by the others (its FX
    graph cache) and the compile takes a fraction of a whole-model one. Prompts (prefill) stay eager. The
    fastest mode, paid for by a compile at Load (shorter once inductor's on-disk cache is filled);
  - "graph": the same with the eager layers: nothing compiled, so it is ready almost at once but each step runs
    more, unfused kernels; also the fallback when the layers cannot be compiled or recorded;
  - "compile-graph": the same over the whole model compiled by inductor: slower than compiling per layer and a
    longer warm-up; kept for comparison;
  - "compile": transformers' `CompileConfig` (inductor with CUDA graph trees), the earlier default: its GPU idles
    between replays while Python and the graph trees' bookkeeping run, and it warms up longest; for comparison.
  Prompt lengths, turns, sampling settings and the adapter-scale slider change no shape and no object the graph
  holds, so nothing is recorded or compiled again. On the CPU the step runs eagerly on a `DynamicCache`
  (compiling it was measured no faster there, after a long compile); `compiled=True` there forces "compile".
- Sampling follows `generate`: repetition penalty, temperature, top-k, top-p (transformers' own processors),
  then a draw, EOS suppressed until `min_new_tokens`. Each row draws from its own counter-based stream of random
  numbers keyed by its request's seed (`RowDraws`, all rows in one batched computation), so a row's answer
  depends on the seed and its own logits only: the adapter-scale-0 row reproduces the base row token for token,
  and a row answers the same whatever shares its batch.
- Tokens go to a `sink(new_tokens_per_row)` callback in chunks: on CUDA the GPU is asked for them every few
  steps only, so the CPU keeps queueing steps ahead of the GPU; on the CPU every 0.1 s, so the reader (the page's
  stream) wakes ten times a second instead of once a token.

`GenerationWorker` is the one long-lived thread that runs every decoding call of a loaded model (CUDA graphs keep
their state per thread: capture and replay must happen on the same thread).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future

import torch

from lora_demo import env

log = logging.getLogger(__name__)


def _cudagraph_thread_state() -> None:
    """Give this thread the thread-local state CUDA graph trees keep their graphs in (the generation thread calls
    this once, on CUDA).

    Needed on torch 2.11, which the lent GPU machines run (their preinstalled CUDA build; requirements.txt pins
    2.13): there torch._inductor.cudagraph_trees makes that state only in the thread that imports it (autograd
    copies it to its own threads), so a second model's generation thread failed its first compiled step
    (AssertionError in cudagraph_trees.get_obj, seen on the H200). This makes it as torch 2.11's module body does.
    It stays while those machines run 2.11. Newer torch (2.13) makes it itself at first use (get_obj calls
    `_initialize_tls`); there this makes the same call a little earlier, which changes nothing. A thread that
    already has the state (the importing one, or one autograd handed it to) is left alone."""
    try:
        from torch._inductor import cudagraph_trees as trees  # deferred: inductor is a heavy import, CUDA only
    except Exception:  # noqa: BLE001 - no inductor: nothing to prepare
        return
    local = getattr(trees, "local", None)
    if local is None or hasattr(local, "tree_manager_containers") or torch._C._is_key_in_tls("tree_manager_containers"):
        return
    init = getattr(trees, "_initialize_tls", None)
    if init is not None:  # newer torch: its own initializer
        init(local)
        return
    local.tree_manager_containers = {}  # torch 2.11: what its module body does in the importing thread
    local.tree_manager_locks = defaultdict(threading.Lock)
    torch._C._stash_obj_in_tls("tree_manager_containers", local.tree_manager_containers)
    torch._C._stash_obj_in_tls("tree_manager_locks", local.tree_manager_locks)


def use_threads(n: int) -> None:
    """Run this thread's torch ops (OpenMP and MKL) on `n` threads, leaving the count other threads take alone.

    torch.set_num_threads(n) also stores n as the count every other thread adopts at its first parallel op, so a
    generation thread's 2 would hand Gradio's next handler thread an OpenMP team of its own (and libgomp slows
    every team once they outnumber the cores: device.one_thread_outside_chat). So this thread's count is set, and
    then the stored default is put back from a short-lived thread (whose own count dies with it)."""
    torch.get_num_threads()  # torch's per-thread init first (it would reset the count at this thread's first op)
    default = _default_threads()
    torch.set_num_threads(n)
    if default != n:
        restore = threading.Thread(target=torch.set_num_threads, args=(default,), name="lora-lab-threads")
        restore.start()
        restore.join()


def _default_threads() -> int:
    """The count a thread that never set one gets (what torch stored last)."""
    box: list[int] = []
    probe = threading.Thread(target=lambda: box.append(torch.get_num_threads()), name="lora-lab-threads")
    probe.start()
    probe.join()
    return box[0]


class GenerationWorker:
    """One daemon thread that runs submitted jobs one after another, each answered through a
    `concurrent.futures.Future` (its result, or whatever it raised, BaseException included).

    The thread prepares itself once, before its first job: its torch CPU thread count (`threads`, set per thread)
    and, on CUDA, the thread-local state CUDA graph trees keep their graphs in; graphs recorded by one job replay
    in the next, since every job runs on this same thread. Not a ThreadPoolExecutor: its thread is not a daemon and
    is joined at interpreter exit after every job still queued, so a generation (or the background recording of
    the larger batch sizes) would hold up the app's exit."""

    def __init__(self, name: str = "lora-lab-generate", threads: int | None = None):
        self.threads = threads  # torch CPU threads for this thread's work (OpenMP settings are per thread)
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _prepare(self) -> None:
        """This thread's torch state, before its first job."""
        if self.threads:
            try:
                use_threads(self.threads)
            except Exception as e:  # noqa: BLE001 - decode on whatever count the thread has rather than not at all
                log.warning("chat: setting the generation thread's CPU threads failed (%s: %s)", type(e).__name__, e)
        if torch.cuda.is_available():
            _cudagraph_thread_state()

    def _loop(self) -> None:
        self._prepare()
        while (job := self._jobs.get()) is not None:
            fn, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn()
            except BaseException as e:  # noqa: BLE001 - handed to the submitter
                future.set_exception(e)
            else:
                future.set_result(result)
            job = fn = future = result = None  # an idle thread keeps no job's closure (a model) or result alive

    def submit(self, fn: Callable) -> Future:
        """Queue fn (a job may queue another: it runs after the jobs already queued); returns its Future."""
        if not self._thread.is_alive():
            raise RuntimeError("the generation thread has stopped")
        future: Future = Future()
        self._jobs.put((fn, future))
        return future

    def run(self, fn: Callable):
        """Run fn on the worker thread and wait for it: its result, or what it raised, raised here."""
        return self.submit(fn).result()

    def close(self) -> None:
        """Stop the thread after the jobs already queued (waited for up to a minute, unless called from a job)."""
        self._jobs.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=60)

    @property
    def thread(self) -> threading.Thread:
        return self._thread


# CUDA: prompts are left-padded to a multiple of this, and these widths are prefilled once at the first call.
PREFILL_MULTIPLE = 64
PREFILL_WARM = (64, 128, 256, 512)
# How a CUDA decoding step runs (see the module docstring); LORA_LAB_CHAT_STEP overrides the default.
STEP_MODES = ("graph", "layers-graph", "compile-graph", "compile")
GRAPH_MODES = ("graph", "layers-graph", "compile-graph")
DEFAULT_STEP_MODE = "layers-graph"


def step_mode_from_env(default: str = DEFAULT_STEP_MODE) -> str:
    mode = env.chat_step() or default
    if mode not in STEP_MODES:
        raise ValueError(f"LORA_LAB_CHAT_STEP={mode!r}: use one of {', '.join(STEP_MODES)}")
    return mode


class LayerCompile:
    """Each decoder layer of a *ForCausalLM compiled by inductor (dynamic=False), used only inside `on()`: the
    decoding step is recorded through them, while prompts of any length (and the held-out loss, the colouring)
    keep the eager layers. Dynamo compiles the shared forward once per layer (its guards name the layer's cache
    slots), but the layers' FX graphs are the same, so inductor compiles the first and reuses it for the others."""

    def __init__(self, model):
        body = getattr(model, getattr(model, "base_model_prefix", ""), None)
        layers = list(getattr(body, "layers", None) or [])
        if not layers:
            raise ValueError("this model has no .layers to compile one by one")
        import torch._dynamo

        limit = 8 * len(layers)  # one entry per layer, and again after a bigger cache
        for name in ("recompile_limit", "cache_size_limit"):
            if hasattr(torch._dynamo.config, name) and getattr(torch._dynamo.config, name) < limit:
                setattr(torch._dynamo.config, name, limit)
        self.thread = None  # the thread inside on(): any other thread's calls stay eager meanwhile
        for layer in layers:
            eager = layer.forward
            fast = torch.compile(eager, mode="default", dynamic=False, fullgraph=False)

            def forward(*args, _eager=eager, _fast=fast, **kwargs):
                return (_fast if self.thread == threading.get_ident() else _eager)(*args, **kwargs)

            layer.forward = forward
        self.layers = layers

    @contextlib.contextmanager
    def on(self):
        self.thread = threading.get_ident()
        try:
            yield
        finally:
            self.thread = None


class ThreadTuner:
    """CPU: how many threads the decoding steps run on, decided from their measured cost and re-decided while
    decoding, because the answer changes with the load: two threads beat one on an idle 2-core machine, while
    beside a busy process (a training run, another visitor's batch) every parallel region waits for a thread the
    kernel has parked, and a step can cost ten times more. The steps' smoothed cost is kept per thread count; a
    call starts on the cheaper, switches at its next look when the other has become cheaper, and every
    `probe_every`-th call starts on the other count, so a change in the load is seen."""

    def __init__(self, most: int, probe_every: int = 8):
        self.options = sorted({1, max(1, int(most))})
        self.cost: dict[int, float] = {}  # threads -> smoothed seconds a step
        self.probe_every, self.calls = probe_every, 0
        self.now = self.options[-1]
        self.fresh = True  # the next measurement replaces the count's cost (a probe: the old one may be stale)

    def best(self) -> int:
        unknown = [t for t in self.options if t not in self.cost]
        return unknown[0] if unknown else min(self.options, key=self.cost.__getitem__)

    def start(self) -> None:
        """A call begins: the cheaper count (or, now and then, the other one), set on this thread."""
        self.calls += 1
        pick = self.best()
        if len(self.options) > 1 and len(self.cost) == len(self.options) and self.calls % self.probe_every == 0:
            pick = next(t for t in self.options if t != pick)
            self.fresh = True
        self._use(pick)

    def record(self, steps: int, seconds: float) -> None:
        """`steps` steps took `seconds` on the count in use; switch when the other is now cheaper."""
        if steps <= 0:
            return
        cost, old = seconds / steps, self.cost.get(self.now)
        self.cost[self.now] = cost if old is None or self.fresh else 0.5 * old + 0.5 * cost
        self.fresh = False
        if self.best() != self.now:
            self._use(self.best())

    def _use(self, threads: int) -> None:
        if torch.get_num_threads() != threads:
            use_threads(threads)
        self.now = threads


class PairDecoder:
    """Decodes a batch of rows with a fixed batch size on one model (the transformers model inside PEFT's)."""

    def __init__(
        self,
        model,
        rows: int,
        compiled: bool,
        max_cache_len: int = 1280,
        chunk: int = 8,
        step_mode: str | None = None,
        cpu_threads: int | None = None,
    ):
        self.model = model  # the *ForCausalLM (PEFT's LoRA layers inside it are called directly)
        self.rows = rows
        self.compiled = compiled  # fixed-shape steps on a static cache (CUDA; forced on the CPU by tests)
        self.device = next(model.parameters()).device
        # "eager" (the CPU default), else one of STEP_MODES; CUDA graphs need CUDA ("compile" elsewhere).
        if not compiled:
            self.step_mode = "eager"
        elif self.device.type != "cuda":
            self.step_mode = "compile"
        else:
            self.step_mode = step_mode or step_mode_from_env()
        self._graph = None  # graph modes: the recorded step, its static inputs and output
        self._layers = None  # layers-graph: the compiled decoder layers (used while recording only)
        self._valid = None  # [rows, max_cache_len]: which cache slots hold real tokens (static in graph modes)
        self.max_cache_len = max_cache_len
        self.chunk = chunk  # CUDA: steps between looks at the tokens (each look waits for the GPU)
        self.flush_s = 0.1  # CPU: seconds between hand-overs (each wakes the reader, which competes for 2 cores)
        # CPU, eager steps: the thread count is re-decided from the steps' cost (None: left as the thread has it)
        self.threads = ThreadTuner(cpu_threads) if cpu_threads and self.device.type == "cpu" and not compiled else None
        self.cache = None
        self._step = None
        self.eager_mask = model.config._attn_implementation == "eager"
        cuda_compiled = compiled and self.device.type == "cuda"
        self.prefill_multiple = PREFILL_MULTIPLE if cuda_compiled else 1
        self.prefills_warm = not cuda_compiled  # the common prefill widths have run once (CUDA)

    def forget_step(self) -> None:
        """The model's LoRA factors changed (an adapter attached or detached): the next call records (and in the
        compiled modes compiles) its step again; the eager step has nothing to forget."""
        self._step = self._graph = self._layers = None

    # --- the cache and the compiled step ---
    def _ensure_cache(self, need: int):
        from transformers import DynamicCache, StaticCache

        if not self.compiled:
            self.cache = DynamicCache(config=self.model.config)
            return
        if self.cache is None or need > self.max_cache_len:
            if need > self.max_cache_len:  # a longer answer than the cache holds: a bigger cache, compiled once more
                self.max_cache_len = -(-need // 1024) * 1024
            self.cache = StaticCache(config=self.model.config, max_cache_len=self.max_cache_len)
            self._valid = torch.zeros((self.rows, self.max_cache_len), dtype=torch.bool, device=self.device)
            self._step = self._graph = None
        else:
            self.cache.reset()
        if self._step is None:
            if self.step_mode == "graph":
                self._step = self.model
            elif self.step_mode == "layers-graph":
                self._step = self.model
                if self._layers is None:
                    try:
                        self._layers = LayerCompile(self.model)
                    except ValueError as e:  # no decoder layers to compile one by one: the eager step
                        log.warning("chat: %s; decoding with the eager step recorded as a CUDA graph", e)
                        self.step_mode = "graph"
            elif self.step_mode == "compile-graph":
                self._step = torch.compile(self.model.__call__, mode="default", dynamic=False, fullgraph=False)
            else:
                from transformers import CompileConfig

                mode = "reduce-overhead" if self.device.type == "cuda" else "default"
                self._step = self.model.get_compiled_call(CompileConfig(mode=mode, dynamic=False, fullgraph=False))

    def _graph_forward(self) -> torch.Tensor:
        """The decoding step over the static inputs (what a graph mode records): the last position's logits."""
        g = self._graph
        mask = self._valid.view(self.rows, 1, 1, self.max_cache_len)
        if self.eager_mask:
            dtype = self.model.dtype
            mask = torch.zeros(mask.shape, dtype=dtype, device=self.device).masked_fill(~mask, torch.finfo(dtype).min)
        out = self._step(
            input_ids=g["tok"], attention_mask=mask, position_ids=g["pos"], past_key_values=self.cache, use_cache=True
        )
        return out.logits[:, -1, :]

    def _record(self) -> None:
        """Record the decoding step into one CUDA graph: a few eager runs on a side stream first (cuBLAS and, for
        compile-graph, inductor's compile), then the capture; the cache they wrote is emptied afterwards. The
        capture is thread-local, so other threads' CUDA work (the app's other tabs) cannot break it."""
        n, dev = self.rows, self.device
        self._graph = {
            "tok": torch.zeros((n, 1), dtype=torch.long, device=dev),
            "pos": torch.zeros((n, 1), dtype=torch.long, device=dev),
        }
        self._valid.zero_()
        self._valid[:, 0] = True
        side = torch.cuda.Stream(dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        compiled = self._layers.on() if self._layers is not None else contextlib.nullcontext()
        with compiled:
            with torch.cuda.stream(side):
                for _ in range(3):
                    self._graph_forward()
            torch.cuda.current_stream(dev).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                self._graph["out"] = self._graph_forward()
        self._graph["graph"] = graph
        torch.cuda.synchronize(dev)
        self.cache.reset()
        self._valid.zero_()

    def _mask(self, valid: torch.Tensor, q_len: int, kv_len: int, start: int) -> torch.Tensor:
        """[rows, 1, q_len, kv_len]: query i (at cache slot start+i) sees key j when j <= start+i and j holds a
        real token; a padding query sees itself (no all-masked row, which would give NaN)."""
        j = torch.arange(kv_len, device=self.device)
        i = torch.arange(q_len, device=self.device).unsqueeze(1) + start
        allowed = (j <= i).unsqueeze(0) & valid[:, :kv_len].unsqueeze(1)
        allowed = allowed | (j == i).unsqueeze(0)
        allowed = allowed.unsqueeze(1)
        if self.eager_mask:
            dtype = self.model.dtype
            return torch.zeros(allowed.shape, dtype=dtype, device=self.device).masked_fill(
                ~allowed, torch.finfo(dtype).min
            )
        return allowed

    def _step_mask(self, valid: torch.Tensor, cur: int, kv_cap: int, unpadded: bool) -> torch.Tensor | None:
        """A decoding step's attention mask: None for rows of one length (the eager CPU step: attention without a
        mask takes its causal fast path), else which cache slots each row sees."""
        if unpadded:
            return None
        n = valid.shape[0]
        mask = valid.view(n, 1, 1, kv_cap) if self.compiled else valid[:, :cur].view(n, 1, 1, cur)
        return self._mask(valid, 1, mask.shape[-1], cur - 1) if self.eager_mask else mask

    def _prefill(self, ids: torch.Tensor, mask: torch.Tensor | None, pos: torch.Tensor) -> torch.Tensor:
        """The prompt through the model; the logits of its last position. The head gets that position as a
        contiguous [rows, 1, hidden] tensor: given the strided slice (logits_to_keep=1), the CPU matmul copied
        the whole bf16 head before multiplying."""
        body = getattr(self.model, getattr(self.model, "base_model_prefix", ""), None)
        head = self.model.get_output_embeddings()
        if body is None or head is None or getattr(self.model.config, "final_logit_softcapping", None):
            out = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=pos,
                past_key_values=self.cache,
                use_cache=True,
                logits_to_keep=1,
            )
            return out.logits[:, -1, :]
        hidden = body(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=self.cache, use_cache=True)
        return head(hidden.last_hidden_state[:, -1:, :].contiguous())[:, -1, :]

    def _warm_prefills(self, pad_id: int) -> None:
        """Run the prefill once at each width of PREFILL_WARM (rows partly padded, as real prompts are), so a
        user's first prompt of such a width finds its kernels loaded; the cache is emptied afterwards."""
        dev = self.device
        for w in PREFILL_WARM:
            if w >= self.max_cache_len:
                break
            ids = torch.full((self.rows, w), pad_id, dtype=torch.long, device=dev)
            valid = torch.zeros((self.rows, self.max_cache_len), dtype=torch.bool, device=dev)
            valid[:, w // 2 : w] = True
            valid[0, :w] = True
            pos = (valid[:, :w].long().cumsum(-1) - 1).clamp(min=0)
            self._prefill(ids, self._mask(valid, w, self.max_cache_len, 0), pos)
            self.cache.reset()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        self.prefills_warm = True

    def _width(self, longest: int, max_new_tokens: int) -> int:
        """The prefill's width: the longest prompt, left-padded to a multiple of prefill_multiple when the cache
        holds that (or must grow anyway)."""
        padded = -(-longest // self.prefill_multiple) * self.prefill_multiple
        fits = padded + max_new_tokens <= self.max_cache_len or longest + max_new_tokens > self.max_cache_len
        return padded if fits else longest

    # --- one call ---
    @torch.inference_mode()
    def generate(
        self,
        rows: list[list[int]],
        pad_id: int,
        eos_ids: set[int],
        max_new_tokens: int,
        min_new_tokens: int = 0,
        greedy: bool = True,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        repetition_penalty: float = 1.0,
        seed: int | list[int] = 0,
        sink: Callable[[list[list[int]]], None] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> list[list[int]]:
        """New tokens of each row (up to its EOS, which is included). `sink` gets each chunk as it comes. seed: one
        for every row, or each row's."""
        if len(rows) != self.rows:
            raise ValueError(f"this decoder serves {self.rows} rows, not {len(rows)}")
        width = self._width(max(len(r) for r in rows), max_new_tokens)
        self._ensure_cache(width + max_new_tokens)
        if not self.prefills_warm:
            self._warm_prefills(pad_id)
        if self.step_mode in GRAPH_MODES and self._graph is None:
            self._record_or_fall_back()
        ids, valid, pos = self._inputs(rows, pad_id, width, width + max_new_tokens)
        if self.threads is not None:
            self.threads.start()
        pick = _Sampler(ids, eos_ids, min_new_tokens, greedy, temperature, top_p, top_k, repetition_penalty, seed)
        out = _Flusher(ids, eos_ids, width, sink)
        kv_len = self.max_cache_len if self.compiled else width
        # The eager step (the CPU's): rows of one length (the base/tuned pair asks one prompt) need no mask, and
        # attention without one takes its causal fast path (2.5x cheaper a call on the CPU); padding keeps the mask.
        unpadded = not self.compiled and bool(valid[:, :width].all())
        logits = self._prefill(ids[:, :width], None if unpadded else self._mask(valid, width, kv_len, 0), pos)
        tok = pick(logits, width, 0)
        del logits
        ids[:, width] = tok
        if out.flush(width + 1) or max_new_tokens == 1:
            return out.kept
        return self._decode_steps(
            ids, valid, tok, pos[:, -1:] + 1, width, max_new_tokens, pick, out, pad_id, eos_ids, should_stop, unpadded
        )

    def _record_or_fall_back(self) -> None:
        """Record the graph step; a model inductor cannot compile still decodes, its eager step recorded."""
        try:
            self._record()
        except Exception as e:  # noqa: BLE001
            if self.step_mode == "graph":
                raise
            log.warning(
                "chat: recording the %s step failed (%s: %s); recording the eager step instead",
                self.step_mode,
                type(e).__name__,
                str(e)[:300],
            )
            self.step_mode, self._layers, self._step, self._graph = "graph", None, self.model, None
            torch.cuda.synchronize(self.device)
            self.cache.reset()
            self._record()

    def _inputs(self, rows: list[list[int]], pad_id: int, width: int, total: int):
        """The left-padded ids (room for the answers), which cache slots hold real tokens, and the positions."""
        n, dev = len(rows), self.device
        ids = torch.full((n, total), pad_id, dtype=torch.long, device=dev)
        if self.compiled:
            valid = self._valid
            valid.zero_()
        else:
            valid = torch.zeros((n, total), dtype=torch.bool, device=dev)
        for k, r in enumerate(rows):
            ids[k, width - len(r) : width] = torch.tensor(r, dtype=torch.long)
            valid[k, width - len(r) : width] = True
        return ids, valid, (valid[:, :width].long().cumsum(-1) - 1).clamp(min=0)

    def _loop_constants(self, ids, tok, eos_ids: set[int]) -> tuple:
        """What the decoding loop reads at every step, set up once before it: (rows, the EOS ids as a sorted list
        and as a tensor, which rows are done after the first token, the mask's width, the step's function, whether
        on CUDA, whether the step replays a recorded graph)."""
        dev = self.device
        eos_list = sorted(eos_ids)
        eos_t = torch.tensor(eos_list, dtype=torch.long, device=dev)
        done = torch.isin(tok, eos_t)
        kv_cap = self.max_cache_len if self.compiled else ids.shape[1]
        step_fn = self._step if self.compiled else self.model
        cuda, graphed = dev.type == "cuda", self.step_mode in GRAPH_MODES
        return ids.shape[0], eos_list, eos_t, done, kv_cap, step_fn, cuda, graphed

    def _decode_steps(
        self,
        ids,
        valid,
        tok,
        next_pos,
        width: int,
        max_new_tokens: int,
        pick,
        out,
        pad_id: int,
        eos_ids: set[int],
        should_stop,
        unpadded: bool = False,
    ) -> list[list[int]]:
        """The decoding loop after the prefill: one token a row a step, handed over in chunks (CUDA: every `chunk`
        steps, each look waits for the GPU; CPU: every flush_s), until every row's EOS, max_new_tokens or a stop."""
        n, eos_list, eos_t, done, kv_cap, step_fn, cuda, graphed = self._loop_constants(ids, tok, eos_ids)
        last_flush, last_step = time.perf_counter(), 0
        for step in range(1, max_new_tokens):
            cur = width + step  # tokens in ids so far; the newest is at cur - 1
            valid[:, cur - 1] = True
            if graphed:  # (the recorded step reads `valid` itself)
                g = self._graph
                g["tok"].copy_(tok.view(n, 1))
                g["pos"].copy_(next_pos)
                g["graph"].replay()
                tok = pick(g["out"], cur, step)
            else:
                mask = self._step_mask(valid, cur, kv_cap, unpadded)
                if cuda and self.compiled:
                    torch.compiler.cudagraph_mark_step_begin()
                logits = step_fn(
                    input_ids=tok.view(n, 1),
                    attention_mask=mask,
                    position_ids=next_pos,
                    past_key_values=self.cache,
                    use_cache=True,
                ).logits
                tok = pick(logits[:, -1, :], cur, step)
                del logits
            if eos_list:  # a row past its EOS keeps feeding padding (as generate does)
                tok = torch.where(done, torch.full_like(tok, pad_id), tok)
                done |= torch.isin(tok, eos_t)
            ids[:, cur] = tok
            next_pos = next_pos + 1
            if step == max_new_tokens - 1:
                if self.threads is not None:
                    self.threads.record(step - last_step, time.perf_counter() - last_flush)
                out.flush(cur + 1)
                return out.kept
            look = (
                (step + 1) % self.chunk == 0
                if cuda
                else (bool(done.all()) or time.perf_counter() - last_flush >= self.flush_s)
            )
            if look:
                now = time.perf_counter()
                if self.threads is not None:
                    self.threads.record(step - last_step, now - last_flush)
                last_flush, last_step = now, step
                if out.flush(cur + 1):
                    return out.kept
            if should_stop():
                out.flush(cur + 1)
                return out.kept
        return out.kept


def sampling_warpers(temperature: float, top_p: float, top_k: int) -> list:
    """transformers' temperature, top-k and top-p processors, in generate()'s order."""
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    out = []
    if temperature != 1.0:
        out.append(TemperatureLogitsWarper(temperature))
    if top_k:
        out.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        out.append(TopPLogitsWarper(top_p))
    return out


def _as_int64(u: int) -> int:
    """An unsigned 64-bit constant as the int64 with the same bits (torch has no uint64 arithmetic)."""
    return u - (1 << 64) if u >= 1 << 63 else u


_GOLDEN, _MIX1, _MIX2 = (_as_int64(c) for c in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB))


def _shr(z: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 bits (torch's >> is arithmetic: it copies the sign bit)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def splitmix64(z: torch.Tensor) -> torch.Tensor:
    """SplitMix64's output function on int64 tensors (wrapping multiplication), elementwise: consecutive inputs
    give independent-looking 64-bit outputs (Steele, Lea and Flood, 2014)."""
    z = z + _GOLDEN
    z = (z ^ _shr(z, 30)) * _MIX1
    z = (z ^ _shr(z, 27)) * _MIX2
    return z ^ _shr(z, 31)


class RowDraws:
    """Each row's token from its own stream of random numbers, all rows in one batched computation.

    Draw n of a row with seed s gives token i the uniform number u = hash(hash(s) + n * vocab + i) (SplitMix64,
    counter-based, as Philox is) and takes argmax(p_i / -log u_i): the exponential race, which picks token i with
    probability p_i exactly. So row k's answer depends on its seed and its own probabilities alone, never on which
    other rows share the batch or where it sits, as with one seeded torch.Generator per row; but where those
    needed one torch.multinomial per row a step, this is a dozen elementwise kernels for the whole batch, the same
    count for 2 rows or 8 (README's chat figures: sampling against greedy)."""

    def __init__(self, seeds: list[int], device):
        keys = torch.tensor([_as_int64(int(s) % (1 << 64)) for s in seeds], dtype=torch.int64, device=device)
        self.keys = splitmix64(keys).view(-1, 1)  # [rows, 1]: each row's stream
        self.n = 0  # draws so far (every row draws once a step)
        self._ids: torch.Tensor | None = None

    def uniform(self, vocab: int) -> torch.Tensor:
        """[rows, vocab] float32 in (0, 1): this draw's numbers, then the counter moves on."""
        if self._ids is None or self._ids.numel() != vocab:
            self._ids = torch.arange(vocab, dtype=torch.int64, device=self.keys.device)
        z = splitmix64(self.keys + (self.n * vocab) + self._ids)
        self.n += 1
        # the top 23 bits: (k + 0.5) / 2^23 is exact in float32, so u is never 0 or 1 (with 24 bits the largest
        # rounded to 1.0: -log u = 0, and a token of probability 0 won the race)
        return (_shr(z, 41).float() + 0.5) * (1.0 / (1 << 23))

    def __call__(self, probs: torch.Tensor) -> torch.Tensor:
        """One token a row from probs [rows, vocab]."""
        if probs.shape[0] != self.keys.shape[0]:
            raise ValueError(f"{probs.shape[0]} rows of probabilities for {self.keys.shape[0]} seeds")
        race = probs.float() / -torch.log(self.uniform(probs.shape[1]))
        return race.argmax(-1)


def row_seeds(seed: int | list[int], rows: int) -> list[int]:
    seeds = [seed] * rows if isinstance(seed, int) else list(seed)
    if len(seeds) != rows:
        raise ValueError(f"{len(seeds)} seeds for {rows} rows")
    return seeds


class SeededSampling:
    """A logits processor for transformers' generate() run with do_sample=False (the 'batch' and 'sequential'
    chat modes): it applies temperature, top-k and top-p and draws each row's token from that row's own generator
    (RowDraws), leaving only that token possible, so generate()'s argmax takes it. Made anew for each generate()."""

    def __init__(self, seed: int | list[int], temperature: float, top_p: float, top_k: int):
        self.seed, self.warpers, self.draws = seed, sampling_warpers(temperature, top_p, top_k), None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.draws is None:
            self.draws = RowDraws(row_seeds(self.seed, scores.shape[0]), scores.device)
        for p in self.warpers:
            scores = p(input_ids, scores)
        tok = self.draws(torch.softmax(scores.float(), dim=-1))
        return torch.full_like(scores, -float("inf")).scatter_(1, tok[:, None], 0.0)


class _Sampler:
    """Picks each row's next token as transformers' generate() would: EOS forbidden before min_new_tokens, the
    repetition penalty, then (sampling) temperature, top-k and top-p, each row from its own seeded generator."""

    def __init__(
        self,
        ids,
        eos_ids: set[int],
        min_new_tokens: int,
        greedy: bool,
        temperature: float,
        top_p: float,
        top_k: int,
        repetition_penalty: float,
        seed: int | list[int],
    ):
        from transformers import RepetitionPenaltyLogitsProcessor

        self.ids, self.greedy, self.min_new_tokens = ids, greedy, min_new_tokens
        self.processors = []
        if repetition_penalty != 1.0:
            self.processors.append(RepetitionPenaltyLogitsProcessor(repetition_penalty))
        if not greedy:
            self.processors += sampling_warpers(temperature, top_p, top_k)
        self.eos_list = sorted(eos_ids)
        self.eos_t = torch.tensor(self.eos_list, dtype=torch.long, device=ids.device)
        self.draws = None if greedy else RowDraws(row_seeds(seed, ids.shape[0]), ids.device)

    def __call__(self, logits: torch.Tensor, cur: int, step: int) -> torch.Tensor:
        scores = logits.float()
        if step < self.min_new_tokens and self.eos_list:  # first, as generate() does: never keep only EOS
            scores[:, self.eos_t] = -float("inf")
        for p in self.processors:
            scores = p(self.ids[:, :cur], scores)
        if self.greedy:
            return scores.argmax(-1)
        return self.draws(torch.softmax(scores, dim=-1))


class _Flusher:
    """Hands the new tokens over to the sink in chunks and keeps each row's answer up to its first EOS."""

    def __init__(self, ids, eos_ids: set[int], width: int, sink):
        self.ids, self.eos_ids, self.sink = ids, eos_ids, sink
        self.kept: list[list[int]] = [[] for _ in range(ids.shape[0])]
        self.finished = [False] * ids.shape[0]
        self.sent = width  # ids[:, :sent] have been handed over

    def flush(self, upto: int) -> bool:
        """Hand ids[:, sent:upto] over; True when every row has reached its EOS."""
        if upto <= self.sent:
            return all(self.finished)
        chunk = self.ids[:, self.sent : upto].tolist()
        self.sent = upto
        for k, toks in enumerate(chunk):
            if self.finished[k]:
                toks = []
            else:
                cut = next((i for i, t in enumerate(toks) if t in self.eos_ids), None)
                if cut is not None:
                    toks, self.finished[k] = toks[: cut + 1], True
                self.kept[k].extend(toks)
            chunk[k] = toks
        if self.sink is not None:
            self.sink(chunk)
        return all(self.finished)
