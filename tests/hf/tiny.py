"""Tiny random Hugging Face models, made here with transformers (nothing is downloaded): a
Llama (GQA, RoPE, SwiGLU, untied head) and a GPT-2 (learned positions, GELU, tied head), each
with a byte-level tokenizer whose 257th token is `<eos>`. The tests build them in a temporary
directory; to have them on disk:

    python -m tests.hf.tiny DIR        # writes DIR/tiny-llama and DIR/tiny-gpt2
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

VOCAB = 257  # bytes and <eos>


def make(family: str, out: Path, *, seed: int = 0, layers: int = 4,
         specials: tuple[str, ...] = ("<eos>",)) -> Path:  # fmt: skip
    """Write a tiny random `family` ("llama" or "gpt2") model to `out`, its tokenizer the
    bytes and `specials` (the first is its end of text)."""
    import transformers

    from stackwise_dsl.hf.export import hf_tokenizer

    torch.manual_seed(seed)
    if family == "llama":
        config = transformers.LlamaConfig(
            vocab_size=256 + len(specials), hidden_size=64, intermediate_size=160, num_hidden_layers=layers,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            max_position_embeddings=64, rms_norm_eps=1e-6, rope_theta=10000.0,
            tie_word_embeddings=False, eos_token_id=256, bos_token_id=None,
        )  # fmt: skip
        model = transformers.LlamaForCausalLM(config)
    else:
        config = transformers.GPT2Config(
            vocab_size=256 + len(specials), n_positions=64, n_embd=64, n_layer=layers, n_head=4,
            n_inner=256, activation_function="gelu", layer_norm_epsilon=1e-5,
            eos_token_id=256, bos_token_id=None,
        )  # fmt: skip
        model = transformers.GPT2LMHeadModel(config)
    with torch.no_grad():  # norms away from 1, so a test sees them moved
        for name, param in model.named_parameters():
            if param.dim() == 1 and not name.endswith(".bias"):
                param.uniform_(0.5, 1.5)
    model.save_pretrained(out)
    hf_tokenizer({"kind": "bytes", "specials": list(specials)}, 256 + len(specials)).save(
        str(out / "tokenizer.json")
    )
    settings = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<eos>"}
    (out / "tokenizer_config.json").write_text(json.dumps(settings) + "\n")
    return out


if __name__ == "__main__":
    where = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    for family in ("llama", "gpt2"):
        print(make(family, where / f"tiny-{family}"))
