"""Side-by-side chat: the base model and the adapted model answer the same prompt, streaming, from ONE model.

One PEFT model serves both sides. By default both rows go through one batched `generate` with per-row adapters
(`adapter_names=["__base__", "default"]`): row 0 runs with every LoRA layer bypassed, row 1 with the adapter, and
both stream at once. Nothing is toggled on the model, so adapter state cannot leak from one side to the other
(Unsloth issue #4503: a "base" pane that was really the tuned model). The sequential mode (base inside
`disable_adapter()`, then tuned) is kept as the fallback and as the benchmark baseline.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lora_demo.errors import InputError, ModelError


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
                raise InputError(f"{name.replace('_', ' ')} must be a number from {lo} to {hi}; got {v!r}.")

        bad("max_new_tokens", 1, 4096)
        bad("temperature", 0.01, 5)
        bad("top_p", 0.01, 1)
        bad("top_k", 0, 1000)
        bad("repetition_penalty", 0.5, 3)
        bad("seed", 0, 2**32 - 1)
        bad("adapter_scale", 0, 2)
        self.max_new_tokens, self.top_k, self.seed = int(self.max_new_tokens), int(self.top_k), int(self.seed)
        return self


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


def run_template(adapter_dir: str | Path | None) -> dict:
    """The prompt format an adapter was trained with, from its run's config.yaml (Alpaca unless it says chat)."""
    if not adapter_dir:
        return {}
    cfg = Path(adapter_dir) / "config.yaml"
    if not cfg.is_file():
        return {}
    import yaml

    try:
        data = yaml.safe_load(cfg.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}
    return {k: data[k] for k in ("template", "enable_thinking", "model") if k in data}


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
        for i, row in enumerate(value.reshape(self.rows, -1).tolist()):
            self.tokens[i].extend(row)
        self.events.put(time.perf_counter())

    def end(self) -> None:
        self.events.put(None)


