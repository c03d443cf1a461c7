"""Does the export answer like the app? The same prompts, greedy, through three paths, token by token.

(a) the app: LoRA Lab's chat engine with the run's adapter attached, prompted as training prompted;
(b) the merged 16-bit model through plain transformers, prompted by its own chat template (what a stranger runs);
(c) each GGUF through llama.cpp's runtime (llama-cpp-python), prompted by the chat template inside the GGUF.
For every prompt: the exact prompt text each path was given (and whether its tokens equal the app's), the answers,
the share of answer tokens equal to the app's at the same position, and where they first differ. The Modelfile's
template is checked too: Ollama must give the model the app's prompt.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lora_demo.chat.engine import ChatEngine
from lora_demo.chat.request import GenSettings
from lora_demo.errors import InputError
from lora_demo.export.prompt_format import messages_for, render_ollama, run_format
from lora_demo.i18n import msg
from lora_demo.io import read_jsonl, write_atomic
from lora_demo.rundir import RunDir
from lora_demo.train.probes import probe_rows
from lora_demo.train.settings import TrainSettings

MIN_PROMPTS = 3


@dataclass
class Answer:
    prompt: str  # the exact prompt text this path was given
    answer: str
    prompt_equal: bool = True  # its prompt tokens equal the app's
    agreement: float = 1.0  # answer tokens equal to the app's, position by position, over the longer answer
    first_divergence: int | None = None  # the first answer token that differs (None: none)


@dataclass
class PromptParity:
    messages: list[dict]
    app: Answer
    merged: Answer | None = None
    gguf: dict[str, Answer] = field(default_factory=dict)  # by GGUF type
    modelfile_prompt: str | None = None


def agreement(ref: list[int], got: list[int]) -> tuple[float, int | None]:
    """(share of positions where got equals ref, over the longer of the two; the first differing position)."""
    n = max(len(ref), len(got))
    if n == 0:
        return 1.0, None
    same = sum(a == b for a, b in zip(ref, got, strict=False))
    first = next((i for i, (a, b) in enumerate(zip(ref, got, strict=False)) if a != b), None)
    if first is None and len(ref) != len(got):
        first = min(len(ref), len(got))
    return same / n, first


def parity_rows(run_dir: Path, n: int = MIN_PROMPTS) -> list[dict]:
    """The run's probe prompts, then its validation rows, then its training rows: at least n prompts if it has
    that many rows."""

    run = RunDir(run_dir)
    s = TrainSettings.from_yaml(run.config_path)
    train = read_jsonl(run.train_rows_path) if run.train_rows_path.is_file() else []
    val = read_jsonl(run.val_rows_path) if run.val_rows_path.is_file() else []
    rows = probe_rows(s.probe_prompts, train, val)
    for r in val + train:
        if len(rows) >= n:
            break
        row = {"instruction": r.get("instruction", ""), "input": r.get("input", "")}
        if row not in rows and row["instruction"].strip():
            rows.append(row)
    if not rows:
        raise InputError(
            msg(
                "{run} has no rows to check with (no data/train.jsonl): pick a run trained in LoRA Lab.",
                run=run_dir.name,
            )
        )
    return rows


def check_parity(
    run_dir: str | Path,
    merged_dir: str | Path | None,
    ggufs: dict[str, Path],
    modelfile: Path | None = None,
    max_new_tokens: int = 48,
) -> dict:
    """The parity report (a dict, as parity.json holds it) of the app vs the merged model vs each GGUF."""

    run_dir = Path(run_dir)
    fmt = run_format(run_dir)
    rows = parity_rows(run_dir)
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    app, tokenizer, precision = _app_answers(run_dir, fmt, rows, max_new_tokens)
    seconds["app"] = time.perf_counter() - t
    reference = None
    if not str(precision).startswith(("fp32", "fp16")) and "dequantized" not in str(precision):
        # The app chats in bf16 here (faster on this CPU): its own rounding can flip a near-tie that every 16-bit
        # export agrees on. The same adapter path in fp32 tells that apart from an export that really differs.
        t = time.perf_counter()
        reference = _app_answers(run_dir, fmt, rows, max_new_tokens, full_precision=True)[0]
        seconds["app_fp32"] = time.perf_counter() - t
    results = [PromptParity(messages_for(r, fmt["template"]), a) for r, a in zip(rows, app, strict=True)]
    app_ids = [tokenizer(a.answer, add_special_tokens=False)["input_ids"] for a in app]
    app_prompt_ids = [a.prompt_ids for a in app]

    ref_ids = [tokenizer(a.answer, add_special_tokens=False)["input_ids"] for a in reference] if reference else None
    vs_fp32: dict[str, list[float]] = {}

    def score(ans: Answer, i: int, prompt_ids: list[int], path: str) -> Answer:
        ans.prompt_equal = prompt_ids == app_prompt_ids[i]
        got = tokenizer(ans.answer, add_special_tokens=False)["input_ids"]
        ans.agreement, ans.first_divergence = agreement(app_ids[i], got)
        if ref_ids is not None:
            vs_fp32.setdefault(path, []).append(agreement(ref_ids[i], got)[0])
        return ans

    if merged_dir is not None:
        t = time.perf_counter()
        for i, (res, (ans, ids)) in enumerate(
            zip(results, _merged_answers(Path(merged_dir), results, max_new_tokens), strict=True)
        ):
            res.merged = score(ans, i, ids, "merged")
        seconds["merged"] = time.perf_counter() - t
    for gtype, path in ggufs.items():
        t = time.perf_counter()
        for i, (res, (ans, ids)) in enumerate(
            zip(results, _gguf_answers(Path(path), results, max_new_tokens), strict=True)
        ):
            res.gguf[gtype] = score(ans, i, ids, f"gguf_{gtype}")
        seconds[f"gguf_{gtype}"] = time.perf_counter() - t
    if modelfile is not None and modelfile.is_file():
        template = _modelfile_template(modelfile.read_text(encoding="utf-8"))
        for res in results:
            system = next((m["content"] for m in res.messages if m["role"] == "system"), "")
            user = [m["content"] for m in res.messages if m["role"] == "user"][-1]
            res.modelfile_prompt = render_ollama(template, user, system) if template else None
    report = _summary(run_dir, results, seconds, max_new_tokens)
    report["app_precision"] = str(precision)
    report["vs_app_fp32"] = {k: sum(v) / len(v) for k, v in vs_fp32.items()} if reference else None
    if reference:
        report["app_fp32_agreement"] = agreement_of(app_ids, ref_ids)
    return report


def agreement_of(refs: list[list[int]], gots: list[list[int]]) -> float:
    """The mean agreement of answers with their references."""
    return sum(agreement(r, g)[0] for r, g in zip(refs, gots, strict=True)) / max(1, len(refs))


def _summary(run_dir: Path, results: list[PromptParity], seconds: dict, max_new_tokens: int) -> dict:
    def mean(values):
        values = list(values)
        return sum(values) / len(values) if values else None

    types = sorted({t for r in results for t in r.gguf}, key=["f16", "bf16", "q8_0"].index)
    per_type = {t: mean(r.gguf[t].agreement for r in results) for t in types}
    modelfile_equal = (
        all(r.modelfile_prompt == r.app.prompt for r in results)
        if all(r.modelfile_prompt is not None for r in results)
        else None
    )
    template_equal = (
        all(
            (r.merged is None or r.merged.prompt_equal) and all(a.prompt_equal for a in r.gguf.values())
            for r in results
        )
        and modelfile_equal is not False
    )
    prompts = []
    for r in results:
        d = asdict(r)
        d["app"].pop("prompt_ids", None)
        prompts.append(d)
    return {
        "run": run_dir.name,
        "prompts": prompts,
        "merged_agreement": mean(r.merged.agreement for r in results if r.merged) if results[0].merged else None,
        "gguf_agreement": per_type[types[0]] if types else None,  # the most faithful type checked (f16 first)
        "gguf_type": types[0] if types else None,
        "gguf_agreements": per_type,
        "template_equal": template_equal,
        "modelfile_equal": modelfile_equal,
        "max_new_tokens": max_new_tokens,
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
    }


@dataclass
class _AppAnswer(Answer):
    prompt_ids: list[int] = field(default_factory=list)


def _app_answers(run_dir: Path, fmt: dict, rows: list[dict], max_new_tokens: int, full_precision: bool = False):
    """(a): the chat engine the Chat tab uses, the run attached, each row prompted exactly as training prompted.
    Returns (answers, tokenizer, the precision it decoded in)."""

    eng = ChatEngine(full_precision=full_precision)
    eng.compile = False  # the same weights and row masks, eager: a one-off check need not wait for a CUDA compile
    adapter = str(run_dir)
    for _ in eng.load(fmt["model"], adapter):
        pass
    try:
        gen = GenSettings(max_new_tokens=max_new_tokens, greedy=True, repetition_penalty=1.0)
        out = []
        for row in rows:
            ids = eng.prompt_ids(row, adapter_dir=adapter)
            last = None
            for last in eng.generate([row], [adapter], settings=gen, mode="sequential"):  # noqa: B007
                pass
            out.append(_AppAnswer(eng.tokenizer.decode(ids), last[0].text, prompt_ids=ids))
        return out, eng.tokenizer, eng.precision
    finally:
        eng.unload()


def _merged_answers(merged: Path, results: list[PromptParity], max_new_tokens: int):
    """(b): plain transformers on the merged folder, prompted by its own chat template, in its stored dtype."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(merged))
    device = {"": 0} if torch.cuda.is_available() else None
    model = AutoModelForCausalLM.from_pretrained(str(merged), dtype="auto", device_map=device).eval()
    stop = _eos_ids(tok, model.generation_config)
    for res in results:
        text = tok.apply_chat_template(res.messages, tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            out = model.generate(
                torch.tensor([ids], device=model.device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                repetition_penalty=1.0,
                eos_token_id=stop,
                pad_token_id=stop[0],
            )[0, len(ids) :]
        yield Answer(text, tok.decode(out.tolist(), skip_special_tokens=True)), ids
    del model


def _eos_ids(tok, gen_config) -> list[int]:
    ids = gen_config.eos_token_id if gen_config.eos_token_id is not None else tok.eos_token_id
    ids = list(ids) if isinstance(ids, (list, tuple)) else [ids]
    return [i for i in ids if i is not None] or [tok.eos_token_id]


def _gguf_answers(path: Path, results: list[PromptParity], max_new_tokens: int):
    """(c): llama.cpp's runtime on the GGUF, prompted by the chat template the GGUF carries (as llama.cpp's chat
    and Ollama without a TEMPLATE read it), greedy."""
    try:
        import llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    except ImportError:
        raise InputError(
            msg(
                "The GGUF check needs llama.cpp's runtime (llama-cpp-python), which is not installed: "
                "run `bash install.sh` again."
            )
        ) from None
    llm = llama_cpp.Llama(
        model_path=str(path), n_ctx=2048, n_threads=max(1, os.cpu_count() or 1), seed=0, n_gpu_layers=0, verbose=False
    )
    try:
        meta = llm.metadata
        template = meta.get("tokenizer.chat_template")
        if not template:
            raise InputError(
                msg("{name} carries no chat template, so llama.cpp cannot prompt it as the app does.", name=path.name)
            )
        vocab = llm._model.vocab

        def text_of(tid: int) -> str:
            return llm._model.token_get_text(tid) if tid >= 0 else ""

        fmt = Jinja2ChatFormatter(template, text_of(llm.token_eos()), text_of(llm.token_bos()))
        add_bos = meta.get("tokenizer.ggml.add_bos_token", "false") == "true"
        for res in results:
            text = fmt(messages=res.messages).prompt
            ids = llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)
            llm.reset()
            out: list[int] = []
            for tid in llm.generate(ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0, reset=True):
                if llama_cpp.llama_vocab_is_eog(vocab, tid) or len(out) >= max_new_tokens:
                    break
                out.append(tid)
            answer = llm.detokenize(out).decode("utf-8", errors="replace")
            yield Answer(text, answer), ids
    finally:
        llm.close()


def _modelfile_template(text: str) -> str | None:
    start = text.find('TEMPLATE """')
    if start < 0:
        return None
    body = text[start + len('TEMPLATE """') :]
    return body[: body.find('"""')].replace('\\"\\"\\"', '"""')


def write_report(report: dict, out_file: str | Path) -> Path:

    return write_atomic(Path(out_file), json.dumps(report, ensure_ascii=False, indent=1).encode("utf-8"))


def path_label(key: str) -> str:
    """'merged' -> 'merged', 'gguf_q8_0' -> 'GGUF q8_0'."""
    return f"GGUF {key[5:]}" if key.startswith("gguf_") else key


def summary_lines(report: dict) -> list[str]:
    """The report as a few plain lines (the CLI's output without --json)."""

    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}%"

    lines = [
        f"parity of {report['run']} over {len(report['prompts'])} prompts, greedy, "
        f"{report['max_new_tokens']} new tokens at most:",
        f"  merged (transformers): {pct(report['merged_agreement'])} of answer tokens equal to the app's",
    ]
    for t, v in report["gguf_agreements"].items():
        lines.append(f"  GGUF {t} (llama.cpp): {pct(v)}")
    if report.get("vs_app_fp32"):
        lines.append(
            f"  the app chats in {report['app_precision'].split(' ')[0]} here; against its adapter path in "
            f"fp32 (itself {pct(report.get('app_fp32_agreement'))} equal to those answers): "
            + ", ".join(f"{path_label(k)} {pct(v)}" for k, v in report["vs_app_fp32"].items())
        )
    lines.append(
        "  prompts: "
        + (
            "the same tokens on every path"
            if report["template_equal"]
            else "DIFFER from the app's on some path (see the report)"
        )
    )
    for i, p in enumerate(report["prompts"], 1):
        paths = [("merged", p["merged"])] + [(f"gguf {t}", a) for t, a in p["gguf"].items()]
        div = ", ".join(
            f"{name} at token {a['first_divergence']}" for name, a in paths if a and a["first_divergence"] is not None
        )
        lines.append(
            f"  {i}. {p['messages'][-1]['content'][:60]!r}: " + (f"first differs: {div}" if div else "identical")
        )
    return lines
