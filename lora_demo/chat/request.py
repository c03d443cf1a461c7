"""What a chat request asks for and gets: generation settings, one row's streamed result, and the Gradio chat
message format (content blocks, Qwen3's thinking) turned into plain text."""

from __future__ import annotations

from dataclasses import dataclass

from lora_demo.errors import InputError
from lora_demo.i18n import msg


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
                raise InputError(
                    msg(
                        "{name} must be a number from {lo} to {hi}; got {value!r}.",
                        name=SETTING[name],
                        lo=lo,
                        hi=hi,
                        value=v,
                    )
                )

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
SETTING = {
    "max_new_tokens": msg("max new tokens"),
    "temperature": msg("temperature"),
    "top_p": msg("top p"),
    "top_k": msg("top k"),
    "repetition_penalty": msg("repetition penalty"),
    "seed": msg("seed"),
    "adapter_scale": msg("adapter scale"),
}


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
