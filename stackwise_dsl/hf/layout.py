"""Our weight names against Hugging Face's, both ways. Ours: the shared weights (`embed`,
`positions`, `norm`, `head`) and, per layer, a block's (`norm1`, `attn.q/k/v/o`, `norm2`,
`ffn.gate/up/down`). Llama's are one to one; GPT-2's Conv1D layers keep their weights
transposed, its attention keeps q, k and v as one matrix, and its layers carry biases (ours
have none: we write zeros, and read only zeros).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from stackwise_dsl.hf import LLAMA, HfError

LLAMA_LAYER = {
    "input_layernorm.weight": "norm1.weight",
    "self_attn.q_proj.weight": "attn.q.weight",
    "self_attn.k_proj.weight": "attn.k.weight",
    "self_attn.v_proj.weight": "attn.v.weight",
    "self_attn.o_proj.weight": "attn.o.weight",
    "post_attention_layernorm.weight": "norm2.weight",
    "mlp.gate_proj.weight": "ffn.gate.weight",
    "mlp.up_proj.weight": "ffn.up.weight",
    "mlp.down_proj.weight": "ffn.down.weight",
}
# GPT-2, per layer: theirs -> ours, transposed or not (c_attn is split into q, k, v)
GPT2_LAYER = {
    "ln_1.weight": ("norm1.weight", False),
    "attn.c_proj.weight": ("attn.o.weight", True),
    "ln_2.weight": ("norm2.weight", False),
    "mlp.c_fc.weight": ("ffn.up.weight", True),
    "mlp.c_proj.weight": ("ffn.down.weight", True),
}
GPT2_BIASES = ("ln_1.bias", "attn.c_attn.bias", "attn.c_proj.bias", "ln_2.bias", "mlp.c_fc.bias",
               "mlp.c_proj.bias")  # fmt: skip


def to_hf(family: str, shared: dict[str, torch.Tensor], layers: list[dict[str, torch.Tensor]],
          *, tied: bool) -> dict[str, torch.Tensor]:  # fmt: skip
    """Our shared weights and layers (input to head) under `family`'s names, fp32."""
    if family == LLAMA:
        out = {"model.embed_tokens.weight": shared["embed.weight"],
               "model.norm.weight": shared["norm.weight"]}  # fmt: skip
        for n, layer in enumerate(layers):
            for theirs, ours in LLAMA_LAYER.items():
                out[f"model.layers.{n}.{theirs}"] = layer[ours]
    else:
        d = shared["norm.weight"].shape[0]
        out = {"transformer.wte.weight": shared["embed.weight"],
               "transformer.wpe.weight": shared["positions.weight"],
               "transformer.ln_f.weight": shared["norm.weight"],
               "transformer.ln_f.bias": torch.zeros(d)}  # fmt: skip
        for n, layer in enumerate(layers):
            at = f"transformer.h.{n}."
            for theirs, (ours, transposed) in GPT2_LAYER.items():
                out[at + theirs] = layer[ours].t() if transposed else layer[ours]
            out[at + "attn.c_attn.weight"] = torch.cat([layer[f"attn.{x}.weight"]
                                                        for x in "qkv"]).t()  # fmt: skip
            for bias in GPT2_BIASES:
                width = out[at + bias.replace(".bias", ".weight")].shape[-1]
                out[at + bias] = torch.zeros(width)
    if not tied:
        out["lm_head.weight"] = shared["head.weight"]
    return {k: v.detach().float().contiguous().clone() for k, v in out.items()}


Weights = dict[str, torch.Tensor]


def from_hf(family: str, get: Callable[[str], torch.Tensor], layers: int, *, tied: bool,
            d_model: int) -> tuple[Weights, list[Weights]]:  # fmt: skip
    """Our shared weights and layers from a Hugging Face model's tensors (`get(name)`),
    fp32. HfError for a GPT-2 bias that is not zero (our layers have none)."""
    if family == LLAMA:
        shared = {"embed.weight": get("model.embed_tokens.weight"),
                  "norm.weight": get("model.norm.weight")}  # fmt: skip
        out = [{ours: get(f"model.layers.{n}.{theirs}") for theirs, ours in LLAMA_LAYER.items()}
               for n in range(layers)]  # fmt: skip
    else:
        shared = {"embed.weight": get("transformer.wte.weight"),
                  "positions.weight": get("transformer.wpe.weight"),
                  "norm.weight": get("transformer.ln_f.weight")}  # fmt: skip
        biases = ["transformer.ln_f.bias"]
        out = []
        for n in range(layers):
            at = f"transformer.h.{n}."
            layer = {ours: get(at + theirs).t() if transposed else get(at + theirs)
                     for theirs, (ours, transposed) in GPT2_LAYER.items()}  # fmt: skip
            q, k, v = get(at + "attn.c_attn.weight").t().split(d_model)
            layer |= {"attn.q.weight": q, "attn.k.weight": k, "attn.v.weight": v}
            out.append(layer)
            biases += [at + b for b in GPT2_BIASES]
        nonzero = [b for b in biases if bool(get(b).any())]
        if nonzero:
            some = f"{len(nonzero)} biases are" if len(nonzero) > 1 else "a bias is"
            raise HfError(f"{some} not zero ({nonzero[0]}): stackwise-dsl's layers have no "
                          "bias, so the model would not compute the same function")  # fmt: skip
    if not tied:
        shared["head.weight"] = get("lm_head.weight")
    fp32 = {k: v.detach().float().contiguous().clone() for k, v in shared.items()}
    return fp32, [{k: v.detach().float().contiguous().clone() for k, v in layer.items()}
                  for layer in out]  # fmt: skip
