"""Hugging Face layouts: which plans map onto an architecture transformers knows, and how our
weights are named there.

Two families: Llama (RMSNorm, RoPE, SwiGLU, MHA or GQA, causal) and GPT-2 (LayerNorm, learned
positions, GELU, MHA, causal). A plan maps when every block is alike (transformers' configs
have one layer shape) and nothing in it lies outside the family; `fit` says which family and,
when none fits, every reason. No torch here: `sw plan` and `sw check` may ask.

RoPE: ours rotates the pairs (i, i + head_dim/2), the half-split layout transformers' Llama
uses (`rotate_half`), so q and k are written as they are; Meta's original checkpoints
interleave the pairs (i, i+1) and would need their rows permuted.
"""

from __future__ import annotations

import attrs

from stackwise_dsl.ir.enums import Head, Mode, Norm
from stackwise_dsl.lower import plan as p

LLAMA = "llama"
GPT2 = "gpt2"


class HfError(Exception):
    """A model that cannot go to or come from a Hugging Face directory, with the reasons."""


@attrs.frozen
class Fit:
    """The family a plan's model maps onto (None when it maps onto none) and why not."""

    family: str | None
    reasons: tuple[str, ...]


def rack_blocks(plan: p.Plan, stage: p.Stage) -> list[tuple[int, int, p.Block]]:
    """(stack position, block index, block) for every block of `stage`'s model, input to
    head: the layers of a Hugging Face model, in order."""
    return [(part.position, i, b) for part in stage.parts
            for i, b in enumerate(plan.stacks[part.position].blocks)]  # fmt: skip


def fit(plan: p.Plan, stage: p.Stage) -> Fit:
    """Whether the model `stage` ends with maps onto Llama or GPT-2, and every reason it
    does not."""
    m = plan.model
    common: list[str] = []
    objectives = {type(s.objective).__name__ for s in plan.stages[: stage.number]}
    if objectives - {"Clm"}:
        kinds = ", ".join(sorted(_OBJECTIVE[k] for k in objectives - {"Clm"}))
        common.append(f"it trains with {kinds}: transformers' causal LM classes predict the "
                      "next token only")  # fmt: skip
    if m.time is not None:
        common.append("it reads a time input (time-as-input diffusion)")
    if m.embed_dim != m.d_model and m.embedding is not None:
        common.append(f"its pretrained embedding enters through an adapter (Linear, GELU, "
                      f"Linear; embed_dim {m.embed_dim}, d_model {m.d_model})")  # fmt: skip
    elif m.embed_dim != m.d_model:
        common.append(f"its embedding is factorised (embed_dim {m.embed_dim}, d_model "
                      f"{m.d_model})")  # fmt: skip
    blocks = rack_blocks(plan, stage)
    for position, i, b in blocks:
        where = f"block {b.name!r} (stack {position}, block {i})"
        a = b.attention
        if a.latent is not None:
            common.append(f"{where} uses latent attention (MLA)")
        if a.kernel is not None:
            common.append(f"{where} uses kernel attention")
        if a.mode is not Mode.CAUSAL:
            common.append(f"{where} attends both ways (mode = {a.mode.value})")
        if b.residual_gain != 1.0:
            common.append(f"{where} scales its residual branches by {b.residual_gain:g}")
        if b.spectral_norm:
            common.append(f"{where} uses spectral norm")
    shapes = {_shape(b) for _, _, b in blocks}
    if len(shapes) > 1:
        common.append("its blocks differ in shape (" + "; ".join(sorted(map(_describe, shapes)))
                      + "): a transformers config has one layer shape")  # fmt: skip
    family, own = None, ["it has no position encoding: Llama needs RoPE (position = rope), "
                         "GPT-2 learned positions (position = learned)"]  # fmt: skip
    if isinstance(m.position, p.Rope):
        family, own = LLAMA, _llama(plan, blocks)
    if isinstance(m.position, p.LearnedPosition):
        family, own = GPT2, _gpt2(plan, blocks)
    reasons = tuple(common + own)
    return Fit(family if not reasons else None, reasons)


_OBJECTIVE = {"Mlm": "MLM", "MaskedDiffusion": "masked diffusion"}


def _shape(b: p.Block) -> tuple:
    a = b.attention
    return (a.heads, a.kv_heads, a.head_dim, type(b.ffn).__name__, b.ffn.hidden)


def _describe(shape: tuple) -> str:
    heads, kv, hd, ffn, hidden = shape
    return f"heads {heads}, kv_heads {kv}, head_dim {hd}, {ffn.lower()} {hidden}"


def _llama(plan: p.Plan, blocks) -> list[str]:
    out = []
    if plan.model.norm is not Norm.RMSNORM:
        out.append(f"Llama (chosen by position = rope) needs norm = rmsnorm, not "
                   f"{plan.model.norm.value}")  # fmt: skip
    for ffn in sorted({type(b.ffn).__name__ for _, _, b in blocks} - {"SwiGlu"}):
        out.append(f"Llama (chosen by position = rope) needs ffn = swiglu, not {ffn.lower()}")
    return out


def _gpt2(plan: p.Plan, blocks) -> list[str]:
    out = []
    m = plan.model
    if m.norm is not Norm.LAYERNORM:
        out.append(f"GPT-2 (chosen by position = learned) needs norm = layernorm, not "
                   f"{m.norm.value}")  # fmt: skip
    for ffn in sorted({type(b.ffn).__name__ for _, _, b in blocks} - {"Gelu"}):
        out.append(f"GPT-2 (chosen by position = learned) needs ffn = gelu, not {ffn.lower()}")
    for heads, kv, hd in sorted({(b.attention.heads, b.attention.kv_heads, b.attention.head_dim)
                                 for _, _, b in blocks}):  # fmt: skip
        if kv != heads:
            out.append(f"GPT-2 has no grouped-query attention (kv_heads {kv}, heads {heads})")
        if heads * hd != m.d_model:
            out.append(f"GPT-2 needs heads x head_dim = d_model ({heads} x {hd} != "
                       f"{m.d_model})")  # fmt: skip
    return out


def tied(plan: p.Plan) -> bool:
    return plan.model.head is Head.TIED
