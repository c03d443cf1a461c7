"""Numbers from one forward pass instead of a vote: held-out loss of base vs tuned, and a per-token diff.

Both use a loaded ChatEngine with an adapter: the base is the same PEFT model inside `disable_adapter()`, the tuned
model is the adapter on (at its trained scale). Both hold `engine.lock`, as generation does, so nothing else uses
the model meanwhile; both run under torch.no_grad in eval mode.
"""

from __future__ import annotations

import contextlib
import math

from lora_demo.adapters import check_adapter
from lora_demo.data.templates import IGNORE, build_example
from lora_demo.errors import InputError
from lora_demo.i18n import msg
from lora_demo.rundir import AdapterDir

BATCH = 8


@contextlib.contextmanager
def _holding(engine, adapter_dir: str | None = None):
    """The engine's model with `adapter_dir` (None: the one it was loaded with) the active adapter, for this caller
    only (the chat's lock), after checking an adapter is there."""
    if engine.model is None:
        raise InputError(msg("Load a model first (Chat tab: pick a model and an adapter, then Load)."))
    adapter_dir = adapter_dir or engine.adapter_dir
    if not adapter_dir:
        raise InputError(msg("Load an adapter: base and tuned are the same model without one."))
    if not engine.lock.acquire(timeout=600):
        raise InputError(msg("The model is busy with another generation; try again in a moment."))
    try:
        if adapter_dir not in engine.adapters:  # detached meanwhile: attach it again (the lock held)
            engine._attach_locked(adapter_dir, check_adapter(adapter_dir))
        engine.model.set_adapter(engine.adapter_name(adapter_dir))
        engine.model.eval()
        yield engine.model
    finally:
        engine.lock.release()


def _max_length(adapter_dir: str | None) -> int | None:
    """The run's max_seq_length (config.yaml), so rows are cut where training cut them."""
    import yaml

    try:
        value = (AdapterDir(adapter_dir).read_config() or {}).get("max_seq_length")
    except (OSError, TypeError, AttributeError, yaml.YAMLError):
        return None
    return value if isinstance(value, int) and value > 0 else None


def _examples(engine, rows: list[dict], max_rows: int, adapter_dir: str | None = None) -> list:
    """build_example for each usable row, with the run's template, thinking switch and length; prompt masked."""

    adapter_dir = adapter_dir or engine.adapter_dir
    fmt = engine.adapters.template(adapter_dir) or engine.template
    template = fmt.get("template", "chat")
    think = bool(fmt.get("enable_thinking", False))
    limit = _max_length(adapter_dir)
    out = []
    for row in rows or []:
        if not isinstance(row, dict) or not str(row.get("instruction") or "").strip():
            continue
        ex = build_example(row, engine.tokenizer, template, limit, True, think)
        if any(lab != IGNORE for lab in ex.labels[1:]):  # a row cut before its answer has nothing to score
            out.append(ex)
        if len(out) >= max_rows:
            break
    if not out:
        raise InputError(msg("No row to score: each needs an instruction and an answer that fits the run's length."))
    return out


def _loss_sum(model, examples: list, pad_id: int) -> tuple[float, int]:
    """Summed cross-entropy and the count of scored tokens (labels != -100, shifted by one), batch by batch."""
    import torch
    import torch.nn.functional as F

    total, count = 0.0, 0
    for i in range(0, len(examples), BATCH):
        batch = examples[i : i + BATCH]
        width = max(len(e.input_ids) for e in batch)
        ids = torch.tensor([e.input_ids + [pad_id] * (width - len(e.input_ids)) for e in batch])
        mask = torch.tensor([[1] * len(e.input_ids) + [0] * (width - len(e.input_ids)) for e in batch])
        labels = torch.tensor([e.labels + [IGNORE] * (width - len(e.labels)) for e in batch])
        logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits.float()
        shifted = labels[:, 1:].to(logits.device)
        loss = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), shifted.reshape(-1), ignore_index=IGNORE, reduction="sum"
        )
        total += loss.item()
        count += int((shifted != IGNORE).sum())
    return total, count


def _side(loss: float) -> dict:
    return {"loss": loss, "ppl": math.exp(loss) if loss < 700 else math.inf}


def heldout_loss(engine, rows: list[dict], max_rows: int = 32, adapter_dir: str | None = None) -> dict:
    """Token-averaged cross-entropy (and perplexity) of the base and the tuned model on rows, masked as training
    masked them (train_on_responses_only: only the answer tokens count).

    Returns {"rows", "tokens", "base": {"loss", "ppl"}, "tuned": {"loss", "ppl"}}."""
    import torch

    with _holding(engine, adapter_dir) as model:
        examples = _examples(engine, rows, max(1, int(max_rows)), adapter_dir)
        pad = engine.tokenizer.pad_token_id
        pad = engine.tokenizer.eos_token_id if pad is None else pad
        with torch.no_grad():
            with model.disable_adapter():
                base_sum, n = _loss_sum(model, examples, pad)
            tuned_sum, _ = _loss_sum(model, examples, pad)
    return {"rows": len(examples), "tokens": n, "base": _side(base_sum / n), "tuned": _side(tuned_sum / n)}


def token_pieces(tokenizer, ids: list[int]) -> list[str]:
    """Each token's text, such that the pieces joined are the decoded whole: a character split over several
    byte-level tokens appears whole on the token that completes it (the ones before it get "")."""
    pieces: list[str] = []
    start = done = 0  # decode from `start`; text up to token `done` is already given out
    for i in range(len(ids)):
        before = tokenizer.decode(ids[start:done])
        now = tokenizer.decode(ids[start : i + 1])
        if len(now) > len(before) and not now.endswith("\ufffd"):
            pieces.append(now[len(before) :])
            start, done = done, i + 1
        else:
            pieces.append("")
    if done < len(ids) and pieces:  # an unfinished character at the very end: give what there is to the last token
        pieces[-1] = tokenizer.decode(ids[start:])[len(tokenizer.decode(ids[start:done])) :]
    return pieces


def _answer_logprobs(model, ids: list[int], n_prompt: int):
    """log p(token) of each token after the first n_prompt, from one forward pass over the whole sequence."""
    import torch

    x = torch.tensor([ids], device=model.device)
    logp = torch.log_softmax(model(input_ids=x).logits[0, n_prompt - 1 : -1].float(), dim=-1)
    return logp.gather(1, x[0, n_prompt:, None].to(logp.device))[:, 0]


def token_diff(
    engine, row_or_prompt: dict | str, answer: str, system: str = "", adapter_dir: str | None = None
) -> list[tuple[str, float]]:
    """For each token of `answer` after the prompt (built as the chat builds it: a dataset row, or a user message):
    (its text, log p_tuned(token) - log p_base(token)). Positive: the tuning made that token more likely."""
    import torch

    if not isinstance(answer, str):
        raise InputError(msg("The answer to score must be text."))
    with _holding(engine, adapter_dir) as model:
        source = row_or_prompt if isinstance(row_or_prompt, dict) else [{"role": "user", "content": row_or_prompt}]
        prompt = engine.prompt_ids(source, system, adapter_dir=adapter_dir)
        answer_ids = engine.tokenizer(answer, add_special_tokens=False)["input_ids"]
        if not answer_ids:
            return []
        ids = prompt + answer_ids
        with torch.no_grad():
            with model.disable_adapter():
                base = _answer_logprobs(model, ids, len(prompt))
            tuned = _answer_logprobs(model, ids, len(prompt))
        pieces = token_pieces(engine.tokenizer, answer_ids)
    return [(p, float(d)) for p, d in zip(pieces, (tuned - base).tolist(), strict=True)]