class ChatEngine:
    """Holds one loaded base model (+ adapter) and generates for both sides."""

    def __init__(self):
        self.lock = threading.Lock()  # generation is serialized per loaded model
        self.stop_event = threading.Event()
        self.model = None
        self.tokenizer = None
        self.model_id: str | None = None
        self.adapter_dir: str | None = None
        self.template: dict = {}
        self.device = "cpu"
        self.static_cache = False  # static KV cache (+ transformers' auto-compile of decoding), CUDA only
        self.compile_mode = "default"

    # --- loading ---
    def status(self) -> str:
        if self.model is None:
            return "No model loaded."
        adapter = f"adapter `{self.adapter_dir}`" if self.adapter_dir else "no adapter (both sides are the base model)"
        fmt = self.template.get("template", "chat")
        return f"Loaded base `{self.model_id}` with {adapter}; prompt format: {fmt}."

    def load(self, model_id: str | None, adapter_dir: str | None = None) -> Iterator[str]:
        """Load a base model and (optionally) an adapter, yielding progress lines."""
        import torch

        from lora_demo.adapters import find_adapter_files
        from lora_demo.device import detect
        from lora_demo.models import load_model, resolve_model

        tmpl = run_template(adapter_dir)
        if adapter_dir:
            find_adapter_files(adapter_dir)  # a clear message for a folder that holds no adapter
        model_id = resolve_model(model_id, adapter_dir)  # 'auto': the adapter's base, else this device's default
        with self.lock:
            self.unload()
            plan = detect()
            yield f"Loading base model `{model_id}` on {plan.device}…"
            t0 = time.perf_counter()
            dtype = plan.precision if plan.device == "cuda" else "fp32"
            lm = load_model(model_id, dtype=dtype, device=plan.device)
            model, tok = lm.model, lm.tokenizer
            if adapter_dir:
                yield f"Loading adapter `{adapter_dir}`…"
                from peft import PeftModel

                try:
                    model = PeftModel.from_pretrained(model, str(adapter_dir), adapter_name="default")
                except (ValueError, RuntimeError, KeyError) as e:
                    raise ModelError(f"The adapter does not fit `{model_id}` ({str(e).splitlines()[0][:200]}). "
                                     "Pick the base model it was trained on.") from None  # fmt: skip
            model.eval()
            tok.padding_side = "left"
            if plan.device == "cpu":
                torch.set_num_threads(plan.cpu_threads)
            self.model, self.tokenizer, self.model_id = model, tok, model_id
            self.adapter_dir = str(adapter_dir) if adapter_dir else None
            self.template = tmpl or {"template": "chat" if tok.chat_template else "alpaca"}
            self.device = plan.device
            yield f"Ready in {time.perf_counter() - t0:.1f} s. " + self.status()

    def unload(self) -> None:
        self.model = self.tokenizer = None
        self.model_id = self.adapter_dir = None
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
    def prompt_ids(self, source: list[dict] | dict, system: str = "", enable_thinking: bool | None = None) -> list[int]:
        """Token ids of the prompt for one side: a history ending with the user's turn, or a dataset row (prompted
        exactly as training prompted it: lora_demo.data.templates.prompt_ids, the masked part of build_example)."""
        from lora_demo.data.templates import prompt_ids

        think = self.template.get("enable_thinking", False) if enable_thinking is None else enable_thinking
        template = self.template.get("template", "chat")
        if isinstance(source, dict):
            if not str(source.get("instruction") or "").strip():
                raise InputError("This row has no instruction to prompt with.")
            return prompt_ids(source, self.tokenizer, template, bool(think), system or None)
        msgs = [
            {"role": m["role"], "content": flatten_content(m.get("content"))}
            for m in source
            if m.get("role") in ("user", "assistant")
        ]
        if not msgs or msgs[-1]["role"] != "user" or not msgs[-1]["content"].strip():
            raise InputError("Type a message first.")
        return prompt_ids(msgs, self.tokenizer, template, bool(think), system or None)

    # --- generation ---
    def generate_pair(
        self,
        base_history: list[dict] | dict,
        tuned_history: list[dict] | dict | None = None,
        system: str = "",
        settings: GenSettings | None = None,
        enable_thinking: bool | None = None,
        mode: str = "batch",
    ) -> Iterator[tuple[SideResult, SideResult]]:
        """Stream (base, tuned) results. Without an adapter, the tuned side stays empty.

        A history may also be a dataset row (see prompt_ids). When the consumer stops iterating (a closed page:
        GeneratorExit), the generate thread is stopped and joined before the model lock is released."""
        if self.model is None:
            raise InputError("Load a model first (Chat tab: pick a model and an adapter, then Load).")
        settings = (settings or GenSettings()).check()
        tuned_history = base_history if tuned_history is None else tuned_history
        rows = [self.prompt_ids(base_history, system, enable_thinking)]
        has_adapter = self.adapter_dir is not None
        if has_adapter:
            rows.append(self.prompt_ids(tuned_history, system, enable_thinking))
        if not self.lock.acquire(timeout=600):
            raise InputError("The model is busy with another generation; try again in a moment.")
        try:
            self.stop_event.clear()
            if has_adapter and mode == "sequential":
                yield from self._sequential(rows, settings)
            else:
                yield from self._batched(rows, settings, has_adapter)
        finally:
            self.lock.release()

    def _gen_kwargs(self, settings: GenSettings) -> dict:
        from transformers import StoppingCriteria, StoppingCriteriaList

        stop_event = self.stop_event

        class _Stop(StoppingCriteria):
            def __call__(self, input_ids, scores, **kw):
                return stop_event.is_set()

        tok = self.tokenizer
        eos = list(
            {
                i
                for i in (tok.eos_token_id, *_as_list(getattr(self.model.generation_config, "eos_token_id", None)))
                if i is not None
            }
        )
        kw = dict(max_new_tokens=settings.max_new_tokens, do_sample=not settings.greedy, eos_token_id=eos,
                  pad_token_id=tok.pad_token_id, repetition_penalty=settings.repetition_penalty,
                  stopping_criteria=StoppingCriteriaList([_Stop()]))  # fmt: skip
        if settings.min_new_tokens:
            kw["min_new_tokens"] = settings.min_new_tokens
        if self.static_cache:
            from transformers import CompileConfig

            # Static KV cache lets transformers compile the decode step. Not "reduce-overhead": its CUDA graphs keep
            # state in thread-local storage and fail in the streaming thread (AssertionError in cudagraph_trees).
            kw["cache_implementation"] = "static"
            kw["compile_config"] = CompileConfig(mode=self.compile_mode)
        if not settings.greedy:
            kw.update(temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k)
        else:
            kw.update(temperature=None, top_p=None, top_k=None)
        return kw

    def _batched(self, rows: list[list[int]], settings: GenSettings, has_adapter: bool):
        kw = self._gen_kwargs(settings)
        if has_adapter:
            kw["adapter_names"] = ["__base__", "default"]  # row 0: LoRA bypassed, row 1: adapter
        results = [SideResult() for _ in rows]
        for _ in self._stream(rows, kw, results, settings):
            yield results[0], results[1] if has_adapter else SideResult(done=True)

    def _sequential(self, rows: list[list[int]], settings: GenSettings):
        """Base with the adapter disabled, then tuned: the baseline mode (and a fallback)."""
        kw = self._gen_kwargs(settings)
        results = [SideResult(), SideResult()]
        for side in (0, 1):
            for _ in self._stream([rows[side]], kw, [results[side]], settings, base_only=side == 0):
                yield results[0], results[1]

    def _stream(
        self, rows: list[list[int]], kw: dict, results: list[SideResult], settings: GenSettings, base_only=False
    ) -> Iterator[None]:
        """One generate() over left-padded rows in a thread; yields each time `results` (one per row) change.

        However the consumer leaves (done, an error, GeneratorExit from a closed page), the thread is stopped and
        joined before this returns, so the caller's model lock is never released under a running generate."""
        import torch

        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=self.model.device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=self.model.device)
        streamer = _PairStreamer(len(rows))
        errors: list[BaseException] = []

        def work():
            try:
                off = self.model.disable_adapter() if base_only else contextlib.nullcontext()
                with torch.inference_mode(), off, self._scaled(settings.adapter_scale):
                    self.model.generate(input_ids=ids, attention_mask=mask, streamer=streamer, **kw)
            except BaseException as e:  # noqa: BLE001 - re-raised in the reader
                errors.append(e)
                streamer.end()

        torch.manual_seed(settings.seed)
        t0 = time.perf_counter()
        thread = threading.Thread(target=work, name="lora-lab-generate", daemon=True)
        thread.start()
        finished = False
        try:
            yield from _drain(streamer, results, t0, set(kw["eos_token_id"]), self.tokenizer.decode)
            finished = True
        finally:
            if not finished:
                self.stop_event.set()  # honoured by the stopping criterion at the next token
            thread.join()
        if errors:
            raise errors[0]

    def _scaled(self, scale: float):
        if self.adapter_dir is None or scale == 1.0:
            return contextlib.nullcontext()
        from peft.helpers import rescale_adapter_scale

        return rescale_adapter_scale(self.model, scale)

    def answer_pair(
        self, prompt: str | dict, settings: GenSettings | None = None, system: str = "", mode: str = "batch"
    ) -> dict:
        """Both answers to one prompt, complete (for the CLI, the comparison table and tests). A dict prompt is a
        dataset row, prompted exactly as training prompted it."""
        source = prompt if isinstance(prompt, dict) else [{"role": "user", "content": prompt}]
        results = None
        for results in self.generate_pair(source, None, system, settings, mode=mode):  # noqa: B007
            pass
        base, tuned = results
        return {"base": base.text, "tuned": tuned.text, "base_stats": _stats(base), "tuned_stats": _stats(tuned)}


