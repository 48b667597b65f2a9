"""Pure functions of IR values that checks and lowering share: per-stack LoRA ranks, layer
shapes, default sizes, walking every node. (Facts about a whole spec: ir/facts.py.)"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import attrs

from stackwise_dsl.ir import nodes as n
from stackwise_dsl.ir.enums import Pattern, Target

MASK, EOS = "<mask>", "<eos>"  # the special tokens, in the order a tokenizer appends them


def ffn_hidden(ffn: n.Ffn, d_model: int) -> int:
    """The ffn width: as given, or 4·d for gelu and 8/3·d rounded up to a multiple of 64 for
    swiglu (the same parameter count as a 4·d gelu)."""
    if ffn.hidden is not None:
        return ffn.hidden
    if isinstance(ffn, n.Gelu):
        return 4 * d_model
    return 64 * math.ceil(8 * d_model / 3 / 64)


def head_dim(attn: n.Attention, d_model: int) -> int:
    return d_model // attn.heads if attn.heads > 0 else 0


def layer_shapes(block: n.Block, d_model: int) -> dict[Target, tuple[int, int]]:
    """(in, out) features of each LoRA-adaptable layer of a block. MLA adapts its
    up-projections (latent → heads); gelu has no gate."""
    a = block.attention
    kv_out = a.kv_heads * head_dim(a, d_model)
    shapes = {Target.Q: (d_model, d_model), Target.K: (d_model, kv_out)}
    shapes[Target.V] = (d_model, kv_out)
    if a.latent is not None:
        shapes[Target.Q] = (a.latent.q_rank, d_model)
        shapes[Target.K] = (a.latent.kv_rank, kv_out)
        shapes[Target.V] = (a.latent.kv_rank, kv_out)
    shapes[Target.O] = (d_model, d_model)
    hidden = ffn_hidden(block.ffn, d_model)
    if isinstance(block.ffn, n.SwiGlu):
        shapes[Target.GATE] = (d_model, hidden)
    shapes[Target.UP] = (d_model, hidden)
    shapes[Target.DOWN] = (hidden, d_model)
    return shapes


def lora_rank(lora: n.Lora, k: int) -> int:
    """Rank of the adapter on the k-th stack created (1-based), per the pattern or table."""
    if isinstance(lora.rank, tuple):  # a short table repeats its last value (SW409 reports it)
        return lora.rank[min(k, len(lora.rank)) - 1] if lora.rank else 0
    r = lora.rank
    doublings = min(k - 1, 62)  # beyond 2**62 every layer is far exceeded anyway
    if lora.pattern is Pattern.INCREASING:
        return r * 2**doublings
    if lora.pattern is Pattern.DECREASING:
        return max(1, r // 2**doublings)
    if lora.pattern is Pattern.LINEAR:
        return r * k
    return r


def lora_alpha(lora: n.Lora, k: int) -> float:
    """Alpha of the k-th stack's adapter. A table is read as is; a single alpha fixes the
    scale alpha/rank of the first stack, which later stacks keep; no alpha means alpha = rank."""
    if isinstance(lora.alpha, tuple):
        return lora.alpha[min(k, len(lora.alpha)) - 1] if lora.alpha else 0.0
    rank = lora_rank(lora, k)
    if lora.alpha is None:
        return float(rank)
    first = lora_rank(lora, 1)
    return lora.alpha * rank / first if first else 0.0


def objectives(spec: n.Spec) -> Iterator[n.Objective]:
    """The spec's objective, then every stage setting's own."""
    yield spec.objective
    for s in (spec.grow.settings, *(o.settings for o in spec.grow.overrides), spec.fuse):
        if s is not None and s.objective is not None:
            yield s.objective


def uses_eos(data: n.Data) -> bool:
    """Whether documents end with `<eos>`: as `eos` says, else for corpora of many documents
    (stdlib, synthetic, jsonl) and not for text files, which are read as one text."""
    if data.eos is not None:
        return data.eos
    return not isinstance(data.source, n.TextFiles)


def specials(spec: n.Spec) -> tuple[str, ...]:
    """The special tokens a spec's tokenizer carries: `<mask>` when an objective masks (MLM,
    masked diffusion), `<eos>` when documents end with it; none for a CLM on one text."""
    masks = any(not isinstance(o, n.Clm) for o in objectives(spec))
    return (MASK,) * masks + (EOS,) * uses_eos(spec.data)


def tokenizer_vocab(spec: n.Spec) -> int | None:
    """Vocabulary the spec's tokenizer makes, specials included; None when the data decides."""
    tok = spec.data.tokenizer
    if isinstance(tok, n.Bytes):
        return 256 + len(specials(spec))
    if isinstance(tok, n.Bpe):
        return tok.vocab
    return None


def all_nodes(obj: Any) -> Iterator[Any]:
    """Every IR or syntax node reachable from `obj`, depth first, parents before children
    (tuples are walked). Iterative: a let of a thousand terms is a tree a thousand deep."""
    todo = [obj]
    while todo:
        x = todo.pop()
        if isinstance(x, tuple):
            todo.extend(reversed(x))
        elif attrs.has(type(x)):
            yield x
            fields = [f for f in attrs.fields(type(x)) if f.name not in ("span", "spans")]
            todo.extend(getattr(x, f.name) for f in reversed(fields))
