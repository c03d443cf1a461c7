"""Turn one instruction row into exactly what training sees: text, token ids and labels.

`build_example` is THE function that makes training labels; the trainer and the Dataset tab's preview both call
it, so the preview's masking is the trainer's masking by construction. Its masked part is `prompt_ids`, which the
chat and the comparison table also feed to generate, so a row is prompted at inference exactly as it was trained.

Prompt and response are tokenized separately and concatenated. That is also how the model meets them at
inference (it reads the tokenized prompt, then generates response tokens), and it makes the mask boundary exact.
With train_on_responses_only, prompt tokens get label -100 (no loss).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Template = Literal["alpaca", "chat"]
IGNORE = -100

# The Alpaca prompt (as Unsloth and the seed write-up use it), in its two standard variants.
ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)


def uses_thinking(tokenizer) -> bool:
    """Whether the tokenizer's chat template reads `enable_thinking` (Qwen3's thinking switch). Where it does not
    (SmolLM2, most models), the switch changes nothing, so the UI does not offer it."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # named templates ({"default": ..., "tool_use": ...})
        template = " ".join(str(t) for t in template.values())
    return isinstance(template, str) and "enable_thinking" in template


@dataclass
class Example:
    prompt_text: str
    response_text: str
    input_ids: list[int]
    labels: list[int]
    truncated: bool  # True when the example was longer than max_length and got cut

    @property
    def n_prompt(self) -> int:
        return sum(1 for x in self.labels if x == IGNORE)


def chat_messages(row: dict, system: str | None = None) -> list[dict]:
    """The user message of a row: instruction, then the input (if any) after a blank line."""
    user = row.get("instruction", "")
    if row.get("input"):
        user = f"{user}\n\n{row['input']}"
    msgs = [{"role": "system", "content": system}] if system else []
    return msgs + [{"role": "user", "content": user}]


def prompt_text(
    source: dict | list[dict],
    tokenizer,
    template: Template,
    enable_thinking: bool = False,
    system: str | None = None,
) -> str:
    """The prompt the model reads: what generation starts from, and the masked part in training.

    source is a dataset row (instruction/input) or a chat history ending with the user's turn. Alpaca has no
    turns: a history is prompted as its latest message, with the system text (if any) as the row's input; a row's
    own input is used as it is (system is ignored). The chat template reads the history as it is, or the row as
    one user message (instruction, blank line, input), after the system message if one is given."""
    if template == "alpaca":
        row = source if isinstance(source, dict) else {"instruction": source[-1]["content"], "input": system or ""}
        fmt = ALPACA_WITH_INPUT if row.get("input") else ALPACA_NO_INPUT
        return fmt.format(instruction=row.get("instruction", ""), input=row.get("input", ""))
    if isinstance(source, dict):
        msgs = chat_messages(source, system)
    else:
        msgs = ([{"role": "system", "content": system}] if system else []) + list(source)
    return tokenizer.apply_chat_template(
        msgs, tokenize=False, add_generation_prompt=True, enable_thinking=enable_thinking
    )


def prompt_ids(
    source: dict | list[dict],
    tokenizer,
    template: Template,
    enable_thinking: bool = False,
    system: str | None = None,
) -> list[int]:
    """THE prompt token ids: the masked part of build_example, and what the chat and the comparison table feed
    to generate (see prompt_text for what source may be)."""
    text = prompt_text(source, tokenizer, template, enable_thinking, system)
    return tokenizer(text, add_special_tokens=template == "alpaca")["input_ids"]


def response_text(
    row: dict, tokenizer, template: Template, enable_thinking: bool = False, system: str | None = None
) -> str:
    """The trained-on continuation: the output plus the end-of-turn the model must learn to emit."""
    if template == "alpaca":
        return row.get("output", "") + tokenizer.eos_token
    msgs = chat_messages(row, system)
    full = tokenizer.apply_chat_template(
        msgs + [{"role": "assistant", "content": row.get("output", "")}],
        tokenize=False,
        enable_thinking=enable_thinking,
    )
    prompt = prompt_text(row, tokenizer, template, enable_thinking, system)
    if full.startswith(prompt):
        return full[len(prompt) :]
    # A template whose final assistant turn differs from its generation prompt (e.g. Qwen3 with thinking on adds
    # an empty think block to the final turn): train on what follows the shared prefix of the two renderings.
    k = 0
    while k < min(len(full), len(prompt)) and full[k] == prompt[k]:
        k += 1
    return full[k:]


def build_example(
    row: dict,
    tokenizer,
    template: Template = "alpaca",
    max_length: int | None = None,
    train_on_responses_only: bool = True,
    enable_thinking: bool = False,
    system: str | None = None,
) -> Example:
    """Token ids and labels for one row, exactly as the trainer uses them."""
    p_text = prompt_text(row, tokenizer, template, enable_thinking, system)
    r_text = response_text(row, tokenizer, template, enable_thinking, system)
    p_ids = prompt_ids(row, tokenizer, template, enable_thinking, system)
    r_ids = tokenizer(r_text, add_special_tokens=False)["input_ids"]
    ids = p_ids + r_ids
    labels = ([IGNORE] * len(p_ids) if train_on_responses_only else list(p_ids)) + list(r_ids)
    truncated = max_length is not None and len(ids) > max_length
    if truncated:
        ids, labels = ids[:max_length], labels[:max_length]
    return Example(p_text, r_text, ids, labels, truncated)


def example_length(row: dict, tokenizer, template: Template = "alpaca", enable_thinking: bool = False) -> int:
    """Tokens of a row before truncation."""
    return len(build_example(row, tokenizer, template, None, True, enable_thinking).input_ids)


def masked_view(example: Example, tokenizer) -> list[tuple[str, str | None]]:
    """(token text, category) pairs for a highlighted preview: category 'prompt (masked)' or 'trained'."""
    out: list[tuple[str, str | None]] = []
    for tid, lab in zip(example.input_ids, example.labels, strict=True):
        piece = tokenizer.decode([tid])
        out.append((piece, "masked" if lab == IGNORE else "trained"))
    return out
