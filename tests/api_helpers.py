"""What the API tests share: the Chat tab's endpoints take the base model and adapter the page shows (issue 26)."""

from __future__ import annotations

GEN = [0.7, 0.9, 50, 1.0, 12, 0, 1.0, True]  # temperature, top_p, top_k, repetition, max new, seed, scale, greedy
MAX_COMPARE = 3  # lora_demo.ui.chat_tab.MAX_COMPARE: the compare panes' histories follow the picked adapters


def send_args(text, adapter, base=None, tuned=None, gen=GEN, system="", think=False, model="auto", compare=None):
    """/chat_send's inputs: the prompt, both histories, the settings, then the base and adapter the page shows, the
    adapters to compare with and their histories."""
    return [
        text,
        base or [],
        tuned or [],
        system,
        think,
        *gen,
        model,
        None if adapter is None else str(adapter),
        compare or [],
        *([[]] * MAX_COMPARE),
    ]


def sent(outputs) -> dict:
    """/chat_send's outputs by name."""
    names = ["input", "base", "tuned", "base_stats", "tuned_stats", "status"]
    out = dict(zip(names, outputs, strict=False))
    out["extra"] = list(outputs[6 : 6 + MAX_COMPARE])
    out["extra_stats"] = list(outputs[6 + MAX_COMPARE :])
    return out