def _stats(r: SideResult) -> dict:
    return {"tokens": r.tokens, "ttft_s": r.ttft_s, "seconds": r.seconds, "tokens_per_s": r.tokens_per_s}


def _drain(streamer: _PairStreamer, results: list[SideResult], t0: float, eos: set, decode) -> Iterator[None]:
    """Read a streamer's events until generate() ends, updating each row's result (text up to its first EOS,
    token count, time to first token, elapsed time); yields after every event, the last one with all rows done."""
    while True:
        event = streamer.events.get()
        now = event if event is not None else time.perf_counter()
        for toks, res in zip(streamer.tokens, results, strict=True):
            if res.done:
                continue
            cut = next((j for j, t in enumerate(toks) if t in eos), None)
            kept = toks if cut is None else toks[:cut]
            if kept and res.ttft_s is None:
                res.ttft_s = now - t0
            res.tokens, res.text, res.seconds = len(kept), decode(kept, skip_special_tokens=True), now - t0
            res.done = cut is not None or event is None
        yield
        if event is None:
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
    for split in ("train", "val"):
        rows = read_jsonl(Path(run_dir) / "data" / f"{split}.jsonl")
        for row in rows[: limit if split == "train" else max(2, limit // 2)]:
            shown = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
            res = engine.answer_pair(row, gen)
            out.append(CompareRow(split, shown, row["output"], res["base"], res["tuned"]))
    if not out:
        raise InputError(
            f"{run_dir} has no data/train.jsonl: pick an adapter trained in LoRA Lab to compare on its rows."
        )
    return out
