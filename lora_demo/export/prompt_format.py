"""The run's prompt format, carried into what leaves the app, so the exported model is prompted as it was trained.

The usual reason an exported model answers differently from the app is the prompt: the app prompts an Alpaca run
with the Alpaca text, while a merged model or GGUF is prompted with the base's chat template. So every export
writes the run's own format where other tools read it:
- `chat_template(...)`: a Jinja chat template (the merged model's tokenizer, hence the GGUF's
  tokenizer.chat_template) that renders exactly `lora_demo.data.templates.prompt_text`: the Alpaca text for an
  Alpaca run; for a chat run the base's template with the run's thinking mode as its default.
- `ollama_template(...)`: Ollama's Go template, made by rendering the app's own prompt with placeholders.
"""

from __future__ import annotations

from pathlib import Path

from lora_demo.data.templates import ALPACA_NO_INPUT, ALPACA_WITH_INPUT, chat_messages, prompt_text
from lora_demo.rundir import RunDir
from lora_demo.train.settings import TrainSettings

_SYSTEM, _PROMPT = "\x00SYSTEM\x00", "\x00PROMPT\x00"  # placeholders no real text contains


def run_format(run_dir: str | Path) -> dict:
    """{'template': 'alpaca'|'chat', 'enable_thinking': bool, 'model': base} from the run's config.yaml."""

    s = TrainSettings.from_yaml(RunDir(run_dir).config_path)
    return {"template": s.template, "enable_thinking": bool(s.enable_thinking), "model": s.model}


def messages_for(row: dict, template: str) -> list[dict]:
    """The chat messages a stranger sends for a dataset row, that the exported template turns into the prompt the
    app gave the row: Alpaca's input travels as the system message (as the app's chat does), chat's as the user
    message's second paragraph (lora_demo.data.templates.chat_messages)."""

    if template == "alpaca":
        sys = [{"role": "system", "content": row["input"]}] if row.get("input") else []
        return sys + [{"role": "user", "content": row.get("instruction", "")}]
    return chat_messages(row)


def _jinja_alpaca(text: str) -> str:
    return text.replace("{instruction}", "{{ ns.user }}").replace("{input}", "{{ ns.system }}")


def chat_template(base_template: str | None, fmt: dict) -> str | None:
    """The Jinja chat template that renders the run's prompt (None: keep the base's, which already does)."""
    if fmt["template"] == "alpaca":
        # The app prompts a conversation in Alpaca as its latest user message, with the system text as the input.
        # One line, no whitespace control: the Alpaca text's own newlines must survive trim_blocks/lstrip_blocks.
        return (
            "{% set ns = namespace(system='', user='') %}{% for m in messages %}"
            "{% if m['role'] == 'system' %}{% set ns.system = m['content'] %}"
            "{% elif m['role'] == 'user' %}{% set ns.user = m['content'] %}{% endif %}{% endfor %}"
            "{% if ns.system %}"
            + _jinja_alpaca(ALPACA_WITH_INPUT)
            + "{% else %}"
            + _jinja_alpaca(ALPACA_NO_INPUT)
            + "{% endif %}{% if messages and messages[-1]['role'] == 'assistant' %}"
            "{{ messages[-1]['content'] }}{{ eos_token }}{% endif %}"
        )
    if base_template and "enable_thinking" in base_template and not fmt.get("enable_thinking"):
        # Trained with thinking off: make that the default for callers that do not say (llama.cpp, Ollama, pipelines).
        return (
            "{%- if enable_thinking is not defined %}{%- set enable_thinking = false %}{%- endif %}\n" + base_template
        )
    return None


def ollama_template(tokenizer, fmt: dict) -> str:
    """Ollama's TEMPLATE for one turn: the app's own prompt rendered around Ollama's .System and .Prompt."""
    template, think = fmt["template"], bool(fmt.get("enable_thinking"))
    user = [{"role": "user", "content": _PROMPT}]
    with_system = prompt_text(user, tokenizer, template, think, _SYSTEM)
    plain = prompt_text(user, tokenizer, template, think, None)

    def go(text: str) -> str:
        return text.replace(_SYSTEM, "{{ .System }}").replace(_PROMPT, "{{ .Prompt }}")

    return "{{ if .System }}" + go(with_system) + "{{ else }}" + go(plain) + "{{ end }}{{ .Response }}"


def render_ollama(template: str, prompt: str, system: str = "") -> str:
    """What Ollama gives the model for one turn with `template` (the if/else ollama_template writes, filled in)."""
    head, rest = template.split("{{ if .System }}", 1)
    with_system, rest = rest.split("{{ else }}", 1)
    plain, tail = rest.split("{{ end }}", 1)
    body = with_system if system else plain
    text = head + body + tail.replace("{{ .Response }}", "")
    return text.replace("{{ .System }}", system).replace("{{ .Prompt }}", prompt)


def stop_words(tokenizer) -> list[str]:
    """The texts generation stops at: the end-of-turn the run trained on, and the base's end of text."""
    words = [tokenizer.eos_token]
    for extra in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>"):
        if extra in tokenizer.get_vocab() and extra not in words:
            words.append(extra)
    return [w for w in words if w]
