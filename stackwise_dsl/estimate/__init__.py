"""Parameter counts and weight memory from the plan alone (no torch).

The counts follow the runtime's modules exactly (a test compares them with
`sum(p.numel())` of the built model): linear layers without bias, weight-only norms, an
embedding (plus a projection when it is factorized), learned positions, a time embedding,
the final norm and an untied head.
"""

from __future__ import annotations

from collections import Counter

import attrs

from stackwise_dsl.ir.enums import Head, TimeEmbedding
from stackwise_dsl.lower import plan as p


def shapes(b: p.Block, d_model: int) -> dict[str, tuple[int, int]]:
    """(in, out) of every linear layer of a block, by the name the runtime gives it."""
    a = b.attention
    inner, kv = a.heads * a.head_dim, a.kv_heads * a.head_dim
    out: dict[str, tuple[int, int]] = {}
    if a.latent is not None:
        q_rank, kv_rank = a.latent.q_rank, a.latent.kv_rank
        out |= {"q_down": (d_model, q_rank), "q": (q_rank, inner)}
        out |= {"kv_down": (d_model, kv_rank), "k": (kv_rank, kv), "v": (kv_rank, kv)}
    else:
        out |= {"q": (d_model, inner), "k": (d_model, kv), "v": (d_model, kv)}
    out["o"] = (inner, d_model)
    hidden = b.ffn.hidden
    if isinstance(b.ffn, p.SwiGlu):
        out["gate"] = (d_model, hidden)
    out |= {"up": (d_model, hidden), "down": (hidden, d_model)}
    return out


def block_params(b: p.Block, d_model: int) -> int:
    """Weights of one block: its linear layers and two norms."""
    return sum(i * o for i, o in shapes(b, d_model).values()) + 2 * d_model


def stack_params(s: p.Stack, d_model: int) -> int:
    return sum(block_params(b, d_model) for b in s.blocks)


def lora_params(lora: p.Lora, s: p.Stack, d_model: int) -> int:
    """A LoRA adapter over the stack's targeted layers: rank x (in + out) each."""
    names = {t.value for t in lora.targets}
    total = 0
    for b in s.blocks:
        layers = shapes(b, d_model).items()
        total += sum(lora.rank * (i + o) for name, (i, o) in layers if name in names)
    return total


def shared_params(m: p.Model) -> dict[str, int]:
    """Embedding, positions, time embedding, final norm and head."""
    out = {"embedding": m.vocab * m.embed_dim}
    if m.embed_dim != m.d_model:  # a projection to d_model; a pretrained embedding's adapter
        d = m.d_model
        out["projection"] = m.embed_dim * d + (d + d * d + d if m.embedding else 0)
    if isinstance(m.position, p.LearnedPosition):
        out["positions"] = m.context * m.d_model
    embedding = m.time.embedding if m.time is not None else None
    if embedding is TimeEmbedding.SINUSOIDAL:
        out["time"] = 2 * m.d_model * m.d_model
    elif embedding is TimeEmbedding.LEARNED:
        out["time"] = (m.time.num_time_steps or 1000) * m.d_model
    out["final_norm"] = m.d_model
    if m.head is Head.UNTIED:
        out["head"] = m.d_model * m.vocab
    return out


@attrs.frozen(kw_only=True)
class StageCount:
    """What exists and what trains in one stage."""

    total: int  # weights that exist (base weights and adapters)
    trainable: int
    adapters: int  # LoRA weights that exist
    by_precision: dict[str, int]  # base stack weights that exist, by precision
    weight_bytes: int  # memory of every weight, in its precision (adapters and shared in fp32)


_HEAD_SIDE = ("final_norm", "head")


def trainable_shared(m: p.Model, stage: p.Stage) -> int:
    """The shared weights that train this stage: the input side's (a pretrained embedding
    stays frozen; its adapter trains), the head side's."""
    parts = shared_params(m)
    head_side = sum(v for k, v in parts.items() if k in _HEAD_SIDE)
    frozen = parts["embedding"] if m.embedding else 0
    return (sum(parts.values()) - head_side - frozen) * stage.train_input + (
        head_side * stage.train_head
    )


def stage_count(plan: p.Plan, stage: p.Stage) -> StageCount:
    d = plan.model.d_model
    shared = sum(shared_params(plan.model).values())
    trainable = trainable_shared(plan.model, stage)
    by_precision: Counter[str] = Counter()
    adapters = 0
    weight_bits = 32 * shared
    for part in stage.parts:
        stack = plan.stacks[part.position]
        base = stack_params(stack, d)
        by_precision[part.precision.value] += base
        weight_bits += base * part.precision.bits
        own = _adapters(stack, part, d)
        adapters += own
        weight_bits += 32 * own
        if part.trains is p.Trains.FULL:
            trainable += base
        if part.role is p.Role.TRUNK and part.trains is not p.Trains.NOTHING:
            trainable += own  # a new stack's own adapter waits, at zero, until it is trunk
    return StageCount(
        total=shared + sum(by_precision.values()) + adapters,
        trainable=trainable,
        adapters=adapters,
        by_precision=dict(by_precision),
        weight_bytes=int(weight_bits // 8),
    )


def _adapters(stack: p.Stack, part: p.Part, d_model: int) -> int:
    total = lora_params(stack.stack_lora, stack, d_model) if stack.stack_lora else 0
    if part.trunk_lora is not None:
        total += lora_params(part.trunk_lora, stack, d_model)
    return total


def final_params(plan: p.Plan) -> int:
    """Base weights of the finished model (no adapters)."""
    d = plan.model.d_model
    return sum(shared_params(plan.model).values()) + sum(stack_params(s, d) for s in plan.stacks)
