"""Block, Stack, Rack. One head, shared by training, evaluation and sampling.

The rack creates a stack when a stage first needs it (`add_stack`): random (seeded by the
stack's position, so its weights do not depend on what ran before), a copy of a neighbour,
or the identity (output projections zeroed, so the block adds nothing at first).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm
from torch.utils.checkpoint import checkpoint

from stackwise_dsl.core.attention import Seen, make_attention
from stackwise_dsl.core.layers import Dropout, GeluFfn, SwiGluFfn, make_norm, rope_tables
from stackwise_dsl.core.seeds import generator
from stackwise_dsl.ir.enums import Head, Init
from stackwise_dsl.lower import plan as p
from stackwise_dsl.lower.dispatch import ffn_key, pick, time_key, uses

INIT_STD = 0.02

FFNS = {
    "swiglu": SwiGluFfn,
    "gelu": GeluFfn,
}


class TransformerBlock(nn.Module):
    """x + γ·attn(norm(x)), then x + γ·ffn(norm(x))."""

    def __init__(self, b: p.Block, m: p.Model, *, features: torch.Generator) -> None:
        super().__init__()
        self.norm1 = make_norm(m.norm, m.d_model)
        self.attn = make_attention(b.attention, m.d_model, features=features)
        self.norm2 = make_norm(m.norm, m.d_model)
        self.ffn = pick(FFNS, ffn_key(b), "ffn")(m.d_model, b.ffn.hidden)
        self.gain = b.residual_gain
        self.drop = Dropout(m.dropout)
        self.frozen_up = b.freeze_up_proj
        if b.spectral_norm:
            for name, layer in list(self.named_modules()):
                if isinstance(layer, nn.Linear):
                    parent, _, leaf = name.rpartition(".")
                    setattr(self.get_submodule(parent), leaf, spectral_norm(layer))

    def forward(self, x: torch.Tensor, ropes, seen: Seen | None = None) -> torch.Tensor:
        """`seen`: decoding new tokens after those the attention has read (sampling)."""
        rope = None if ropes is None else ropes[self.attn.head_dim]
        a = self.norm1(x)
        a = self.attn(a, rope) if seen is None else self.attn.decode(a, rope, seen)
        x = x + self.gain * self.drop(a)
        return x + self.gain * self.drop(self.ffn(self.norm2(x)))


class BlockStack(nn.Module):
    def __init__(self, s: p.Stack, m: p.Model, seed: int) -> None:
        super().__init__()
        features = generator(seed, "features", s.position)
        self.blocks = nn.ModuleList(TransformerBlock(b, m, features=features) for b in s.blocks)
        self.recompute = False  # a stage's `recompute` (StageModel sets it)

    def forward(self, x: torch.Tensor, ropes, seen: Seen | None = None) -> torch.Tensor:
        """`ropes`: RoPE tables by head width (None without RoPE); blocks may differ. With
        `recompute`, a block keeps only its input for the backward pass, which runs its
        forward again (torch's checkpoint replays the RNG and precision: the same numbers)."""
        recompute = self.recompute and torch.is_grad_enabled() and seen is None
        for block in self.blocks:
            if recompute:
                x = checkpoint(block, x, ropes, use_reentrant=False)
            else:
                x = block(x, ropes, seen)
        return x


class SinusoidalTime(nn.Module):
    """t in (0, 1] → a d_model vector: sinusoidal features of 1000·t through a trained
    two-layer MLP."""

    def __init__(self, d_model: int, time: p.InputTime) -> None:
        super().__init__()
        self.d_model = d_model
        self.fc1 = nn.Linear(d_model, d_model, bias=False)
        self.fc2 = nn.Linear(d_model, d_model, bias=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:  # (B,) → (B, d)
        half = self.d_model // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
        angles = (t * 1000.0)[:, None] * freqs[None, :]
        feats = torch.cat([angles.sin(), angles.cos()], dim=-1)
        if feats.shape[-1] < self.d_model:
            feats = nn.functional.pad(feats, (0, self.d_model - feats.shape[-1]))
        return self.fc2(nn.functional.silu(self.fc1(feats)))


class LearnedTime(nn.Module):
    """t in (0, 1] → a learned d_model vector per level, over `steps` discrete levels."""

    def __init__(self, d_model: int, time: p.InputTime) -> None:
        super().__init__()
        self.steps = time.num_time_steps or 1000
        self.table = nn.Embedding(self.steps, d_model)

    def forward(self, t: torch.Tensor) -> torch.Tensor:  # (B,) → (B, d)
        index = (t * self.steps).ceil().long().clamp(1, self.steps) - 1
        return self.table(index)


TIME_EMBEDDERS = {
    "sinusoidal": SinusoidalTime,
    "learned": LearnedTime,
}


class EmbeddingAdapter(nn.Module):
    """Linear, GELU, Linear: a frozen pretrained embedding (`model.embedding`) into d_model."""

    def __init__(self, embed_dim: int, d_model: int) -> None:
        super().__init__()
        self.up = nn.Linear(embed_dim, d_model)
        self.down = nn.Linear(d_model, d_model)
        for layer in (self.up, self.down):
            nn.init.zeros_(layer.bias)  # the weights are the rack's draws (_init_shared)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(nn.functional.gelu(self.up(x)))


class Rack(nn.Module):
    """embedding → the stacks that exist, in rack order → final norm → head."""

    def __init__(self, plan: p.Plan) -> None:
        super().__init__()
        m = plan.model
        self.plan, self.model = plan, m
        self.seed = plan.run.seed
        self.embed = nn.Embedding(m.vocab, m.embed_dim)
        factorized = m.embed_dim != m.d_model
        self.embed_proj = nn.Linear(m.embed_dim, m.d_model, bias=False) if factorized else None
        if uses("pretrained") and m.embedding is not None and factorized:
            self.embed_proj = EmbeddingAdapter(m.embed_dim, m.d_model)
        self.positions = None
        if isinstance(m.position, p.LearnedPosition):
            self.positions = nn.Embedding(m.context, m.d_model)
        self.time = None
        if isinstance(m.time, p.InputTime):
            embedder = pick(TIME_EMBEDDERS, time_key(m), "time embedding")
            self.time = embedder(m.d_model, m.time)
        self.drop = Dropout(m.dropout)
        self.stacks = nn.ModuleDict()
        self.norm = make_norm(m.norm, m.d_model)
        self.head = nn.Linear(m.d_model, m.vocab, bias=False) if m.head is Head.UNTIED else None
        self.rope = None
        if isinstance(m.position, p.Rope):
            head_dims = {b.attention.head_dim for s in plan.stacks for b in s.blocks}
            self.rope = {hd: rope_tables(m.context, hd, m.position.theta) for hd in head_dims}
        self._init_shared()

    # --- building ---

    def _init_shared(self) -> None:
        g = generator(self.seed, "shared")
        for _, param in sorted(self.named_parameters()):
            if param.dim() >= 2:
                nn.init.normal_(param, 0.0, INIT_STD, generator=g)

    def add_stack(self, position: int, init: Init, copy_of: Mapping | None = None) -> BlockStack:
        """Create the stack at `position`: random, the identity, or (`copy`, `middle`) a copy
        of the full-precision weights `copy_of` (its neighbour's or the trunk's middle stack's
        master, never a quantized copy)."""
        s = self.plan.stacks[position]
        stack = BlockStack(s, self.model, self.seed)
        _init_stack(stack, generator(self.seed, "stack", position), _depth(self.plan))
        if (init is Init.COPY or init is Init.MIDDLE) and copy_of is not None:
            stack.load_state_dict(dict(copy_of.items()))
        elif init is Init.IDENTITY:
            for block in stack.blocks:
                nn.init.zeros_(weight_of(block.attn.o))
                nn.init.zeros_(weight_of(block.ffn.down))
        self.stacks[str(position)] = stack
        return stack

    # --- running ---

    def embed_tokens(self, tokens: torch.Tensor, t: torch.Tensor | None = None,
                     start: int = 0) -> torch.Tensor:  # fmt: skip
        """(B, T) ids at positions start.. → (B, T, d) hidden states entering the first
        stack."""
        h = self.embed(tokens)
        if self.embed_proj is not None:
            h = self.embed_proj(h)
        if self.positions is not None:
            where = torch.arange(start, start + tokens.shape[1], device=tokens.device)
            h = h + self.positions(where)
        if self.time is not None and t is not None:
            h = h + self.time(t)[:, None, :]
        return self.drop(h)

    def run_stacks(self, h: torch.Tensor, positions) -> torch.Tensor:
        for position in positions:
            stack = self.stacks[str(position)]
            h = stack(h, self.ropes(h.device))
        return h

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        h = self.norm(h)
        weight = self.embed.weight if self.head is None else self.head.weight
        return h @ weight.t()

    def ropes(self, device: torch.device) -> dict | None:
        """The RoPE tables (cos, sin) for every head width in the model, on `device`."""
        if self.rope is None:
            return None
        for hd, (cos, sin) in self.rope.items():
            if cos.device != device:
                self.rope[hd] = (cos.to(device), sin.to(device))
        return self.rope


def _depth(plan: p.Plan) -> int:
    return sum(len(s.blocks) for s in plan.stacks)


def weight_of(linear: nn.Linear) -> nn.Parameter:
    """A linear layer's weight parameter, under a spectral-norm parametrization or not."""
    if hasattr(linear, "parametrizations"):
        return linear.parametrizations.weight.original
    return linear.weight


def _init_stack(stack: BlockStack, g: torch.Generator, depth: int) -> None:
    """N(0, 0.02) for every matrix; output projections (o, down) scaled by 1/sqrt(2·depth)."""
    outputs = {id(weight_of(b.attn.o)) for b in stack.blocks} | {
        id(weight_of(b.ffn.down)) for b in stack.blocks
    }
    out_std = INIT_STD / math.sqrt(2 * depth)
    for _, param in sorted(stack.named_parameters()):
        if param.dim() >= 2:
            std = out_std if id(param) in outputs else INIT_STD
            nn.init.normal_(param, 0.0, std, generator=g)
