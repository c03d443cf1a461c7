"""The offline Qwen3 tokenizer: ids, round trips, and the chat template with thinking on and off."""

from __future__ import annotations

import pytest

from lora_demo.models import load_tokenizer


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("qwen3-tiny")


@pytest.mark.parametrize(
    "text",
    ["Hello world!", "你好，世界。LoRA 微调", "  spaces\n\n\ttabs  ", "café naïve 123456789", "don't <think>x</think>"],
)
def test_round_trip(tok, text):
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text


def test_known_ids(tok):
    # Ids of the real Qwen3 tokenizer.
    assert tok.encode("Hello", add_special_tokens=False) == [9707]
    assert tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]) == [
        151643,
        151644,
        151645,
        151667,
        151668,
    ]
    assert len(tok) == 151669 and tok.eos_token == "<|im_end|>"


def test_chat_template_thinking_off_and_on(tok):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    off = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    on = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True, enable_thinking=True)
    head = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert on == head
    assert off == head + "<think>\n\n</think>\n\n"


def test_history_reasoning_dropped_final_turn_keeps_think_block(tok):
    msgs = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "<think>\nwhy\n</think>\n\nA"},
        {"role": "user", "content": "b"},
        {"role": "assistant", "content": "B"},
    ]
    text = tok.apply_chat_template(msgs, tokenize=False)
    assert "why" not in text
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\nB<|im_end|>\n")
