#!/usr/bin/env python3
"""Train specs/diffusion.sw stage by stage: a script compiled by stackwise-dsl 0.1.0.

It trains exactly what `sw run` trains, into the same run directory; `--sample` samples from it.

    python train.py [--run-dir DIR] [--max-steps N] [--resume DIR] [--device cpu|cuda|auto]
    torchrun --nproc-per-node N train.py ...   (N processes, each a slice of every batch)

Top to bottom: the configuration (the resolved plan), the model, the objective and the data, the
loop, the harness, then `main`; the code is stackwise-dsl's own, the parts this spec needs.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import ctypes.util
import dataclasses
import datetime
import enum
import functools
import hashlib
import json
import logging
import math
import os
import shutil
import stat
import sys
import sysconfig
import tempfile
import time
import types
import typing
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors import SafetensorError
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm
from torch.utils.checkpoint import checkpoint

# --- configuration -------------------------------------------------------------------------
# The resolved plan. A comment says where the values on its line came from: a line of SPEC_TEXT,
# `--set NAME`, a `default`, or `derived` from others. A value left out is None.
# fmt: off
TRUNK_LORA_3 = {  # line 24
    "rank": 2, "alpha": 4.0,  # derived: the rank pattern
    "dropout": 0.0, "targets": ["q", "k", "v", "o", "gate", "up", "down"],  # default
}
TRUNK_LORA_2 = {  # line 24
    "rank": 4, "alpha": 8.0,  # derived: the rank pattern
    "dropout": 0.0, "targets": ["q", "k", "v", "o", "gate", "up", "down"],  # default
}
TRUNK_LORA = {  # line 24
    "rank": 8, "alpha": 16.0,  # line 24
    "dropout": 0.0, "targets": ["q", "k", "v", "o", "gate", "up", "down"],  # default
}
STACK_LORA = {  # line 23
    "rank": 16, "alpha": 32.0,  # line 23
    "dropout": 0.0, "targets": ["q", "k", "v", "o", "gate", "up", "down"],  # default
}
OBJECTIVE = {  # line 18
    "kind": "MaskedDiffusion", "time": {"kind": "DepthTime"},  # line 18
    "mask": {"kind": "LinearSchedule", "start": 0.9, "end": 0.15},  # line 18
}
PARTS_2 = {  # line 24
    "position": 2, "role": "trunk", "mask_ratio": 0.4,  # derived
    "trains": "nothing", "precision": "nf4",  # line 24
    "trunk_lora": TRUNK_LORA_2,
}
PARTS = {  # line 24
    "position": 3, "role": "trunk", "mask_ratio": 0.15000000000000002,  # derived
    "trains": "nothing", "precision": "nf4",  # line 24
    "trunk_lora": TRUNK_LORA,
}
BLOCK_DENOISER = {  # line 11
    "name": "denoiser",  # line 11
    "attention": {  # line 12
        "heads": 4, "kv_heads": 2, "mode": "bidirectional",  # line 12
        "head_dim": 32,  # derived: d_model / heads
    },
    "ffn": {"kind": "SwiGlu", "hidden": 512},  # line 13
    "residual_gain": 1.0, "spectral_norm": False, "freeze_up_proj": False,  # default
}
PLAN = {
    "name": "diffusion",  # derived: the spec's file name
    "model": {  # line 9
        "vocab": 258, "embed_dim": 128,  # derived
        "d_model": 128, "context": 64, "norm": "rmsnorm",  # line 9
        "position": {"kind": "Rope", "theta": 10000.0}, "head": "tied",  # line 9
        "dropout": 0.0,  # default
    },
    "stacks": [  # derived
        {  # line 16
            "position": 0, "blocks": [BLOCK_DENOISER, BLOCK_DENOISER], "created_in": 4,  # derived
            "name": "s",  # line 20
            "stack_lora": STACK_LORA,
        },
        {  # line 16
            "position": 1, "blocks": [BLOCK_DENOISER, BLOCK_DENOISER], "created_in": 3,  # derived
            "name": "s",  # line 20
            "stack_lora": STACK_LORA,
        },
        {  # line 16
            "position": 2, "blocks": [BLOCK_DENOISER, BLOCK_DENOISER], "created_in": 2,  # derived
            "name": "s",  # line 20
            "stack_lora": STACK_LORA,
        },
        {  # line 16
            "position": 3, "blocks": [BLOCK_DENOISER, BLOCK_DENOISER], "created_in": 1,  # derived
            "name": "s",  # line 20
            "stack_lora": STACK_LORA,
        },
    ],
    "stages": [  # derived
        {  # line 20
            "number": 1, "kind": "grow", "mask_ratio": 0.15000000000000002,  # derived
            "init": "random", "train_input": True, "train_head": True,  # derived
            "merge_adapters": False,  # derived
            "steps": 150,  # line 21
            "objective": OBJECTIVE,
            "parts": [  # derived
                {  # line 23
                    "position": 3, "role": "new", "trains": "full",  # derived
                    "mask_ratio": 0.15000000000000002,  # derived
                    "precision": "fp32",  # line 23
                },
            ],
            "cache": "off", "recompute": False,  # default
            "lr": 0.001, "adapter_lr": 0.001, "embedding_lr": 0.001,  # line 30
        },
        {  # line 20
            "number": 2, "kind": "grow", "mask_ratio": 0.4, "init_from": 3,  # derived
            "train_input": False, "train_head": False, "merge_adapters": False,  # derived
            "steps": 150,  # line 21
            "objective": OBJECTIVE,
            "parts": [  # derived
                {  # line 23
                    "position": 2, "role": "new", "trains": "full", "mask_ratio": 0.4,  # derived
                    "precision": "fp32",  # line 23
                },
                PARTS,
            ],
            "init": "copy",  # line 22
            "cache": "off", "recompute": False,  # default
            "lr": 0.001, "adapter_lr": 0.001, "embedding_lr": 0.001,  # line 30
        },
        {  # line 20
            "number": 3, "kind": "grow", "mask_ratio": 0.65, "init_from": 2,  # derived
            "train_input": False, "train_head": False, "merge_adapters": False,  # derived
            "steps": 150,  # line 21
            "objective": OBJECTIVE,
            "parts": [  # derived
                {  # line 23
                    "position": 1, "role": "new", "trains": "full", "mask_ratio": 0.65,  # derived
                    "precision": "fp32",  # line 23
                },
                PARTS_2, PARTS,
            ],
            "init": "copy",  # line 22
            "cache": "off", "recompute": False,  # default
            "lr": 0.001, "adapter_lr": 0.001, "embedding_lr": 0.001,  # line 30
        },
        {  # line 20
            "number": 4, "kind": "grow", "mask_ratio": 0.9, "init_from": 1,  # derived
            "train_input": False, "train_head": False, "merge_adapters": False,  # derived
            "steps": 150,  # line 21
            "objective": OBJECTIVE,
            "parts": [  # derived
                {  # line 23
                    "position": 0, "role": "new", "trains": "full", "mask_ratio": 0.9,  # derived
                    "precision": "fp32",  # line 23
                },
                {  # line 24
                    "position": 1, "role": "trunk", "mask_ratio": 0.65,  # derived
                    "trains": "nothing", "precision": "nf4",  # line 24
                    "trunk_lora": TRUNK_LORA_3,
                },
                PARTS_2, PARTS,
            ],
            "init": "copy",  # line 22
            "cache": "off", "recompute": False,  # default
            "lr": 0.001, "adapter_lr": 0.001, "embedding_lr": 0.001,  # line 30
        },
        {  # line 27
            "number": 5, "kind": "fuse", "train_input": False, "train_head": False,  # derived
            "steps": 100, "lr": 0.0001, "adapter_lr": 0.0001, "embedding_lr": 0.0001,  # line 27
            "objective": OBJECTIVE,
            "parts": [  # derived
                {  # line 27
                    "position": 0, "role": "trunk", "mask_ratio": 0.9,  # derived
                    "trains": "adapters",  # line 27
                    "precision": "nf4",  # line 24
                    "trunk_lora": {  # line 24
                        "rank": 1, "alpha": 2.0,  # derived: the rank pattern
                        "dropout": 0.0,  # default
                        "targets": ["q", "k", "v", "o", "gate", "up", "down"],  # default
                    },
                },
                {  # line 27
                    "position": 1, "role": "trunk", "mask_ratio": 0.65,  # derived
                    "trains": "adapters",  # line 27
                    "precision": "nf4",  # line 24
                    "trunk_lora": TRUNK_LORA_3,
                },
                {  # line 27
                    "position": 2, "role": "trunk", "mask_ratio": 0.4,  # derived
                    "trains": "adapters",  # line 27
                    "precision": "nf4",  # line 24
                    "trunk_lora": TRUNK_LORA_2,
                },
                {  # line 27
                    "position": 3, "role": "trunk", "mask_ratio": 0.15000000000000002,  # derived
                    "trains": "adapters",  # line 27
                    "precision": "nf4",  # line 24
                    "trunk_lora": TRUNK_LORA,
                },
            ],
            "init": "random", "cache": "off", "merge_adapters": False,  # default
            "recompute": False,  # default
        },
    ],
    "data": {  # line 29
        "source": {"kind": "Stdlib"}, "tokenizer": {"kind": "Bytes"}, "batch": 16,  # line 29
        "seq_len": 64, "specials": ["<mask>", "<eos>"],  # derived
        "validation": 0.05, "split": "interleaved", "windows": "fixed",  # default
    },
    "optimizer": {  # line 30
        "method": {"kind": "AdamW", "betas": [0.9, 0.999], "eps": 1e-08},  # line 30, others default
        "weight_decay": 0.1, "warmup": 20, "clip": 1.0,  # line 30
        "schedule": "cosine", "min_lr": 0.0, "accumulate": 1,  # default
    },
    "run": {  # line 31
        "seed": 0, "log_every": 10, "eval_every": 50, "checkpoint_every": 100,  # line 31
        "device": "auto", "eval_batches": 8, "tensorboard": False, "distributed": "ddp",  # default
        "dir": "runs/diffusion",  # derived: runs/ and the spec's name
    },
}
# fmt: on


# --- the model -----------------------------------------------------------------------------------


class SelfAttention(nn.Module):
    """Dense attention: MHA, GQA and MQA (kv_heads < heads share key/value heads), through
    scaled_dot_product_attention."""

    def __init__(
        self,
        a: Attention,
        d_model: int,
        *,
        features: torch.Generator | None,
    ) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = a.heads, a.kv_heads, a.head_dim
        self.causal = a.mode is Mode.CAUSAL
        self._projections(a, d_model, a.heads * a.head_dim, a.kv_heads * a.head_dim)
        self.o = nn.Linear(a.heads * a.head_dim, d_model, bias=False)

    def _projections(self, a: Attention, d_model: int, inner: int, kv: int) -> None:
        self.q = nn.Linear(d_model, inner, bias=False)
        self.k = nn.Linear(d_model, kv, bias=False)
        self.v = nn.Linear(d_model, kv, bias=False)

    def _inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the query and the key/value projections read."""
        return x, x

    def forward(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None
    ) -> torch.Tensor:
        bsz, t, _ = x.shape
        q_in, kv_in = self._inputs(x)
        q = self.q(q_in).view(bsz, t, self.heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k = (
            self.k(kv_in).view(bsz, t, self.kv_heads, self.head_dim).transpose(1, 2)
        )  # (B, KV, T, hd)
        v = self.v(kv_in).view(bsz, t, self.kv_heads, self.head_dim).transpose(1, 2)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        y = self._mix(q, k, v)
        return self.o(y.transpose(1, 2).reshape(bsz, t, self.heads * self.head_dim))

    def _mix(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(
            q, k, v, is_causal=self.causal, enable_gqa=self.kv_heads != self.heads
        )

    # --- decoding: new tokens after those already seen (sampling) ---

    def decode(self, x: torch.Tensor, rope, seen: Seen) -> torch.Tensor:
        """What `forward` gives at the new tokens x (B, T, d) of a sequence whose first
        `seen.offset` tokens this module has already read, keeping what it needs of them in
        `seen`: their keys and values (MHA, GQA), their shared kv latent (MLA), or running
        sums of constant size (kernel attention)."""
        bsz, t, _ = x.shape
        q_in, kv_in = self._inputs(x)
        q = self.q(q_in).view(bsz, t, self.heads, self.head_dim).transpose(1, 2)
        at = None if rope is None else tuple(r[seen.offset :] for r in rope)
        if at is not None:
            q = apply_rope(q, *at)
        y = self._attend(q, kv_in, rope, at, seen.of(self), seen.offset)
        return self.o(y.transpose(1, 2).reshape(bsz, t, self.heads * self.head_dim))

    def _heads(self, z: torch.Tensor) -> torch.Tensor:
        return z.view(z.shape[0], z.shape[1], self.kv_heads, self.head_dim).transpose(1, 2)

    def _attend(self, q, kv_in, rope, at, state: dict, offset: int) -> torch.Tensor:
        k, v = self._heads(self.k(kv_in)), self._heads(self.v(kv_in))
        if at is not None:
            k = apply_rope(k, *at)
        if "k" in state:
            k, v = torch.cat([state["k"], k], dim=2), torch.cat([state["v"], v], dim=2)
        state["k"], state["v"] = k, v
        return self._softmax(q, k, v, offset)

    def _softmax(self, q, k, v, offset: int) -> torch.Tensor:
        """Queries at positions offset.. over keys 0..; causal: each sees those up to itself."""
        t, total = q.shape[2], k.shape[2]
        mask = None
        if self.causal and t > 1:
            mask = torch.ones(t, total, dtype=torch.bool, device=q.device).tril(diagonal=offset)
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, enable_gqa=self.kv_heads != self.heads
        )


@dataclasses.dataclass
class Seen:
    """What the attention modules keep of a sequence while it is decoded token by token:
    `offset` tokens read so far (the sampler moves it on after each call), and each
    module's own state, by module."""

    offset: int = 0
    states: dict = dataclasses.field(default_factory=dict)

    def of(self, module: nn.Module) -> dict:
        return self.states.setdefault(id(module), {})


ATTENTIONS = {
    "dense": SelfAttention,
}


def make_attention(
    a: Attention, d_model: int, *, features: torch.Generator | None
) -> SelfAttention:
    """The attention module of a block, by kind (see `attention_key`)."""
    kind = pick(ATTENTIONS, attention_key(a), "attention kind")
    return kind(a, d_model, features=features)


def make_norm(kind: Norm, d_model: int) -> nn.Module:
    if kind is Norm.RMSNORM:
        return nn.RMSNorm(d_model, eps=1e-6)
    return nn.LayerNorm(d_model, eps=1e-5, bias=False)


def rope_tables(context: int, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of every (position, frequency), each (context, head_dim)."""
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    angles = torch.outer(torch.arange(context, dtype=torch.float64), freqs)  # (T, hd/2)
    angles = torch.cat([angles, angles], dim=-1)  # (T, hd)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (i, i + hd/2) of x (B, H, T, hd) by position."""
    t = x.shape[-2]
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos[:t].to(x.dtype) + rotated * sin[:t].to(x.dtype)


class SwiGluFfn(nn.Module):
    """down(silu(gate(x)) * up(x))"""

    def __init__(self, d_model: int, hidden: int) -> None:
        super().__init__()
        self.gate = nn.Linear(d_model, hidden, bias=False)
        self.up = nn.Linear(d_model, hidden, bias=False)
        self.down = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Dropout(nn.Dropout):
    """torch's dropout, except on one of several processes sharing a micro-batch (`rows`:
    the micro-batch's window count and this process's rows): there it draws the mask of the
    whole micro-batch, as one process would, and keeps its own rows, so N processes compute
    one process's numbers and leave the random generator where one process leaves it."""

    rows: tuple[int, slice] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rows is None or not self.training or self.p == 0:
            return super().forward(x)
        n, mine = self.rows
        # what F.dropout does on the CPU: a Bernoulli(1 - p) mask over the input's shape
        # (here the whole micro-batch's), divided by 1 - p, times the input
        keep = torch.empty((n, *x.shape[1:]), dtype=x.dtype, device=x.device)
        keep.bernoulli_(1 - self.p).div_(1 - self.p)
        return x * keep[mine]


def share_dropout(model: nn.Module, n: int, mine: slice) -> None:
    """Every dropout in `model` draws whole micro-batches of `n` windows and keeps the rows
    `mine` (one process of several); LoRA's dropouts (peft's nn.Dropout) become such too."""
    for module in list(model.modules()):
        lora = getattr(module, "lora_dropout", None)
        if isinstance(lora, nn.ModuleDict):
            for name, d in list(lora.items()):
                if type(d) is nn.Dropout:
                    lora[name] = Dropout(d.p)
    for module in model.modules():
        if isinstance(module, Dropout):
            module.rows = (n, mine)


def derive(seed: int, *names) -> int:
    """A 63-bit seed for (seed, *names), stable across Python versions and machines."""
    text = "\x1f".join([str(seed), *map(str, names)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def generator(seed: int, *names) -> torch.Generator:
    return torch.Generator().manual_seed(derive(seed, *names))


INIT_STD = 0.02


FFNS = {
    "swiglu": SwiGluFfn,
}


class TransformerBlock(nn.Module):
    """x + γ·attn(norm(x)), then x + γ·ffn(norm(x))."""

    def __init__(self, b: Block, m: Model, *, features: torch.Generator) -> None:
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
    def __init__(self, s: Stack, m: Model, seed: int) -> None:
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


class Rack(nn.Module):
    """embedding → the stacks that exist, in rack order → final norm → head."""

    def __init__(self, plan: Plan) -> None:
        super().__init__()
        m = plan.model
        self.plan, self.model = plan, m
        self.seed = plan.run.seed
        self.embed = nn.Embedding(m.vocab, m.embed_dim)
        factorized = m.embed_dim != m.d_model
        self.embed_proj = nn.Linear(m.embed_dim, m.d_model, bias=False) if factorized else None
        self.positions = None
        self.time = None
        self.drop = Dropout(m.dropout)
        self.stacks = nn.ModuleDict()
        self.norm = make_norm(m.norm, m.d_model)
        self.head = nn.Linear(m.d_model, m.vocab, bias=False) if m.head is Head.UNTIED else None
        self.rope = None
        if isinstance(m.position, Rope):
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


def _depth(plan: Plan) -> int:
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


class Word(enum.Enum):
    """An enum whose values are the words written in a spec."""

    def __str__(self) -> str:
        return self.value


class Norm(Word):
    RMSNORM = "rmsnorm"
    LAYERNORM = "layernorm"


class Head(Word):
    TIED = "tied"
    UNTIED = "untied"


class Mode(Word):
    BIDIRECTIONAL = "bidirectional"
    CAUSAL = "causal"


class KernelKind(Word):
    LINEAR = "linear"
    GAUSSIAN = "gaussian"
    LAPLACIAN = "laplacian"
    UNIFORM = "uniform"


class Init(Word):
    RANDOM = "random"
    COPY = "copy"  # the trunk neighbour's weights
    IDENTITY = "identity"  # the identity map (LLaMA-Pro)
    MIDDLE = "middle"  # the trunk's middle stack's weights (MIDAS)
    PRETRAINED = "pretrained"  # the next layers of model.pretrained


class Cache(Word):
    OFF = "off"
    MEMORY = "memory"
    DISK = "disk"


class Precision(Word):
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"
    INT8 = "int8"
    NF4 = "nf4"
    FP4 = "fp4"
    NVFP4 = "nvfp4"

    @property
    def quantized(self) -> bool:
        """Quantized formats hold frozen weights only; adapters train on top of them."""
        return self in (Precision.INT8, Precision.NF4, Precision.FP4, Precision.NVFP4)

    @property
    def bits(self) -> float:
        """Storage bits per parameter, block scales included (nf4 with double quantization)."""
        return _BITS[self]


_BITS = {
    Precision.FP32: 32.0,
    Precision.BF16: 16.0,
    Precision.FP16: 16.0,
    Precision.INT8: 8.0,
    Precision.NF4: 4.127,
    Precision.FP4: 4.5,  # no double quantization: an fp32 absmax per 64 values
    Precision.NVFP4: 4.5,
}


class Target(Word):
    """Layers a LoRA adapter can wrap: attention projections and ffn projections."""

    Q = "q"
    K = "k"
    V = "v"
    O = "o"  # noqa: E741
    GATE = "gate"
    UP = "up"
    DOWN = "down"


class TimeEmbedding(Word):
    SINUSOIDAL = "sinusoidal"
    LEARNED = "learned"
    NONE = "none"


class Split(Word):
    """Which windows are held out for validation."""

    INTERLEAVED = "interleaved"  # spread evenly through the data
    TAIL = "tail"  # the last fraction of the data, as nanoGPT splits


class Windows(Word):
    """Which windows training reads."""

    FIXED = "fixed"  # the text cut into windows, visited in a seeded order each epoch
    RANDOM = "random"  # windows at random offsets of the training text, drawn with replacement


class LrSchedule(Word):
    COSINE = "cosine"
    LINEAR = "linear"
    CONSTANT = "constant"


class Device(Word):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


class Distributed(Word):
    """How processes share a run (`sw run --nproc N`): each holds the whole model and the
    gradients are averaged (DDP), or the weights that can be are sharded (FSDP2)."""

    DDP = "ddp"
    FSDP = "fsdp"


class _Dequantized(torch.autograd.Function):
    """y = x Wᵀ with W rebuilt from its stored form in the forward pass and again in the
    backward pass, so autograd keeps no full-precision copy of a frozen weight alive between
    them (the gradient flows to x only; frozen weights get none)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, layer: nn.Module) -> torch.Tensor:
        ctx.layer = layer
        return F.linear(x, layer.weight.to(x.dtype))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad @ ctx.layer.weight.to(grad.dtype), None


def dequantized_linear(x: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """A frozen layer whose `weight` property rebuilds the weight from compact storage."""
    if not torch.is_grad_enabled() or not x.requires_grad:
        return F.linear(x, layer.weight.to(x.dtype))
    return _Dequantized.apply(x, layer)


DTYPES = {Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16}


def compute_dtype(precision: Precision, device: torch.device) -> torch.dtype | None:
    """The autocast / storage dtype of a float precision on this device (None: fp32)."""
    if precision is Precision.FP16 and device.type != "cuda":
        return None
    return DTYPES.get(precision)


def emulated_bf16(device: torch.device) -> bool:
    """A CPU without native bf16: bf16 matmuls there are emulated, tens of times slower."""

    return device.type == "cpu" and cpu_bf16() is False


def autocast(precision: Precision, device: torch.device, *, frozen: bool = False):
    """The context a stack runs in. A frozen bf16 stack on a CPU without native bf16 runs
    in fp32 from its bf16-stored weights (see `freeze_into`), so it gets none."""
    if frozen and precision is Precision.BF16 and emulated_bf16(device):
        return contextlib.nullcontext()
    dtype = compute_dtype(precision, device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def freeze_into(module: nn.Module, precision: Precision, device: torch.device) -> None:
    """Hold a frozen module's linear layers (or all its weights) in `precision`, in place:
    quantized formats and bf16 on a CPU without native bf16 as compact layers
    (FROZEN_LINEARS), other float precisions by casting the linear layers."""
    if precision.quantized or (precision is Precision.BF16 and emulated_bf16(device)):
        for name, linear in list(module.named_modules()):
            if type(linear) is nn.Linear:
                parent, _, leaf = name.rpartition(".")
                owner = module.get_submodule(parent) if parent else module
                setattr(owner, leaf, quantized_linear(linear, precision, device))
        return
    dtype = compute_dtype(precision, device)
    if dtype is not None:  # the linear layers hold almost every weight; norms stay fp32
        for linear in module.modules():
            if isinstance(linear, nn.Linear):
                linear.to(dtype)


def quantized_linear(linear: nn.Linear, precision: Precision, device: torch.device) -> nn.Module:
    """The compact frozen layer holding `linear`'s weight in `precision`."""
    make = pick(FROZEN_LINEARS, frozen_key(precision), "frozen precision")
    return make(linear.weight.detach().float(), device)


def _nf4(weight: torch.Tensor, device: torch.device) -> nn.Module:
    return _bnb_4bit(weight, "nf4", device)


def _bnb_4bit(weight: torch.Tensor, quant_type: str, device: torch.device) -> nn.Module:
    return Packed4bitLinear(weight.to(device), quant_type)


def quiet_bitsandbytes() -> None:
    """Keep bitsandbytes' warnings off the terminal, before it is imported (by us or by peft).
    On CPUs with AVX-512 BF16 it logs at import that the optional `kernels` package is missing,
    for a GEMV kernel this runtime never uses (see Packed4bitLinear). Its errors still show."""
    logger = logging.getLogger("bitsandbytes")
    if logger.level < logging.ERROR:  # setLevel clears every logger's cache: only once
        logger.setLevel(logging.ERROR)


def import_bitsandbytes():
    """bitsandbytes, imported quietly."""
    quiet_bitsandbytes()
    import bitsandbytes

    return bitsandbytes


class Packed4bitLinear(nn.Linear):
    """A frozen linear layer in bitsandbytes' 4-bit formats (nf4 with double quantization,
    fp4; absmax per 64 values), dequantized on the fly like the other compact layers.

    It quantizes and dequantizes with bitsandbytes' functions but does not run its Linear4bit:
    on CPUs with AVX-512 BF16, Linear4bit repacks its weight at the first forward in eval mode
    for a bf16 GEMV kernel that passes no gradient to its input, computes about 0.3% away from
    the dequantized weight, and fails on widths that are not multiples of 64 (inputs) and 32
    (outputs). Here every CPU and CUDA takes one path: any width, the same weights in training
    and evaluation, and the gradient of the dequantized weight.

    The weight is quantized as one flat row: bitsandbytes 0.50's native CPU kernel
    dequantizes a matrix whose rows are not whole 64-value blocks (widths 32 and 96, say)
    with the wrong block scales on CPUs with AVX-512 (errors of the weight's own size),
    while its plain path reads the same bytes right. One row is read right by both."""

    def __init__(self, weight: torch.Tensor, quant_type: str) -> None:
        out_features, in_features = weight.shape
        super().__init__(in_features, out_features, bias=False, device="meta")
        del self.weight
        functional = import_bitsandbytes().functional
        # bitsandbytes' CPU kernel dequantizes rows of even length; for odd ones it falls
        # back to code it compiles with torch.compile per shape (seconds, and dynamo's
        # warnings), so an odd row gets a zero column, dropped again in `weight`.
        stored = F.pad(weight.float(), (0, in_features % 2)).flatten()
        packed, state = functional.quantize_4bit(
            stored, blocksize=64, quant_type=quant_type, compress_statistics=quant_type == "nf4"
        )
        self.register_buffer("packed", packed)
        self.quant_state = state

    @property
    def weight(self) -> torch.Tensor:
        functional = import_bitsandbytes().functional
        flat = functional.dequantize_4bit(self.packed, self.quant_state)
        return flat.view(self.out_features, -1)[:, : self.in_features]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dequantized_linear(x, self)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self.quant_state.to(self.packed.device)  # its tensors are not buffers
        return self


FROZEN_LINEARS = {
    "nf4": _nf4,
}


def loss_scaler(parts, device: torch.device) -> torch.amp.GradScaler:
    """Dynamic loss scaling where a stack trains in fp16 on CUDA; elsewhere the scaler is
    disabled, a pass-through (`scale` gives the loss, `step` steps): fp16 runs in fp32 on the
    CPU, and bf16 needs none."""
    fp16 = any(x.precision is Precision.FP16 and x.trains is Trains.FULL for x in parts)
    return torch.amp.GradScaler("cuda", enabled=fp16 and device.type == "cuda")


NAMES = ("stack", "trunk")


def attach(stack: nn.Module, lora: Lora, name: str, *, seed: int, position: int) -> None:
    """Inject a LoRA adapter called `name` into the stack's targeted linear layers."""
    quiet_bitsandbytes()  # peft imports bitsandbytes
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=[t.value for t in lora.targets],
        bias="none",
    )
    with warnings.catch_warnings():  # a second adapter on the same stack is intended
        warnings.simplefilter("ignore", UserWarning)
        inject_adapter_in_model(config, stack, adapter_name=name)
    g = generator(seed, "lora", name, position)
    for _, layer in sorted(lora_layers(stack).items()):
        if name not in layer.lora_A:  # a layer only the other adapter targets
            continue
        a, b = layer.lora_A[name], layer.lora_B[name]
        a.float(), b.float()  # adapters train in fp32 whatever their base layer holds
        with torch.no_grad():
            bound = math.sqrt(6.0 / ((1 + 5) * a.weight.shape[1]))  # kaiming_uniform_(a=sqrt(5))
            a.weight.copy_(torch.rand(a.weight.shape, generator=g) * 2 * bound - bound)
            b.weight.zero_()
    activate(stack)


ADAPTERS = {
    "lora": attach,
}


def _lora_layer_class() -> type | None:
    """peft's LoraLayer, if peft is loaded. Only `attach` loads it: before, no layer can be
    a LoRA layer, and a run (or a compiled script) without adapters never needs peft."""
    lora = sys.modules.get("peft.tuners.lora")
    return getattr(lora, "LoraLayer", None)


def lora_layers(stack: nn.Module) -> dict[str, nn.Module]:
    kind = _lora_layer_class()
    if kind is None:
        return {}
    return {n: m for n, m in stack.named_modules() if isinstance(m, kind)}


def activate(stack: nn.Module) -> None:
    """Every adapter a layer has takes part in its forward pass."""
    for layer in lora_layers(stack).values():
        present = [n for n in NAMES if n in layer.lora_A]
        layer.set_adapter(present)


def adapter_parameters(stack: nn.Module, name: str | None = None) -> list[nn.Parameter]:
    """The LoRA weights of a stack (of one adapter, or all)."""
    out = []
    for layer in lora_layers(stack).values():
        for adapter in (name,) if name else NAMES:
            if adapter in layer.lora_A:
                out += [layer.lora_A[adapter].weight, layer.lora_B[adapter].weight]
    return out


class StageModel(nn.Module):
    """A rack arranged for one stage, built from `store` (runtime/weights.py: the run's fp32
    masters, adapters and shared weights, as plain state dicts)."""

    def __init__(self, plan: Plan, stage: Stage, store, device: torch.device) -> None:
        super().__init__()
        self.plan, self.stage, self.device = plan, stage, device
        self.rack = Rack(plan)
        if store.shared:
            self.rack.load_state_dict(store.shared, strict=False)
        self._build_stacks(store)
        self.rack.to(device)
        _attach_adapters(self, store)
        self._mark_trainable()
        self.positions = tuple(part.position for part in stage.parts)
        for position in self.positions:
            self.stack(position).recompute = stage.recompute
        self.precision = {part.position: part.precision for part in stage.parts}
        self.frozen = {x.position: x.trains is not Trains.FULL for x in stage.parts}

    # --- building ---

    def _build_stacks(self, store) -> None:
        """One stack at a time: its master is loaded (from memory or from disk) and, if it
        does not train fully, held in its precision at once, so at most one stack is ever
        in fp32 beyond those that train."""
        for part in self.stage.parts:
            if part.position in store.stacks:
                stack = BlockStack(
                    self.plan.stacks[part.position], self.plan.model, self.plan.run.seed
                )
                stack.load_state_dict(dict(store.stacks[part.position].items()))
                self.rack.stacks[str(part.position)] = stack
                if part.trains is not Trains.FULL:
                    freeze_into(stack.to(self.device), part.precision, self.device)
        for position in self.stage.new:
            if position not in store.stacks:
                source = self.stage.init_from
                copy_of = store.stacks[source] if source is not None else None
                self.rack.add_stack(position, self.stage.init, copy_of)
                store.stacks[position] = master_state(self.rack.stacks[str(position)])
        if not store.shared:
            store.shared.update(shared_state(self.rack))

    def _mark_trainable(self) -> None:
        self.requires_grad_(False)
        for part in self.stage.parts:
            stack = self.stack(part.position)
            if part.trains is Trains.FULL and part.role is Role.TRUNK:
                stack.requires_grad_(True)
            elif part.role is Role.NEW:
                for param in base_parameters(stack):
                    param.requires_grad_(True)
            if _adapters_train(part):
                for param in adapter_parameters(stack):
                    param.requires_grad_(True)
        for param in input_parameters(self.rack):
            param.requires_grad_(self.stage.train_input)
        for param in head_parameters(self.rack):
            param.requires_grad_(self.stage.train_head or param.requires_grad)

    # --- running ---

    def stack(self, position: int) -> BlockStack:
        return self.rack.stacks[str(position)]

    def train(self, mode: bool = True) -> StageModel:
        """Training mode where something trains: frozen stacks (and a frozen input side) stay
        in eval mode, so dropout never touches what is not learning."""
        super().train(mode)
        for part in self.stage.parts:
            self.stack(part.position).train(mode and part.trains is not Trains.NOTHING)
        self.rack.drop.train(mode and self.stage.train_input)
        return self

    def hidden(self, inputs: torch.Tensor, t: torch.Tensor | None, positions=None,
               seen: Seen | None = None) -> torch.Tensor:  # fmt: skip
        """Hidden states after the given stacks (default: all of this stage's). `seen`:
        `inputs` are new tokens after `seen.offset` already read (sampling)."""
        h = self.rack.embed_tokens(inputs, t, start=0 if seen is None else seen.offset)
        return self.run(h, self.positions if positions is None else positions, seen)

    def run(self, h: torch.Tensor, positions, seen: Seen | None = None) -> torch.Tensor:
        for position in positions:
            stack = self.stack(position)
            with autocast(self.precision[position], self.device, frozen=self.frozen[position]):
                h = stack(h, self.rack.ropes(h.device), seen).float()
        return h

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.rack.logits(h)

    # --- writing back ---

    def capture(self, store) -> None:
        """Write what this stage trains back into the store (fp32)."""
        for part in self.stage.parts:
            stack = self.stack(part.position)
            if part.trains is Trains.FULL:
                store.stacks[part.position] = master_state(stack)
            if part.trains is not Trains.NOTHING:
                for name in NAMES:
                    if _has(stack, name):
                        store.adapters[(part.position, name)] = adapter_state(stack, name)
        if self.stage.train_input or self.stage.train_head:
            store.shared.clear()
            store.shared.update(shared_state(self.rack))


def _attach_adapters(model: StageModel, store) -> None:
    """Inject the adapters that train this stage or hold trained weights. An adapter that
    has never trained is exactly zero (lora_B = 0), so leaving it out changes nothing but
    the cost; its initial weights derive from the seed, whenever it is attached."""
    seed = model.plan.run.seed
    for part in model.stage.parts:
        stack = model.stack(part.position)
        trains = _adapters_train(part)
        loras = (
            ("stack", model.plan.stacks[part.position].stack_lora),
            ("trunk", part.trunk_lora),
        )
        for name, lora in loras:
            stored = store.adapters.get((part.position, name))
            if lora is None or not (trains or (stored is not None and _nonzero(stored))):
                continue
            attach = pick(ADAPTERS, adapter_key(lora), "adapter")
            attach(stack, lora, name, seed=seed, position=part.position)
            if stored is not None:
                load_adapter(stack, name, stored)
            stack.to(model.device)


def _adapters_train(part: Part) -> bool:
    """A trunk's adapters train unless the stack trains nothing this stage."""
    return part.role is Role.TRUNK and part.trains is not Trains.NOTHING


def _nonzero(state: dict[str, torch.Tensor]) -> bool:
    """Whether a stored adapter has ever changed its output (some lora_B entry is not zero)."""
    return any(bool(v.any()) for k, v in state.items() if ".lora_B." in k)


def _has(stack: BlockStack, name: str) -> bool:
    return bool(adapter_parameters(stack, name))


def base_parameters(stack: BlockStack) -> list[nn.Parameter]:
    """A stack's own weights (not its adapters)."""
    params = list(stack.parameters())
    lora = {id(x) for x in adapter_parameters(stack)}
    params = [x for x in params if id(x) not in lora]
    return params


def input_parameters(rack: Rack) -> list[nn.Parameter]:
    """Token embedding (with its projection), learned positions, time embedding; a
    pretrained embedding (`model.embedding`) is frozen: its adapter, not itself."""
    embed = rack.embed
    parts = [embed, rack.embed_proj, rack.positions, rack.time]
    return [x for m in parts if m is not None for x in m.parameters()]


def head_parameters(rack: Rack) -> list[nn.Parameter]:
    """The final norm and the head (a tied head is the input embedding, frozen when it is a
    pretrained one)."""
    head = rack.head if rack.head is not None else rack.embed
    parts = [rack.norm, head]
    return [x for m in parts if m is not None for x in m.parameters()]


_BASE = ".base_layer"  # peft's wrapping of a layer with adapters


def master_state(stack: nn.Module) -> dict[str, torch.Tensor]:
    """A live stack's base weights under plain-module names (adapters left out), in fp32."""
    out = {}
    for key, value in stack.state_dict().items():
        if ".lora_" in key:
            continue
        out[key.replace(_BASE, "")] = host_copy(full(value))
    return out


def host_copy(x: torch.Tensor) -> torch.Tensor:
    """An fp32 copy in host memory: the store's masters never take the device's memory."""
    return x.detach().to(device="cpu", dtype=torch.float32, copy=True)


def adapter_state(stack: nn.Module, name: str) -> dict[str, torch.Tensor]:
    """One adapter's weights of a live stack, under plain-module names."""
    marker = {f".lora_A.{name}.", f".lora_B.{name}."}
    out = {}
    for key, value in stack.state_dict().items():
        if any(m in key for m in marker):
            out[key.replace(_BASE, "")] = host_copy(full(value))
    return out


def load_adapter(stack: nn.Module, name: str, state: dict[str, torch.Tensor]) -> None:
    """Put stored adapter weights back into a live (peft-wrapped) stack."""
    live = {
        k.replace(_BASE, ""): k for k in stack.state_dict() if f".{name}." in k and ".lora_" in k
    }
    missing = set(live) ^ set(state)
    if missing:
        raise KeyError(f"stored adapter `{name}` does not fit this stack: {sorted(missing)[:3]}")
    stack.load_state_dict({live[k]: v for k, v in state.items()}, strict=False)


def shared_state(rack: nn.Module) -> dict[str, torch.Tensor]:
    """The rack's own weights (everything but its stacks)."""
    return {
        k: host_copy(full(v)) for k, v in rack.state_dict().items() if not k.startswith("stacks.")
    }


# --- the objective and the data ------------------------------------------------------------------


__version__ = "0.1.0"


IGNORE = -100


@dataclasses.dataclass(frozen=True)
class Batch:
    inputs: torch.Tensor  # (B, T) token ids the model reads
    targets: torch.Tensor  # (B, T) ids to predict, IGNORE elsewhere
    t: torch.Tensor | None  # (B,) time as input, else None
    ids: np.ndarray  # (B,) window ids
    ratio: float | None  # the mask ratio used (masked objectives)

    def rows(self, s: slice) -> Batch:
        """The batch of windows `s` (one rank's share)."""
        t = self.t[s] if self.t is not None else None
        return Batch(inputs=self.inputs[s], targets=self.targets[s], t=t, ids=self.ids[s],
                     ratio=self.ratio)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    mask: int | None  # None for a tokenizer without `<mask>` (a CLM's)
    ordinary: int  # random replacements draw ids below this


def noise(stage: Stage, plan: Plan, step: int) -> tuple[float | None, float | None]:
    """(mask ratio, t) for one step of a stage; t only for time as input."""
    return pick(NOISES, noise_key(stage.objective), "objective")(stage, plan, step)


def _depth_noise(stage: Stage, plan: Plan, step: int) -> tuple[float | None, float | None]:
    """The stage's depth ratio; in a fuse stage, one of the rack's ratios per step."""
    if stage.mask_ratio is not None:
        return stage.mask_ratio, None
    ratios = [part.mask_ratio for part in stage.parts]
    chosen = torch.randint(
        len(ratios), (1,), generator=generator(plan.run.seed, "depth", stage.number, step)
    )
    return ratios[int(chosen)], None


NOISES = {
    "masked_diffusion/depth": _depth_noise,
}


def make_batch(windows: torch.Tensor, ids: np.ndarray, objective: Objective, ratio, t, *,
               seed: int, vocab: Vocabulary) -> Batch:  # fmt: skip
    """The model's inputs and targets for windows (B, seq_len + 1): the next token (clm),
    or the tokens under a mask drawn per window (mlm, masked diffusion)."""
    if isinstance(objective, MaskedDiffusion):
        x = windows[:, :-1]
        draws = torch.stack(
            [torch.rand((3, x.shape[1]), generator=generator(seed, "mask", int(i))) for i in ids]
        )
        selected = draws[:, 0] < ratio
        selected[torch.arange(len(ids)), draws[:, 0].argmin(dim=1)] = True  # one per sample
        targets = torch.where(selected, x, IGNORE)
        inputs = torch.where(selected, vocab.mask, x)
        times = None if t is None else torch.full((len(ids),), float(t))
        return Batch(inputs=inputs, targets=targets, t=times, ids=ids, ratio=ratio)
    return Batch(inputs=windows[:, :-1], targets=windows[:, 1:], t=None, ids=ids, ratio=None)


def loss_of(logits_fn, h: torch.Tensor, targets: torch.Tensor,
            reduction: str = "mean") -> torch.Tensor:  # fmt: skip
    """Cross-entropy over the predicted positions (their mean, or `sum`), computing logits
    only there."""
    chosen = targets != IGNORE
    if bool(chosen.all()):
        logits = logits_fn(h.reshape(-1, h.shape[-1]))
        return F.cross_entropy(logits.float(), targets.reshape(-1), reduction=reduction)
    logits = logits_fn(h[chosen])
    return F.cross_entropy(logits.float(), targets[chosen], reduction=reduction)


class DataError(Exception):
    """Data that cannot be used, with a message that says which file, line or byte."""


_STDLIB_SKIP = {
    "test", "tests", "idlelib", "site-packages", "dist-packages", "__pycache__", "lib2to3",
    "tkinter", "turtledemo", "ensurepip", "pydoc_data",
}  # fmt: skip


def documents(source: Stdlib, seed: int) -> list[str]:
    """Every document of a source, in a fixed order."""
    docs = pick(SOURCES, source_key(source), "data source")(source, seed)
    docs = [d for d in docs if d]
    if not docs:
        raise DataError(f"the data source holds no text ({_describe(source)})")
    return docs


def _stdlib(source: Stdlib, seed: int) -> list[str]:
    return [read_document(path) for path in stdlib_files()]


def stdlib_files() -> list[str]:
    """The standard library's .py files, sorted, without tests and GUI demos."""
    root = sysconfig.get_paths()["stdlib"]
    found = []
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _STDLIB_SKIP)
        found += [os.path.join(directory, f) for f in sorted(files) if f.endswith(".py")]
    return found


def read_document(path: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path} is not UTF-8 text: byte 0x{data[e.start]:02x} at offset {e.start}"
        ) from None


def _describe(source) -> str:
    return type(source).__name__.lower()


SOURCES = {
    "stdlib": _stdlib,
}


@dataclasses.dataclass(frozen=True)
class Specials:
    """The ids of the special tokens, None for one the tokenizer does not carry."""

    mask: int | None = None
    eos: int | None = None

    @classmethod
    def after(cls, ordinary: int, names: tuple[str, ...]) -> Specials:
        """Specials `names` numbered from `ordinary` on, in order."""
        return cls(**{_FIELDS[name]: ordinary + i for i, name in enumerate(names)})

    def names(self) -> tuple[str, ...]:
        return tuple(name for name, f in _FIELDS.items() if getattr(self, f) is not None)


_FIELDS = {"<mask>": "mask", "<eos>": "eos"}  # the plan's names of the specials (ir/walk.py)


def _names(saved: dict) -> tuple[str, ...] | None:
    """The specials a saved tokenizer lists, or None when they are not a list of known names."""
    names = saved.get("specials")
    ok = isinstance(names, list) and all(isinstance(x, str) and x in _FIELDS for x in names)
    return tuple(names) if ok and len(set(names)) == len(names) else None


class Tokenizer:
    """What a run reads of a tokenizer: its size, its specials, how many ids are ordinary
    tokens (random replacements draw below it), and encode/decode."""

    vocab_size: int
    specials: Specials
    ordinary: int

    def encode(self, text: str) -> np.ndarray:
        raise NotImplementedError

    def decode(self, ids) -> str:
        raise NotImplementedError

    def saved(self) -> dict:
        """What `tokenizer_from` builds this tokenizer again from, as JSON (a run's tokenizer.json:
        sampling and evaluation need the run's exact vocabulary, not the data again)."""
        raise NotImplementedError


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes: ids 0-255, then the specials."""

    ordinary = 256  # ids below this are ordinary tokens (random replacements draw from them)

    def __init__(self, specials: tuple[str, ...]) -> None:
        self.specials = Specials.after(256, specials)
        self.vocab_size = 256 + len(specials)

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids if int(i) < 256).decode("utf-8", errors="replace")

    def saved(self) -> dict:
        return {"kind": "bytes", "specials": list(self.specials.names())}


def tokenizer_from(saved: dict, data: Data) -> Tokenizer:
    """The tokenizer `Tokenizer.saved` describes, of the plan's kind with the plan's specials
    (RESTORERS); DataError for anything else."""
    names = _names(saved) if isinstance(saved, dict) else None
    tokenizer = (
        pick(RESTORERS, tokenizer_key(data.tokenizer), "tokenizer")(saved, names)
        if names == data.specials
        else None
    )
    if tokenizer is None:
        raise DataError("the saved tokenizer is not one stackwise-dsl writes for this plan")
    return tokenizer


def _bytes_again(saved: dict, names: tuple[str, ...]) -> Tokenizer | None:
    return ByteTokenizer(names) if saved.get("kind") == "bytes" else None


def build_tokenizer(data: Data, docs: list[str], held: list[str] = ()) -> Tokenizer:
    """The tokenizer a plan's data asks for, with its specials, trained on `docs` when it
    needs to be (a BPE), or fitted to them and the validation documents `held` (chars: every
    character of both, as nanoGPT takes its characters from the whole text)."""
    pick_one = pick(TOKENIZERS, tokenizer_key(data.tokenizer), "tokenizer")
    return pick_one(data.tokenizer, docs, list(held), data.specials)


def _bytes(spec: Bytes, docs: list[str], held: list[str],
           specials: tuple[str, ...]) -> Tokenizer:  # fmt: skip
    return ByteTokenizer(specials)


TOKENIZERS = {
    "bytes": _bytes,
}


RESTORERS = {
    "bytes": _bytes_again,
}


_PHI = 0.6180339887498949


@dataclasses.dataclass(frozen=True)
class Prepared:
    tokenizer: Tokenizer
    windows: np.ndarray  # (n, seq_len + 1) int64
    train: np.ndarray  # window ids for training
    val: np.ndarray  # window ids held out
    # windows = random: the training text, whose offsets stand for training windows
    text: np.ndarray | None = None

    def train_rows(self, ids: np.ndarray) -> np.ndarray:
        """The training windows `ids` (window ids, or offsets into `text` for random windows)."""
        if self.text is None:
            return self.windows[ids]
        width = self.windows.shape[1]
        return self.text[np.asarray(ids)[:, None] + np.arange(width)]

    def starts(self) -> np.ndarray:
        """What a training stream draws from: window ids, or every offset a window of the
        training text may start at."""
        if self.text is None:
            return self.train
        return np.arange(len(self.text) - self.windows.shape[1] + 1)


def prepare(data: Data, seed: int) -> Prepared:
    """Read, tokenize, window and split the data of a plan."""
    docs = documents(data.source, seed)
    held = documents(data.validation_data, seed) if data.validation_data else []
    tokenizer = build_tokenizer(data, docs, held)
    width = data.seq_len + 1
    stream = _stream(tokenizer, docs)
    windows = _windows(stream, width, "the data")
    if data.validation_data is not None:
        extra = _windows(_stream(tokenizer, held, "the validation data "), width,
                         "the validation data")  # fmt: skip
        train = np.arange(len(windows))
        val = np.arange(len(windows), len(windows) + len(extra))
        windows = np.concatenate([windows, extra])
    else:
        train, val = split(len(windows), data.validation, data.split)
    text = None
    if data.windows is Windows.RANDOM:
        # the training windows' text: the whole stream, or what lies before the held-out tail
        # (random windows are refused with an interleaved split, SW605)
        end = len(stream) if len(val) == 0 or data.validation_data else int(val.min()) * width
        text = stream[:end]
    return Prepared(tokenizer=tokenizer, windows=windows, train=train, val=val, text=text)


def _windows(stream: np.ndarray, width: int, what: str) -> np.ndarray:
    count = len(stream) // width
    if count == 0:
        raise DataError(
            f"{what} has {len(stream)} tokens, fewer than one sequence of {width} "
            f"(seq_len {width - 1} + 1): use more text or a shorter seq_len"
        )
    return stream[: count * width].reshape(count, width)


def _stream(tokenizer: Tokenizer, docs: list[str], what: str = "") -> np.ndarray:
    """The documents' tokens, one after another, each followed by `<eos>` when the tokenizer
    has it."""
    ends = tokenizer.specials.eos
    eos = [np.array([ends], dtype=np.int64)] if ends is not None else []
    parts = []
    for doc in docs:
        try:
            parts += [tokenizer.encode(doc), *eos]
        except DataError as e:
            raise DataError(f"{what}{e}") from None
    return np.concatenate(parts)


def split(count: int, validation: float,
          how: Split = Split.INTERLEAVED) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Train and validation window ids; each non-empty when validation > 0."""
    ids = np.arange(count)
    if how is Split.TAIL:
        held = ids >= count - round(count * validation)
    else:
        held = np.modf(ids * _PHI)[0] < validation
    if validation > 0 and not held.any():
        held[-1] = True
    if validation > 0 and held.all():
        raise DataError(
            f"the data makes {count} sequence(s): too few to hold out a validation fraction "
            f"of {validation} and still train"
        )
    return ids[~held], ids[held]


class Stream:
    def __init__(self, train: np.ndarray, seed: int, per_epoch: int | None = None) -> None:
        """Over the window ids `train`; with `per_epoch`, `per_epoch` draws with replacement
        from `train` (window starts) per epoch."""
        self.train, self.seed, self.per_epoch = train, seed, per_epoch
        self.epoch, self.offset = 0, 0
        self._order = self._permutation(0)

    @classmethod
    def of(cls, data, seed: int) -> Stream:
        """The stream of a `Prepared`'s training windows."""
        if data.text is None:
            return cls(data.train, seed)
        return cls(data.starts(), seed, per_epoch=max(1, len(data.train)))

    def _permutation(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch])
        if self.per_epoch is not None:
            return self.train[rng.integers(0, len(self.train), size=self.per_epoch)]
        return self.train[rng.permutation(len(self.train))]

    def take(self, count: int) -> np.ndarray:
        """The next `count` window ids, moving into the next epoch when this one runs out."""
        out = []
        while count > 0:
            chunk = self._order[self.offset : self.offset + count]
            out.append(chunk)
            count -= len(chunk)
            self.offset += len(chunk)
            if self.offset >= len(self._order):
                self.epoch, self.offset = self.epoch + 1, 0
                self._order = self._permutation(self.epoch)
        return np.concatenate(out)

    def seek(self, count: int) -> None:
        """Go to where `count` windows from the start end (every epoch is as long)."""
        self.epoch, self.offset = divmod(count, len(self._order))
        self._order = self._permutation(self.epoch)

    def state(self) -> dict:
        return {"epoch": self.epoch, "offset": self.offset}

    def restore(self, state: dict) -> None:
        """Continue where `state` left off; ValueError for an offset past the epoch's end."""
        epoch, offset = int(state["epoch"]), int(state["offset"])
        if not 0 <= offset < len(self._order) or epoch < 0:
            raise ValueError(f"the data stream position {state} lies outside the "
                             f"{len(self._order):,} training windows of an epoch")  # fmt: skip
        self.epoch, self.offset = epoch, offset
        self._order = self._permutation(self.epoch)


def eval_ids(val: np.ndarray, batch: int, batches: int) -> list[np.ndarray]:
    """The validation batches: the same windows, in the same order, at every evaluation,
    spread evenly over the whole validation set (all of it, cycled, when it is smaller)."""
    if len(val) == 0:
        return []
    count = batch * batches
    if count >= len(val):
        ids = np.resize(val, max(count, 1))[:count]
    else:
        ids = val[(np.arange(count) * len(val)) // count]
    return [ids[i : i + batch] for i in range(0, count, batch)]


# --- the loop ------------------------------------------------------------------------------------


class RunError(Exception):
    """A run that cannot go on, with a message for the person who started it."""


class Damaged(RunError):
    """A file of a run directory that cannot be used as it is; the message names the file,
    what is wrong with it and what to do. Nothing has been changed when it is raised."""


def lr_factor(o: Optimizer, step: int, steps: int) -> float:
    """Where `step` (1-based) of a stage of `steps` is in its schedule: the warmup's fraction
    done (step / warmup), then 1 decaying to 0 (cosine or linear) or staying 1 (constant)."""
    warmup = min(o.warmup, steps)
    if step <= warmup:
        return step / warmup
    if o.schedule is LrSchedule.CONSTANT or steps == warmup:
        return 1.0
    progress = (step - warmup) / (steps - warmup)
    shape = (
        0.5 * (1 + math.cos(math.pi * progress))
        if o.schedule is LrSchedule.COSINE
        else 1 - progress
    )
    return shape


def build(o: Optimizer, groups: list[dict]) -> torch.optim.Optimizer:
    """The optimizer over `groups` (dicts of params, lr, weight_decay, name)."""
    groups = [g for g in groups if g["params"]]
    for g in groups:
        g["base_lr"] = g["lr"]
    return pick(OPTIMIZERS, optimizer_key(o), "optimizer")(o, groups)


def _adamw(o: Optimizer, groups: list[dict]) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=groups[0]["lr"], betas=o.method.betas, eps=o.method.eps,
                             foreach=False)  # fmt: skip


OPTIMIZERS = {
    "adamw": _adamw,
}


def set_lr(opt: torch.optim.Optimizer, o: Optimizer, step: int, steps: int) -> float:
    """Apply the schedule to every group: warmup from zero to the group's rate (rate x
    step / warmup), then decay from its rate to `min_lr` (an absolute rate, the floor; a
    group whose rate is below it stays at its rate). Returns the factor (the logged lr is
    the first group's)."""
    factor = lr_factor(o, step, steps)
    warming = step <= min(o.warmup, steps)
    for g in opt.param_groups:
        floor = 0.0 if warming else min(o.min_lr, g["base_lr"])
        g["lr"] = floor + (g["base_lr"] - floor) * factor
    return factor


_MOMENTS = {"AdamW": ("exp_avg", "exp_avg_sq"), "AdamW8bit": ("state1", "state2")}


def check_state(opt: torch.optim.Optimizer) -> None:
    """ValueError unless each parameter's loaded state holds its moments in its shape (a
    checkpoint's optimizer file with a tensor missing or reshaped would fail mid-step)."""
    need = _MOMENTS.get(type(opt).__name__, ())
    for group in opt.param_groups:
        for param in group["params"]:
            entry = opt.state.get(param) or {}
            for key in need if entry else ():
                value = entry.get(key)
                if not isinstance(value, torch.Tensor) or value.shape != param.shape:
                    raise ValueError(f"a parameter of shape {tuple(param.shape)} has no `{key}` "
                                     "of its shape")  # fmt: skip


SDPA_BACKWARD = 2.5  # torch's count for scaled_dot_product_attention's backward / forward


@dataclasses.dataclass(frozen=True)
class Cost:
    """FLOPs of some products: forward and backward, and whether their output needs a
    gradient (depends on something that trains)."""

    forward: float = 0.0
    backward: float = 0.0
    grad: bool = False

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.forward + other.forward, self.backward + other.backward,
                    self.grad or other.grad)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class StageFlops:
    """One stage's training FLOPs: per sequence (its `seq_len` tokens) through the stacks,
    per predicted position through the head."""

    sequence: float  # embeddings to the last stack, forward and backward
    cached: float  # of which the trunk's forward, saved on an activation-cache hit
    head: float  # the head, forward and backward, per predicted position
    predicted: float  # predicted positions per sequence (the expected count for masks)
    sequences: int  # sequences per step: batch x accumulate

    def batch(self, sequences: int, predicted: int, computed: int | None = None) -> float:
        """FLOPs of `sequences` sequences with `predicted` predicted positions among them,
        `computed` of them running the cached trunk (all without a cache)."""
        computed = sequences if computed is None else computed
        return (sequences * (self.sequence - self.cached) + computed * self.cached
                + predicted * self.head)  # fmt: skip

    def step(self) -> float:
        """A step's FLOPs with every trunk forward run (no cache hit)."""
        return self.sequences * (self.sequence + self.predicted * self.head)

    def total(self, steps: int) -> float:
        return steps * self.step()

    def all_hits(self, steps: int) -> float:
        """The stage's FLOPs if every trunk forward were a cache hit."""
        return steps * (self.step() - self.sequences * self.cached)


def linear(n: int, fan_in: int, fan_out: int, x_grad: bool, trains: bool,
           lora: tuple[int, bool] | None = None) -> Cost:  # fmt: skip
    """A linear layer over n rows; `lora`: (rank, trains) of an adapter over it."""
    product = 2.0 * n * fan_in * fan_out
    cost = Cost(product, product * (x_grad + trains), x_grad or trains)
    if lora is None:
        return cost
    rank, lora_trains = lora
    a = linear(n, fan_in, rank, x_grad, lora_trains)
    b = linear(n, rank, fan_out, a.grad, lora_trains)
    both = a + b
    if not both.grad:  # nothing flows back through the adapter
        both = Cost(both.forward, 0.0, False)
    return Cost(cost.forward + both.forward, cost.backward + both.backward, cost.grad or both.grad)


def matmul(product: float, *inputs_grad: bool) -> Cost:
    """A product of two inputs: each input that needs a gradient costs the forward again."""
    return Cost(product, product * sum(inputs_grad), any(inputs_grad))


def _no_backward(c: Cost) -> Cost:
    return c if c.grad else Cost(c.forward, 0.0, False)


@dataclasses.dataclass(frozen=True)
class _Layers:
    """Which layers of a stack train, and the adapters over them: (rank, trains) by name."""

    trains: bool
    lora: dict[str, tuple[int, bool]]


def block(b: Block, d: int, t: int, x_grad: bool, layers: _Layers) -> Cost:
    """One block over a sequence of t tokens whose input needs a gradient or not."""
    a = b.attention
    inner, kv = a.heads * a.head_dim, a.kv_heads * a.head_dim
    own = layers.trains

    def lin(name: str, fan_in: int, fan_out: int, grad: bool, trains: bool = own) -> Cost:
        return _no_backward(linear(t, fan_in, fan_out, grad, trains, layers.lora.get(name)))

    normed = x_grad or own  # a norm's weight trains with its stack
    if a.latent is not None:
        q_down = lin("q_down", d, a.latent.q_rank, normed)
        kv_down = lin("kv_down", d, a.latent.kv_rank, normed)
        q = lin("q", a.latent.q_rank, inner, q_down.grad)
        k = lin("k", a.latent.kv_rank, kv, kv_down.grad)
        v = lin("v", a.latent.kv_rank, kv, kv_down.grad)
        cost = q_down + kv_down + q + k + v
    else:
        q, k, v = lin("q", d, inner, normed), lin("k", d, kv, normed), lin("v", d, kv, normed)
        cost = q + k + v
    mix = _mix(a, t, q.grad, k.grad, v.grad)
    o = lin("o", inner, d, mix.grad)
    cost = cost + mix + o
    h_grad = x_grad or o.grad
    normed = h_grad or own
    hidden = b.ffn.hidden
    up = lin("up", d, hidden, normed, own and not b.freeze_up_proj)
    if isinstance(b.ffn, SwiGlu):
        gate = lin("gate", d, hidden, normed)
        up = up + gate
    down = lin("down", hidden, d, up.grad)
    cost = cost + up + down
    return Cost(cost.forward, cost.backward, h_grad or down.grad)


def _mix(a: Attention, t: int, q: bool, k: bool, v: bool) -> Cost:
    """Attention's products between the projections, over H query heads."""
    heads, hd = a.heads, a.head_dim
    if a.kernel is None:
        forward = 4.0 * heads * t * t * hd  # scores and weighted values, in full
        grad = q or k or v
        return Cost(forward, SDPA_BACKWARD * forward if grad else 0.0, grad)
    features = hd if a.kernel.kernel is KernelKind.LINEAR else a.kernel.kernel_dim
    cost = Cost()
    if a.kernel.kernel is not KernelKind.LINEAR:  # x W on q and k (W fixed: no weight gradient)
        cost = matmul(2.0 * heads * t * hd * features, q) + matmul(
            2.0 * heads * t * hd * features, k
        )
    average = 2.0 * heads * t * features * hd
    if a.mode is Mode.CAUSAL:  # φ(q_i) against the running sums of φ(k_j) v_jᵀ
        return cost + matmul(average, q, k or v)
    state = matmul(average, k, v)  # Σ φ(k_j) v_jᵀ
    return cost + state + matmul(average, q, state.grad)


def _time(m: Model, n: int, trains: bool) -> Cost:
    """The sinusoidal time embedding's MLP, once per sequence."""
    if m.time is None or m.time.embedding is not TimeEmbedding.SINUSOIDAL:
        return Cost()
    first = linear(n, m.d_model, m.d_model, False, trains)
    return first + linear(n, m.d_model, m.d_model, first.grad, trains)


def _loras(plan: Plan, stage: Stage, part: Part, trained: set) -> dict:
    """The adapters attached over a stack this stage (those that train now or trained
    before), by layer: (summed rank, trains)."""
    trains = part.role is Role.TRUNK and part.trains is not Trains.NOTHING
    out: dict[str, tuple[int, bool]] = {}
    for name, lora in (("stack", plan.stacks[part.position].stack_lora),
                       ("trunk", part.trunk_lora)):  # fmt: skip
        if lora is None or not (trains or (part.position, name) in trained):
            continue
        for target in lora.targets:
            rank, was = out.get(target.value, (0, False))
            out[target.value] = (rank + lora.rank, was or trains)
    return out


def _trained_adapters(plan: Plan, before: int) -> set:
    """(position, name) of the adapters that trained in a stage before `before` and were not
    merged into their stack since."""
    trained: set = set()
    for stage in plan.stages[: before - 1]:
        if stage.merge_adapters:
            trained.clear()
        for part in stage.parts:
            if part.role is Role.TRUNK and part.trains is not Trains.NOTHING:
                if plan.stacks[part.position].stack_lora is not None:
                    trained.add((part.position, "stack"))
                if part.trunk_lora is not None:
                    trained.add((part.position, "trunk"))
    if before <= len(plan.stages) and plan.stages[before - 1].merge_adapters:
        trained.clear()
    return trained


def stage_flops(plan: Plan, stage: Stage) -> StageFlops:
    """A stage's training FLOPs (see the module docstring)."""
    m, t = plan.model, plan.data.seq_len
    d = m.d_model
    trained = _trained_adapters(plan, stage.number)
    cost = Cost()
    grad = input_grad(m, stage)
    if m.embed_dim != d and m.embedding is None:
        # the projection reads the embedding, which needs a gradient when it trains
        cost = cost + linear(t, m.embed_dim, d, stage.train_input, stage.train_input)
    elif m.embed_dim != d:  # a frozen pretrained embedding's adapter: Linear, GELU, Linear
        first = linear(t, m.embed_dim, d, False, stage.train_input)
        cost = cost + first + linear(t, d, d, first.grad, stage.train_input)
    if _reads_time(stage):
        cost = cost + _time(m, 1, stage.train_input)
    cached = 0.0
    for i, part in enumerate(stage.parts):
        layers = _Layers(trains=part.trains is Trains.FULL,
                         lora=_loras(plan, stage, part, trained))  # fmt: skip
        for b in plan.stacks[part.position].blocks:
            one = block(b, d, t, grad, layers)
            cost, grad = cost + one, one.grad
            if stage.cache is not Cache.OFF and i < len(stage.parts) - 1:
                cached += one.forward
    head_trains = stage.train_head or (m.head is Head.TIED and stage.train_input)
    head_trains = head_trains and not (m.head is Head.TIED and m.embedding is not None)
    head = linear(1, d, m.vocab, grad, head_trains)
    return StageFlops(
        sequence=cost.forward + cost.backward,
        cached=cached,
        head=head.forward + head.backward,
        predicted=t * _predicted_share(stage),
        sequences=plan.data.batch * plan.optimizer.accumulate,
    )


def input_grad(m: Model, stage: Stage) -> bool:
    """Whether the hidden states entering the first stack need a gradient: something on the
    input side trains (not a frozen pretrained embedding alone)."""
    if not stage.train_input:
        return False
    learned = False or m.time is not None
    return m.embedding is None or m.embed_dim != m.d_model or learned


def _reads_time(stage: Stage) -> bool:
    if isinstance(stage.objective, MaskedDiffusion):
        return False
    return False


def _predicted_share(stage: Stage) -> float:
    """The expected share of positions a step predicts (PREDICTED): all for CLM, the mask
    ratio for masked objectives (its mean over the parts' ratios in a fuse stage with time as
    depth, its mean over t for time as input)."""
    return pick(PREDICTED, noise_key(stage.objective), "objective")(stage)


def _depth_share(stage: Stage) -> float:
    if stage.mask_ratio is not None:
        return stage.mask_ratio
    ratios = [part.mask_ratio for part in stage.parts]
    return sum(ratios) / len(ratios)


PREDICTED = {
    "masked_diffusion/depth": _depth_share,
}


TIMEOUT_S = 600.0


def timeout_s() -> float:
    """SW_DIST_TIMEOUT, or TIMEOUT_S. RunError for a value that is not seconds above 0."""
    text = os.environ.get("SW_DIST_TIMEOUT")
    if text is None:
        return TIMEOUT_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0 or seconds == float("inf"):
        raise RunError(f"SW_DIST_TIMEOUT={text!r} is not a number of seconds above 0")
    return seconds


@dataclasses.dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """The rank that writes: logs, metrics, checkpoints, the summary."""
        return self.rank == 0

    def share(self, n: int) -> slice:
        """This rank's rows of a micro-batch of `n` windows (n divides by the size)."""
        k = n // self.size
        return slice(self.rank * k, (self.rank + 1) * k)

    def total(self, x: float) -> float:
        """The sum of `x` over the ranks (float64; `x` itself in a world of one)."""
        if self.size == 1:
            return x
        t = torch.tensor([x], dtype=torch.float64, device=_collective_device())
        dist.all_reduce(t)
        return float(t.item())

    def from_main(self, value):
        """Rank 0's `value`, on every rank (any picklable value)."""
        if self.size == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def close(self) -> None:
        """Leave the process group (at the end of a run, whatever ended it)."""
        if self.size > 1 and dist.is_initialized():
            dist.destroy_process_group()

    def wrap(self, module: torch.nn.Module, kind: Distributed = Distributed.DDP,
             whole: tuple[torch.nn.Module, ...] = ()) -> torch.nn.Module:  # fmt: skip
        """`module` (a loop.LossOf) shared by the ranks as `kind` says; the module itself in
        a world of one. DDP: its trainable weights' gradients averaged over the ranks, while
        weights that do not train and buffers are left out of DDP altogether (they are equal
        on every rank by construction). FSDP: sharded (`shard`), the stacks in `whole` not."""
        if self.size == 1:
            return module
        if kind is Distributed.FSDP:
            return shard(module, self, whole)
        from torch.nn.parallel import DistributedDataParallel as DDP

        ignored = [k for k, x in module.named_parameters() if not x.requires_grad]
        ignored += [k for k, _ in module.named_buffers()]
        DDP._set_params_and_buffers_to_ignore_for_model(module, ignored)
        cuda = next(module.parameters()).is_cuda
        # every trainable weight of a stage's model takes part in its loss (tested for each
        # attention kind, objective and growth), so DDP need not search for idle ones
        return DDP(module, device_ids=[torch.cuda.current_device()] if cuda else None)


def shard(module: torch.nn.Module, world: World, whole) -> torch.nn.Module:
    """FSDP2: each of the module's stacks (`module.stacks()`, input side first) that is not
    in `whole` becomes one sharding unit, then the module itself (the embeddings, the head,
    the norms). A weight that is not floating point could not be sharded: it stays whole."""
    from torch.distributed.fsdp import fully_shard

    mesh = _mesh(world, next(module.parameters()).device.type)
    kept = {x for x in module.parameters() if not x.is_floating_point()}
    for stack in module.stacks():
        if stack in whole:
            kept |= set(stack.parameters())
        else:
            fully_shard(stack, mesh=mesh, ignored_params=kept & set(stack.parameters()) or None)
    fully_shard(module, mesh=mesh, ignored_params=kept or None)
    return module


_MESHES: dict = {}


def _mesh(world: World, device: str):
    """The ranks as a one-dimensional device mesh (one per device type, made once)."""
    from torch.distributed.device_mesh import init_device_mesh

    if device not in _MESHES:
        _MESHES[device] = init_device_mesh(device, (world.size,))
    return _MESHES[device]


def accumulating(net: torch.nn.Module, last: bool):
    """Gradients are exchanged on the last micro-batch of a step only."""
    if hasattr(net, "set_requires_gradient_sync"):  # FSDP2
        net.set_requires_gradient_sync(last)
        return contextlib.nullcontext()
    if last or not hasattr(net, "no_sync"):
        return contextlib.nullcontext()
    return net.no_sync()


def full(value):
    """A value with every sharded tensor in it (a DTensor) gathered whole: what a checkpoint
    keeps, the same for every number of ranks (a collective: every rank calls it)."""
    if hasattr(value, "full_tensor"):
        return value.full_tensor()
    if isinstance(value, dict):
        return {k: full(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(full(v) for v in value)
    return value


def reshard_state(opt: torch.optim.Optimizer) -> None:
    """After loading a whole optimizer state (a checkpoint's): each tensor of a sharded
    parameter's shape cut as the parameter is."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    for group in opt.param_groups:
        for param in group["params"]:
            if not isinstance(param, DTensor):
                continue
            entry = opt.state.get(param, {})
            for key, value in entry.items():
                if (
                    isinstance(value, torch.Tensor)
                    and not isinstance(value, DTensor)
                    and (value.shape == param.shape)
                ):
                    entry[key] = distribute_tensor(value.to(param.device), param.device_mesh,
                                                   param.placements)  # fmt: skip


def _collective_device() -> torch.device:
    return torch.device("cuda") if dist.get_backend() == "nccl" else torch.device("cpu")


def joined(cuda: bool) -> World:
    """This process's place: a world of one, or (under torchrun, WORLD_SIZE above 1) its rank
    in the process group, joined here (gloo on the CPU, NCCL on CUDA) with a bounded timeout."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    wait = timeout_s()
    if not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(local)
        dist.init_process_group(
            "nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=wait)
        )
    return World(rank=dist.get_rank(), size=dist.get_world_size(), local_rank=local)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunState:
    """Where a run is, beyond its weights: what a checkpoint keeps and a resume starts from.
    Mid-stage (`step` > 0) it also holds what the stage's loop had: its optimizer and loss
    scale, and torch's RNG (restored once the stage's model is built, since building draws)."""

    stage: int = 1  # the stage in progress (1-based)
    step: int = 0  # the steps of it done
    global_step: int = 0  # the steps of the whole run done
    # the data position (batches.Stream)
    stream: dict = dataclasses.field(default_factory=lambda: {"epoch": 0, "offset": 0})
    flops: float = 0.0  # the run's training FLOPs so far (estimate/flops.py)
    rng: torch.Tensor | None = None
    optimizer: dict | None = None
    scaler: dict | None = None
    window: dict | None = None  # the harness's: losses since its last log line

    def starting(self, stage: int) -> RunState:
        """The state at the start of `stage`: the run's step count and data position go on."""
        return RunState(stage=stage, global_step=self.global_step, stream=self.stream,
                        flops=self.flops)  # fmt: skip


OnStep = Callable[[RunState, float, float, Callable[[], RunState]], None]


def train_stage(plan: Plan, stage: Stage, model: StageModel, data: Prepared,
                state: RunState, *, cache=None, on_step: OnStep | None = None,
                world: World = World(), net=None) -> tuple[RunState, float]:  # fmt: skip
    """Train `stage` from `state` to its last step: (the state there, the last step's loss).
    `cache`: the stage's activation cache (runtime/cache.py), if it has one. `world`: the
    processes sharing each micro-batch (core/world.py; one by default), and `net` the model
    as they share it (`shared`, made here if not given)."""
    o = plan.optimizer
    if net is None:
        net = shared(plan, model, cache, world)
    opt = build(o, param_groups(model, stage, o))  # after sharding: its weights
    scaler = loss_scaler(stage.parts, model.device)
    if state.optimizer is not None:  # resumed mid-stage
        try:
            opt.load_state_dict(state.optimizer)
            check_state(opt)
            reshard_state(opt)
            if state.scaler:
                scaler.load_state_dict(state.scaler)
        except (ValueError, KeyError, RuntimeError) as e:
            raise Damaged(
                f"the checkpoint's optimizer state does not fit stage {stage.number}'s "
                f"optimizer ({e}); resume from a stage-end checkpoint or start again"
            ) from None
    if state.rng is not None:
        torch.set_rng_state(state.rng)
    stream = Stream.of(data, plan.run.seed)
    stream.restore(state.stream)
    trainable = [x for g in opt.param_groups for x in g["params"]]
    cost, flops = stage_flops(plan, stage), state.flops
    seen = _seen(plan, stage, data, state, world) if cache is not None else None

    def snapshot() -> RunState:  # a copy: the optimizer's tensors go on changing in place
        return dataclasses.replace(state, optimizer=copy.deepcopy(full(opt.state_dict())),
                            scaler=scaler.state_dict() or None,  # {} when disabled
                            rng=torch.get_rng_state())  # fmt: skip

    loss = math.nan
    for step in range(state.step + 1, stage.steps + 1):
        set_lr(opt, o, step, stage.schedule_steps or stage.steps)
        loss = 0.0
        for micro in range(o.accumulate):
            ids = stream.take(plan.data.batch)
            batch = batch_for(plan, stage, data, ids, draw=(step - 1) * o.accumulate + micro)
            predicted = int((batch.targets != IGNORE).sum())
            if net is None:
                part = stage_loss(model, batch, cache) / o.accumulate
                scaler.scale(part).backward()
            else:  # this rank's slice; DDP averages over the ranks, hence x size
                with accumulating(net, last=micro == o.accumulate - 1):
                    part = net(batch.rows(world.share(len(ids))), predicted) / o.accumulate
                    scaler.scale(part * world.size).backward()
            loss += part.item()
            flops += cost.batch(len(ids), predicted, _computed(seen, ids, world))
        loss = world.total(loss)  # every rank stops on a non-finite loss, or none does
        if not math.isfinite(loss):
            raise Diverged(stage.number, step, f"the loss became {loss}")
        if o.clip is not None:
            scaler.unscale_(opt)  # so the norm is of the true gradients
            torch.nn.utils.clip_grad_norm_(trainable, o.clip)
        scaler.step(opt)  # skipped when a scaled gradient overflowed
        scaler.update()
        opt.zero_grad(set_to_none=True)
        state = RunState(stage=stage.number, step=step, global_step=state.global_step + 1,
                         stream=stream.state(), flops=flops)  # fmt: skip
        if on_step is not None:
            on_step(state, loss, opt.param_groups[0]["lr"], snapshot)
    return state, loss


def _seen(plan: Plan, stage: Stage, data: Prepared, state: RunState,
          world: World) -> list[set[int]]:  # fmt: skip
    """The windows a stage with an activation cache has read before `state`, per rank (each
    rank caches its own; their trunk output is cached: in a resumed run too, its FLOPs count
    as in the uninterrupted one)."""
    seen: list[set[int]] = [set() for _ in range(world.size)]
    stream = Stream.of(data, plan.run.seed)
    stream.seek((state.global_step - state.step) * plan.data.batch * plan.optimizer.accumulate)
    for _ in range(state.step * plan.optimizer.accumulate):  # to the stage's first step
        _computed(seen, stream.take(plan.data.batch), world)
    return seen


def _computed(seen: list[set[int]] | None, ids: np.ndarray, world: World) -> int | None:
    """How many windows of a micro-batch run the cached trunk, over the ranks (None without
    a cache: all)."""
    if seen is None:
        return None
    computed = 0
    for rank, cached in enumerate(seen):
        fresh = set(ids[dataclasses.replace(world, rank=rank).share(len(ids))].tolist()) - cached
        cached |= fresh
        computed += len(fresh)
    return computed


def batch_for(plan: Plan, stage: Stage, data: Prepared, ids: np.ndarray, draw: int) -> Batch:
    """The batch of windows `ids` for the `draw`-th micro-batch of a stage, corrupted for its
    objective (the noise level depends on the draw, the masks on the windows)."""
    ratio, t = noise(stage, plan, draw)
    return _batch(plan, stage, data, data.train_rows(ids), ids, ratio, t)


def stage_loss(model: StageModel, b: Batch, cache=None) -> torch.Tensor:
    """The model's loss on a batch; with an activation cache, the hidden states come through
    it (runtime/cache.py: the frozen trunk runs once per window)."""
    device = model.device
    inputs, targets = b.inputs.to(device), b.targets.to(device)
    t = b.t.to(device) if b.t is not None else None
    h = model.hidden(inputs, t) if cache is None else cache.hidden(model, inputs, b.ids)
    return loss_of(model.logits, h, targets)


def shared(plan: Plan, model: StageModel, cache, world: World):
    """The stage's model as the ranks share it (`run.distributed`: core/world.py), as a
    `LossOf`; None in a world of one. With an activation cache, the frozen stacks stay
    whole on every rank (each rank runs them for its own cache misses). Dropout draws each
    micro-batch's whole mask on every rank and keeps the rank's rows (core/layers.py)."""
    if world.size == 1:
        return None
    share_dropout(model, plan.data.batch, world.share(plan.data.batch))  # one process's masks
    whole = tuple(model.stack(x.position) for x in model.stage.parts
                  if cache is not None and x.trains is Trains.NOTHING)  # fmt: skip
    return world.wrap(LossOf(model, cache), plan.run.distributed, whole)


class LossOf(torch.nn.Module):
    """A stage model's loss on one rank's slice of a micro-batch, as a module DDP wraps: the
    sum over the slice's predicted positions divided by the whole micro-batch's count
    (`predicted`), so the ranks' losses add up to the micro-batch's mean."""

    def __init__(self, model: StageModel, cache=None) -> None:
        super().__init__()
        self.model, self.cache = model, cache

    def forward(self, b: Batch, predicted: int) -> torch.Tensor:
        model = self.model
        inputs, targets = b.inputs.to(model.device), b.targets.to(model.device)
        t = b.t.to(model.device) if b.t is not None else None
        cached = self.cache is not None
        h = self.cache.hidden(model, inputs, b.ids) if cached else model.hidden(inputs, t)
        return loss_of(model.logits, h, targets, reduction="sum") / predicted

    def stacks(self) -> tuple[torch.nn.Module, ...]:
        """The model's stacks, input side first."""
        positions = sorted(x.position for x in self.model.stage.parts)
        return tuple(self.model.stack(x) for x in positions)


def evaluate(model: StageModel, plan: Plan, stage: Stage, data: Prepared,
             net=None) -> float | None:  # fmt: skip
    """Mean loss over the validation batches (None without validation data). They see the
    same noise at every evaluation, and cycle through the rack's ratios in a fuse stage with
    time as depth. With `net` (the model the ranks share), every rank scores every batch."""
    batches = eval_ids(data.val, plan.data.batch, plan.run.eval_batches)
    if not batches:
        return None
    model.eval()
    losses = []
    with torch.no_grad():
        for i, ids in enumerate(batches):
            ratio, t = noise(stage, plan, -1 - i)
            if stage.mask_ratio is None and stage.parts[0].mask_ratio is not None:
                ratio = stage.parts[i % len(stage.parts)].mask_ratio  # time as depth, fuse
            batch = _batch(plan, stage, data, data.windows[ids], ids, ratio, t)
            if net is None:
                losses.append(stage_loss(model, batch).item())
            else:
                losses.append(net(batch, int((batch.targets != IGNORE).sum())).item())
    model.train()
    return float(np.mean(losses))


def _batch(plan: Plan, stage: Stage, data: Prepared, rows: np.ndarray, ids: np.ndarray,
           ratio, t) -> Batch:  # fmt: skip
    windows = torch.from_numpy(rows)
    vocab = Vocabulary(mask=data.tokenizer.specials.mask, ordinary=data.tokenizer.ordinary)
    return make_batch(windows, ids, stage.objective, ratio, t, seed=plan.run.seed, vocab=vocab)


def param_groups(model: StageModel, stage: Stage, o: Optimizer) -> list[dict]:
    """Stack weights at the stage's lr, adapters at adapter_lr, embeddings and head at
    embedding_lr; weight decay on matrices only."""
    stacks, lora = [], []
    for part in stage.parts:
        stack = model.stack(part.position)
        stacks += [x for x in base_parameters(stack) if x.requires_grad]
        lora += [x for x in adapter_parameters(stack) if x.requires_grad]
    rack = model.rack
    shared = [x for x in [*input_parameters(rack), *head_parameters(rack)] if x.requires_grad]
    shared = list({id(x): x for x in shared}.values())
    groups = []
    for name, params, lr in (("stacks", stacks, stage.lr), ("adapters", lora, stage.adapter_lr),
                             ("embeddings", shared, stage.embedding_lr)):  # fmt: skip
        matrices = [x for x in params if x.dim() >= 2]
        others = [x for x in params if x.dim() < 2]
        groups.append({"name": name, "params": matrices, "lr": lr, "weight_decay": o.weight_decay})
        groups.append({"name": name + "/no_decay", "params": others, "lr": lr, "weight_decay": 0.0})
    if not any(g["params"] for g in groups):
        raise RunError(f"stage {stage.number} trains nothing")
    return groups


class Diverged(RunError):
    """Training produced a non-finite loss or non-finite weights."""

    def __init__(self, stage: int, step: int, what: str) -> None:
        super().__init__(f"{what} in stage {stage} at step {step}")
        self.stage, self.step = stage, step


@dataclasses.dataclass(frozen=True)
class Sampled:
    ids: torch.Tensor  # (B, T) every masked position filled
    calls: int  # network calls made


def _predict(model: StageModel, x: torch.Tensor, t: float | None, banned: tuple[int, ...],
             positions=None) -> torch.Tensor:  # fmt: skip
    """Float64 logits (B, T, V) of a masked model, never choosing a banned id
    (`<mask>`)."""
    times = None if t is None else torch.full((x.shape[0],), float(t), device=x.device)
    logits = model.logits(model.hidden(x, times, positions)).double()
    logits[..., list(banned)] = float("-inf")
    return logits


def _choose(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
            top_p: float | None = None, generator: torch.Generator | None = None,
            ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """A token for every position of float64 `logits` (B, T, V) and the model's probability
    of it: the most likely at temperature 0, else the Gumbel-max draw from the softmax at
    `temperature` within top-k and top-p (the noise in float64, as LLaDA found it must be)."""
    probs = logits.softmax(dim=-1)
    if temperature == 0:
        chosen = logits.argmax(dim=-1)
    else:
        flat = logits.reshape(-1, logits.shape[-1]) / temperature
        flat = _within(flat, top_k, top_p)
        u = torch.rand(flat.shape, dtype=torch.float64, generator=generator).to(flat.device)
        u = u.clamp_(1e-300, 1.0)
        chosen = (flat - torch.log(-torch.log(u))).argmax(dim=-1).reshape(logits.shape[:-1])
    return chosen, probs.gather(-1, chosen[..., None]).squeeze(-1)


def _within(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """`logits` (N, V) with every token outside the top k and the top-p nucleus at -inf."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        ordered, order = torch.sort(logits, dim=-1, descending=True)
        probs = ordered.softmax(dim=-1)
        beyond = probs.cumsum(dim=-1) - probs >= top_p  # reached top_p before this token
        logits = logits.masked_fill(beyond.scatter(-1, order, beyond), float("-inf"))
    return logits


def _commit(x: torch.Tensor, chosen: torch.Tensor, confidence: torch.Tensor,
            open_: torch.Tensor, count: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """`x` with the `count[b]` most confident `open_` positions of each row set to `chosen`."""
    score = confidence.masked_fill(~open_, float("-inf"))
    rank = score.argsort(dim=-1, descending=True).argsort(dim=-1)
    take = open_ & (rank < count[:, None])
    return torch.where(take, chosen, x)


def unroll_depth(model: StageModel, x: torch.Tensor, levels: list[tuple[tuple[int, ...], float]],
                 *, mask: int, banned: tuple[int, ...], **choice) -> Sampled:  # fmt: skip
    """Masked diffusion with time as depth: `levels` are the arrangements the stages trained,
    (stack positions, mask ratio), noisiest first. Call k reads `x` through arrangement k and
    commits its most confident predictions until the next level's ratio of the positions that
    started masked is still masked (none after the last): one network call per level."""
    model.eval()
    start = (x == mask).sum(dim=1)
    calls = 0
    with torch.no_grad():
        for k, (positions, _) in enumerate(levels):
            masked = x == mask
            chosen, confidence = _choose(_predict(model, x, None, banned, positions), **choice)
            calls += 1
            later = levels[k + 1][1] if k + 1 < len(levels) else 0.0
            keep = torch.round(start.double() * later).long()
            x = _commit(x, chosen, confidence, masked, masked.sum(dim=1) - keep)
    return Sampled(ids=x, calls=calls)


def depth_levels(
    plan: Plan, upto: Stage, *, fused: bool = False
) -> list[tuple[tuple[int, ...], float]]:
    """Time as depth: (stack positions, mask ratio) for every grow stage up to `upto`, the
    arrangement that stage trained at its ratio, noisiest first. `fused`: the whole of
    `upto`'s rack at each of those ratios (the way a fuse stage trains)."""
    levels = [(tuple(x.position for x in s.parts), s.mask_ratio)
              for s in plan.stages[: upto.number] if s.mask_ratio is not None]  # fmt: skip
    if fused:
        every = tuple(x.position for x in upto.parts)
        levels = [(every, ratio) for _, ratio in levels]
    return sorted(levels, key=lambda level: -level[1])


MASK = "<mask>"  # where a prompt asks a masked model to fill in


def encode_prompt(tokenizer, text: str) -> list[int]:
    """Token ids of `text`; each `<mask>` in it is the mask token."""
    ids: list[int] = []
    pieces = text.split(MASK)
    if len(pieces) > 1 and tokenizer.specials.mask is None:
        raise ValueError("a causal LM continues its prompt; it has no `<mask>` to fill")
    for i, piece in enumerate(pieces):
        if i:
            ids.append(tokenizer.specials.mask)
        if piece:
            ids += [int(x) for x in tokenizer.encode(piece)]
    return ids


MAX_STEPS = 100_000  # time steps a time-as-input sampler may take


CHUNK = 64  # samples drawn together; more are drawn chunk by chunk, with the same generator


def sample(model: StageModel, tokenizer, prompt: list[int], *, max_new_tokens: int | None = None,
           num_samples: int = 1, sampler: str | None = None, steps: int | None = None,
           block: int | None = None, seed: int = 0, temperature: float = 1.0,
           top_k: int | None = None, top_p: float | None = None) -> Sampled:  # fmt: skip
    """`num_samples` samples from `model` (a checkpoint's, built for its stage) for the
    prompt's ids: continued (CLM; default 100 new tokens, or what fits the context) or with
    its masks and `max_new_tokens` more after it filled (masked models; default: to seq_len,
    or none when the prompt has masks). `steps`: time steps of a time-as-input sampler
    (default num_time_steps, else 64); `block`: the low_confidence sampler's block length
    (default one block). ValueError, in words, for a request that does not fit the model."""
    o, plan = model.stage.objective, model.plan
    sampler = sampler or samplers_for(o)[0]
    _check(model.stage, sampler, max_new_tokens, num_samples, temperature, top_k, top_p, steps,
           block, seed)  # fmt: skip
    mask, ids = tokenizer.specials.mask, list(prompt)
    causal = False
    if causal and mask is not None and mask in ids:
        raise ValueError("a causal LM continues its prompt; it has no `<mask>` to fill")
    given = len(ids)
    if causal and not ids:
        ids = _start(tokenizer)
    room = plan.model.context - len(ids)
    if max_new_tokens is None:
        wanted = 100 if causal else plan.data.seq_len - len(ids)
        max_new_tokens = 0 if mask in ids else max(0, min(wanted, room))
    if max_new_tokens > room:
        what = (f"a prompt of {len(ids)} tokens" if given
                else "the token an empty prompt starts from")  # fmt: skip
        context = plan.model.context
        raise ValueError(f"{what} and {max_new_tokens} new ones: the whole must fit the "
                         f"model's context of {context} (at most {room} new)")  # fmt: skip
    if causal and max_new_tokens == 0:
        raise ValueError("nothing to generate: max_new_tokens is 0"
                         + (f" (a prompt of {len(ids)} tokens fills the context)" if room == 0
                            else ""))  # fmt: skip
    if not causal:
        ids = ids + [mask] * max_new_tokens
        if mask not in ids:
            raise ValueError("nothing to fill: give max_new_tokens, or a prompt with `<mask>`")
    generator = torch.Generator().manual_seed(seed)
    rows, calls = [], 0
    for start in range(0, num_samples, CHUNK):
        count = min(CHUNK, num_samples - start)
        x = torch.tensor([ids] * count, dtype=torch.long, device=model.device)
        out = _draw(model, x, sampler, steps, block, tokenizer, max_new_tokens,
                    temperature=temperature, top_k=top_k, top_p=top_p,
                    generator=generator)  # fmt: skip
        rows.append(out.ids.cpu())
        calls += out.calls
    return Sampled(ids=torch.cat(rows), calls=calls)


def _start(tokenizer) -> list[int]:
    """What a causal LM continues when the prompt is empty: `<eos>` (a document starts after
    it), or a newline for a model of one text, which has no `<eos>` (as nanoGPT starts)."""
    if tokenizer.specials.eos is not None:
        return [tokenizer.specials.eos]
    try:
        ids = [int(x) for x in tokenizer.encode("\n")]
    except DataError:
        ids = []
    if len(ids) != 1:
        raise ValueError("this model has no `<eos>` to start from and no newline in its "
                         "vocabulary: give a prompt")  # fmt: skip
    return ids


def _draw(model: StageModel, x: torch.Tensor, sampler: str, steps, block, tokenizer,
          max_new_tokens: int, **choice) -> Sampled:  # fmt: skip
    """One chunk of samples, with the objective's sampler."""
    o = model.stage.objective
    mask = tokenizer.specials.mask
    banned = (mask,) if mask is not None else ()
    if isinstance(o, MaskedDiffusion) and isinstance(o.time, DepthTime):
        levels = depth_levels(model.plan, model.stage, fused=sampler == "fused")
        out = unroll_depth(model, x, levels, mask=mask, banned=banned, **choice)
    return out


def _check(stage: Stage, sampler, max_new_tokens, num_samples, temperature, top_k, top_p,
           steps, block, seed) -> None:  # fmt: skip
    """ValueError for an option of the wrong type or out of range, or one the stage's
    objective has no use for."""
    names = samplers_for(stage.objective)
    if sampler not in names:
        raise ValueError(f"sampler {sampler!r} does not fit this run's objective: use "
                         f"{' or '.join(names)}")  # fmt: skip
    if sampler == "fused" and stage.kind is not StageKind.FUSE:
        raise ValueError("the fused sampler reads the whole rack at every level, the way a "
                         f"fuse stage trains; stage {stage.number} is a {stage.kind.value} "
                         "stage: use depth")  # fmt: skip
    whole = {"num_samples": (num_samples, 1), "max_new_tokens": (max_new_tokens, 0),
             "top_k": (top_k, 1), "steps": (steps, 1), "block": (block, 1)}  # fmt: skip
    for name, (value, least) in whole.items():
        if value is not None and (type(value) is not int or value < least):
            raise ValueError(f"{name} must be a whole number of at least {least}, not {value!r}")
    if type(seed) is not int or not -(2**63) <= seed < 2**64:
        raise ValueError(f"seed must be a whole number from -2^63 to 2^64 - 1, not {seed!r}")
    if (
        not isinstance(temperature, int | float)
        or isinstance(temperature, bool)
        or not (temperature == 0 or 1e-6 <= temperature < math.inf)
    ):
        raise ValueError(f"temperature must be 0 (the most likely token) or a finite number "
                         f"of at least 1e-6, not {temperature!r}")  # fmt: skip
    if top_p is not None and (not isinstance(top_p, int | float) or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1], not {top_p!r}")
    if steps is not None and "ancestral" not in names:
        raise ValueError("steps is only for masked diffusion with time as input")
    if steps is not None and steps > MAX_STEPS:
        raise ValueError(f"steps must be at most {MAX_STEPS:,}, not {steps:,}")
    if block is not None and sampler != "low_confidence":
        raise ValueError("block is only for the low_confidence sampler (--sampler low_confidence)")


# --- the harness: the plan's classes, the weight store, the run ----------------------------------


def cpu_bf16() -> bool | None:
    """Whether the CPU multiplies bf16 natively (avx512_bf16 or AMX); None when it cannot be
    told (not Linux). Without it, bf16 matmuls are emulated: many times slower than fp32."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        return None
    return None


def tensorboard_present() -> bool:
    """Whether the `tensorboard` package (which writes event files, without TensorFlow) is
    installed; found without importing it."""
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


plan_node = dataclasses.dataclass(frozen=True, kw_only=True)


class Variant:
    """One of the classes a plan field may hold (a union of them): JSON names it under
    "kind" (lower/serialize.py)."""

    __slots__ = ()


class Role(enum.Enum):
    NEW = "new"
    TRUNK = "trunk"


class Trains(enum.Enum):
    """What of a stack trains in a stage."""

    FULL = "full"  # its weights (and its adapters, if any)
    ADAPTERS = "adapters"  # only its LoRA adapters
    NOTHING = "nothing"


class StageKind(enum.Enum):
    GROW = "grow"  # append or prepend: one new stack
    END_TO_END = "end_to_end"  # every stack new, at once
    FUSE = "fuse"  # every stack trunk, trained jointly


@plan_node
class Lora:
    rank: int
    alpha: float
    dropout: float
    targets: tuple[Target, ...]


@plan_node
class Attention:
    heads: int
    kv_heads: int
    head_dim: int
    mode: Mode
    latent: None
    kernel: None


@plan_node
class SwiGlu(Variant):
    hidden: int


@plan_node
class Block:
    name: str
    attention: Attention
    ffn: SwiGlu
    residual_gain: float
    spectral_norm: bool
    freeze_up_proj: bool


@plan_node
class Stack:
    """The stack at one rack position (0 = input side)."""

    position: int
    name: str
    blocks: tuple[Block, ...]
    created_in: int  # the stage that creates it
    stack_lora: Lora | None  # attached when it is created


@plan_node
class Rope(Variant):
    theta: float


@plan_node
class Model:
    vocab: int
    d_model: int
    context: int
    embed_dim: int
    norm: Norm
    position: Rope
    head: Head
    dropout: float
    time: None  # the time input of time-as-input diffusion
    # a local Hugging Face directory (absolute): the embedding, positions, final norm and head
    # start from it, and so do the stacks a stage creates with `init = pretrained`
    pretrained: str | None = None
    # a local Hugging Face directory (absolute) whose token embedding the model holds frozen;
    # when embed_dim != d_model, a Linear-GELU-Linear adapter maps it to d_model and trains
    embedding: str | None = None


@plan_node
class LinearSchedule(Variant):
    start: float
    end: float


Schedule = LinearSchedule


@plan_node
class DepthTime(Variant):
    pass


@plan_node
class MaskedDiffusion(Variant):
    time: DepthTime
    mask: Schedule


Objective = MaskedDiffusion


@plan_node
class Part:
    """One existing stack in one stage."""

    position: int
    role: Role
    trains: Trains
    precision: Precision
    trunk_lora: Lora | None  # attached over this stack while it is trunk
    mask_ratio: float | None  # time as depth: this stack's noise level


@plan_node
class Stage:
    number: int
    kind: StageKind
    steps: int
    tokens: int | None  # as stated in the spec, when it gave tokens
    objective: Objective
    mask_ratio: float | None  # time as depth: the ratio this stage trains at (None: per batch)
    parts: tuple[Part, ...]  # the existing stacks, rack order
    init: Init
    init_from: int | None  # `copy`: the rack position copied
    cache: Cache  # off unless the stage has a trunk to cache
    lr: float
    adapter_lr: float
    embedding_lr: float
    train_input: bool  # token embedding, learned positions, time embedding
    train_head: bool  # final norm and head (a tied head is the input embedding)
    merge_adapters: bool = False  # fuse: fold every trained adapter into its master first
    # activation checkpointing: each block that backpropagates keeps its input and runs its
    # forward again in the backward pass (core/stage_model.py)
    recompute: bool = False
    # the steps the learning-rate schedule spans, when `--max-steps` cut the stage short of
    # them (None: `steps`)
    schedule_steps: int | None = None

    @property
    def new(self) -> tuple[int, ...]:
        return tuple(p.position for p in self.parts if p.role is Role.NEW)


@plan_node
class Stdlib(Variant):
    pass


@plan_node
class Bytes(Variant):
    pass


@plan_node
class Data:
    source: Stdlib
    tokenizer: Bytes
    batch: int
    seq_len: int
    validation: float  # 0 with validation_data
    split: Split
    validation_data: Stdlib | None
    windows: Windows
    specials: tuple[str, ...]  # "<mask>" and "<eos>", each when used, in this order


@plan_node
class AdamW(Variant):
    betas: tuple[float, float]
    eps: float


@plan_node
class Optimizer:
    method: AdamW
    weight_decay: float
    warmup: int
    schedule: LrSchedule
    min_lr: float
    clip: float | None
    accumulate: int


@plan_node
class Run:
    seed: int
    device: Device
    dir: str
    log_every: int
    eval_every: int | None
    eval_batches: int
    checkpoint_every: int | None
    tensorboard: bool  # event files beside metrics.jsonl (runtime/metrics.py)
    distributed: Distributed = Distributed.DDP  # on several processes (core/world.py)


@plan_node
class Plan:
    name: str
    model: Model
    stacks: tuple[Stack, ...]
    stages: tuple[Stage, ...]
    data: Data
    optimizer: Optimizer
    run: Run

    @property
    def tokens_per_step(self) -> int:
        return self.data.batch * self.data.seq_len * self.optimizer.accumulate


class NotCompiled(LookupError):
    """A table lookup for a key the program has no entry for: a compiled script whose plan
    was edited to use something its spec did not."""


def pick(table: dict, key: str, what: str):
    """`table[key]`, or a message saying the program was compiled without it."""
    try:
        return table[key]
    except KeyError:
        raise NotCompiled(
            f"this program has no {what} `{key}`: it was compiled from a spec that does not "
            "use it; compile the spec that does"
        ) from None


FEATURES = {
    "adapters": "a LoRA adapter on some stack",
    "low_precision": "a stack held or trained in a precision other than fp32",
    "freeze_up_proj": "a block whose ffn up-projection stays frozen",
    "pretrained": "a model that starts from a Hugging Face directory (or its embedding)",
}


def features(plan: Plan) -> frozenset[str]:
    """The FEATURES `plan` uses."""
    parts = [part for stage in plan.stages for part in stage.parts]
    loras = [s.stack_lora for s in plan.stacks] + [x.trunk_lora for x in parts]
    found = {
        "adapters": any(x is not None for x in loras),
        "low_precision": any(x.precision is not Precision.FP32 for x in parts),
        "freeze_up_proj": any(b.freeze_up_proj for s in plan.stacks for b in s.blocks),
        "pretrained": (plan.model.pretrained or plan.model.embedding) is not None,
    }
    return frozenset(name for name, used in found.items() if used)


def compiled_for(plan: Plan, have: frozenset[str]) -> None:
    """NotCompiled if `plan` uses a feature or a table entry (`TABLE:key`, from `needs`) that
    a program was compiled without, before anything runs."""
    wanted = features(plan) | {f"{t}:{k}" for t, keys in needs(plan).items() for k in keys}
    missing = sorted(wanted - have)
    if missing:
        what = FEATURES.get(missing[0], "the entry of " + missing[0].replace(":", " for "))
        raise NotCompiled(
            f"this program was compiled without {what} ({missing[0]}), which its plan asks "
            "for: compile the spec that uses it"
        )


def attention_key(a: Attention) -> str:
    """ATTENTIONS: dense (MHA, GQA, MQA), latent (MLA), kernel, or latent_kernel (both)."""
    latent, kernel = a.latent is not None, a.kernel is not None
    return {(False, False): "dense", (True, False): "latent", (False, True): "kernel",
            (True, True): "latent_kernel"}[(latent, kernel)]  # fmt: skip


def ffn_key(b: Block) -> str:
    """FFNS: swiglu or gelu."""
    return type(b.ffn).__name__.lower()


def time_key(m: Model) -> str:
    """TIME_EMBEDDERS (only when the model has a time input): sinusoidal or learned."""
    return m.time.embedding.value


def frozen_key(precision: Precision) -> str:
    """FROZEN_LINEARS: the compact layer a frozen stack's linear layers become (quantized
    formats; bf16 where the CPU would emulate bf16 matmuls)."""
    return precision.value


def compact(part: Part) -> bool:
    """Whether a stack is held in a compact format in its stage (it does not train fully and
    its precision is quantized or bf16)."""
    return part.trains is not Trains.FULL and (
        part.precision.quantized or part.precision is Precision.BF16
    )


def noise_key(o: Objective) -> str:
    """NOISES: how a step's noise is drawn: clm, mlm, or masked diffusion with time as
    depth or as input."""
    if isinstance(o, MaskedDiffusion):
        return "masked_diffusion/" + ("depth" if isinstance(o.time, DepthTime) else "input")
    return "clm"


def adapter_key(lora) -> str:
    """ADAPTERS: every adapter (a plan `Lora`) is a LoRA."""
    return "lora"


def merge_key(stage: Stage) -> str | None:
    """MERGES: a stage that folds trained adapters into the masters first; None if not."""
    return "lora" if stage.merge_adapters else None


def source_key(source) -> str:
    """SOURCES: stdlib, synthetic, textfiles or jsonl."""
    return type(source).__name__.lower()


def tokenizer_key(tokenizer) -> str:
    """TOKENIZERS and RESTORERS: bytes, chars, bpe or tokenizerfile."""
    return type(tokenizer).__name__.lower()


def optimizer_key(o: Optimizer) -> str:
    """OPTIMIZERS: adamw, adamw8bit or sgd."""
    return type(o.method).__name__.lower()


def cache_key(stage: Stage) -> str | None:
    """CACHES: memory or disk; None for a stage without an activation cache."""
    return None if stage.cache is Cache.OFF else stage.cache.value


def needs(plan: Plan) -> dict[str, frozenset[str]]:
    """Per table, the keys the runtime looks up when it runs `plan`."""
    blocks = [b for s in plan.stacks for b in s.blocks]
    parts = [part for stage in plan.stages for part in stage.parts]
    caches = {cache_key(stage) for stage in plan.stages} - {None}
    merges = {merge_key(stage) for stage in plan.stages} - {None}
    loras = [s.stack_lora for s in plan.stacks] + [x.trunk_lora for x in parts]
    sources = (plan.data.source, plan.data.validation_data)
    return {
        "ATTENTIONS": frozenset(attention_key(b.attention) for b in blocks),
        "FFNS": frozenset(ffn_key(b) for b in blocks),
        "TIME_EMBEDDERS": frozenset([time_key(plan.model)] if plan.model.time is not None else []),
        "FROZEN_LINEARS": frozenset(frozen_key(x.precision) for x in parts if compact(x)),
        "NOISES": frozenset(noise_key(stage.objective) for stage in plan.stages),
        "PREDICTED": frozenset(noise_key(stage.objective) for stage in plan.stages),
        "ADAPTERS": frozenset(adapter_key(lora) for lora in loras if lora is not None),
        "MERGES": frozenset(merges),
        "SOURCES": frozenset(source_key(x) for x in sources if x is not None),
        "TOKENIZERS": frozenset([tokenizer_key(plan.data.tokenizer)]),
        "RESTORERS": frozenset([tokenizer_key(plan.data.tokenizer)]),
        "OPTIMIZERS": frozenset([optimizer_key(plan.optimizer)]),
        "CACHES": frozenset(caches),
    }


def samplers_for(objective: Objective) -> tuple[str, ...]:
    """The samplers an objective trains a model for; the first is the default."""
    if isinstance(objective, MaskedDiffusion):
        if isinstance(objective.time, DepthTime):
            return ("depth", "fused")
        return ("ancestral", "low_confidence")
    raise ValueError(f"no sampler for {type(objective).__name__}")


PLAN_FORMAT = 5  # 3: data.split; 4: data.specials, validation_data, windows; run.tensorboard;


def to_json(obj: Any) -> Any:
    """Plan objects as JSON-ready values (dicts, lists, strings, numbers, None)."""
    if dataclasses.is_dataclass(type(obj)):
        out = {"kind": type(obj).__name__} if issubclass(type(obj), Variant) else {}
        out.update({f.name: to_json(getattr(obj, f.name)) for f in dataclasses.fields(type(obj))})
        return out
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, tuple):
        return [to_json(x) for x in obj]
    return obj


class PlanFormatError(ValueError):
    """JSON that is not a plan `to_json` could have written; the message says where."""


def from_json(data: Any, cls: type = Plan) -> Any:
    """The plan object of type `cls` that `to_json` wrote; PlanFormatError naming the first
    value of the wrong type or shape (a plan.json edited by hand, or damaged), or, for a
    whole plan, the first value that does not fit the others (`consistent`)."""
    value = _decode(data, cls, "plan")
    if cls is Plan:
        consistent(value)
    return value


def consistent(plan: Plan) -> None:
    """What lowering guarantees and an edited plan may break, checked so that a run never
    meets it as a tensor of the wrong shape: PlanFormatError naming the value."""
    m = plan.model

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise PlanFormatError(what)

    for name in ("vocab", "d_model", "context", "embed_dim"):
        need(getattr(m, name) >= 1, f"plan.model.{name} is {getattr(m, name)}, not at least 1")
    need(0 <= m.dropout < 1, f"plan.model.dropout is {m.dropout}, not in [0, 1)")
    for i, stack in enumerate(plan.stacks):
        need(stack.position == i, f"plan.stacks[{i}].position is {stack.position}, not {i}")
        for j, b in enumerate(stack.blocks):
            a, where = b.attention, f"plan.stacks[{i}].blocks[{j}]"
            need(
                a.heads >= 1 and a.kv_heads >= 1 and a.heads % a.kv_heads == 0,
                f"{where}.attention: kv_heads {a.kv_heads} do not divide heads {a.heads}",
            )
            need(
                a.head_dim * a.heads == m.d_model,
                f"{where}.attention: heads {a.heads} x "
                f"head_dim {a.head_dim} is not d_model {m.d_model}",
            )
            need(b.ffn.hidden >= 1, f"{where}.ffn.hidden is {b.ffn.hidden}, not at least 1")
    for k, stage in enumerate(plan.stages):
        where = f"plan.stages[{k}]"
        need(stage.number == k + 1, f"{where}.number is {stage.number}, not {k + 1}")
        need(stage.steps >= 1, f"{where}.steps is {stage.steps}, not at least 1")
        need(
            min(stage.lr, stage.adapter_lr, stage.embedding_lr) > 0,
            f"{where}: a learning rate is not above 0",
        )
        positions = [part.position for part in stage.parts]
        need(
            positions == sorted(set(positions))
            and all(0 <= x < len(plan.stacks) for x in positions),
            f"{where}.parts: positions {positions} are not distinct stacks of the plan",
        )
        source = stage.init_from
        need(
            source is None
            or (0 <= source < len(plan.stacks) and plan.stacks[source].created_in < stage.number),
            f"{where}.init_from is {source}, not a stack that exists before stage {stage.number}",
        )
    d, r = plan.data, plan.run
    need(
        d.batch >= 1 and 1 <= d.seq_len <= m.context,
        f"plan.data: batch {d.batch} and seq_len {d.seq_len} (context {m.context}) do not fit",
    )
    need(plan.optimizer.accumulate >= 1, "plan.optimizer.accumulate is not at least 1")
    for name in ("log_every", "eval_every", "eval_batches", "checkpoint_every"):
        value = getattr(r, name)
        need(value is None or value >= 1, f"plan.run.{name} is {value}, not at least 1")


def _decode(data: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if data is None and len(options) < len(typing.get_args(hint)):
            return None  # (a union without None takes no null: checked below)
        if len(options) == 1:
            return _decode(data, options[0], where)
        by_name = {o.__name__: o for o in options}
        kind = data.get("kind") if isinstance(data, dict) else None
        if kind not in by_name:
            found = f"a {kind!r}" if isinstance(kind, str) else _shown(data)
            raise PlanFormatError(f"{where} is {found}, not one of {', '.join(by_name)}")
        return _decode(data, by_name[kind], where)
    if origin is tuple:
        if not isinstance(data, list):
            raise PlanFormatError(f"{where} is {_shown(data)}, not a list")
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(x, args[0], f"{where}[{i}]") for i, x in enumerate(data))
        if len(data) != len(args):
            raise PlanFormatError(f"{where} has {len(data)} items, not {len(args)}")
        return tuple(
            _decode(x, a, f"{where}[{i}]") for i, (x, a) in enumerate(zip(data, args, strict=True))
        )
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(data)
        except ValueError:
            raise PlanFormatError(f"{where} is {_shown(data)}, not a {hint.__name__}") from None
    if dataclasses.is_dataclass(hint):
        if not isinstance(data, dict):
            raise PlanFormatError(f"{where} is {_shown(data)}, not an object")
        variant = issubclass(hint, Variant)
        if variant and data.get("kind", hint.__name__) != hint.__name__:  # a union of one
            raise PlanFormatError(f"{where} is {data['kind']!r}, which this program was not "
                                  f"compiled for (only {hint.__name__}): compile the spec that "
                                  "uses it")  # fmt: skip
        fields = _hints(hint)
        missing = [name for name in fields if name not in data and not _optional(fields[name])]
        if missing:
            raise PlanFormatError(f"{where} has no `{missing[0]}`")
        unknown = sorted(set(data) - set(fields) - ({"kind"} if variant else set()))
        if unknown:
            raise PlanFormatError(
                f"{where} has `{unknown[0]}`, which is no field of a {hint.__name__}"
            )
        return hint(**{name: _decode(data.get(name), h, f"{where}.{name}")
                       for name, h in fields.items()})  # fmt: skip
    return _scalar(data, hint, where)


def _optional(hint: Any) -> bool:
    """A field that may be None, and so may be left out (a compiled script's plan does). In
    a script, a field whose classes the plan has none of holds only None."""
    if hint is type(None):
        return True
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in (
        typing.get_args(hint)
    )


_SCALARS = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}


def _scalar(data: Any, hint: Any, where: str) -> Any:
    """A JSON value of the plan's scalar type (ints are accepted as floats, never bools)."""
    if hint is float and isinstance(data, int) and not isinstance(data, bool):
        return float(data)
    if hint is type(None) and data is not None:  # in a script compiled for a plan without it
        raise PlanFormatError(f"{where} is {_shown(data)}, but this program was compiled for a "
                              "plan without it (null): compile the spec that uses it")  # fmt: skip
    if hint in _SCALARS and (
        not isinstance(data, hint) or (hint is not bool and isinstance(data, bool))
    ):
        raise PlanFormatError(f"{where} is {_shown(data)}, not {_SCALARS[hint]}")
    return data


def _shown(data: Any) -> str:
    text = repr(data)
    return text if len(text) <= 40 else text[:37] + "..."


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    resolved = typing.get_type_hints(cls)  # in the namespace of the module defining cls
    return {f.name: resolved[f.name] for f in dataclasses.fields(cls)}


Tensors = dict[str, torch.Tensor]  # a state dict: name → tensor


class OnDisk(Mapping):
    """A stack's master weights left in a safetensors file: a read-only mapping that loads a
    tensor when it is asked for."""

    def __init__(self, file: Path, prefix: str) -> None:
        from safetensors import safe_open

        self.file, self.prefix = Path(file), prefix
        with safe_open(str(self.file), framework="pt") as f:
            self._keys = sorted(k[len(prefix) :] for k in f.keys() if k.startswith(prefix))  # noqa: SIM118
        if not self._keys:
            raise KeyError(f"{self.file} holds no tensors under {prefix!r}")

    def __getitem__(self, key: str) -> torch.Tensor:
        return next(iter(self._read([key]).values()))

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def shape_of(self, key: str) -> list[int]:
        """A tensor's shape, read from the file's header alone."""
        from safetensors import safe_open

        with safe_open(str(self.file), framework="pt") as f:
            return f.get_slice(self.prefix + key).get_shape()

    def items(self):  # one open of the file for all of them
        return self._read(self._keys).items()

    def _read(self, keys) -> dict[str, torch.Tensor]:
        from safetensors import safe_open

        with safe_open(str(self.file), framework="pt") as f:
            return {k: f.get_tensor(self.prefix + k) for k in keys}


@dataclasses.dataclass
class Store:
    shared: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    stacks: dict[int, Mapping[str, torch.Tensor]] = dataclasses.field(default_factory=dict)
    adapters: dict[tuple[int, str], Tensors] = dataclasses.field(default_factory=dict)

    def offload(self, positions, checkpoint_file: Path) -> None:
        """Let the masters of `positions` live only in `checkpoint_file` (which must hold
        them as they are now: the checkpoint just written or just loaded)."""
        for position in positions:
            state = self.stacks.get(position)
            if state is not None and not isinstance(state, OnDisk):
                self.stacks[position] = OnDisk(checkpoint_file, f"stack/{position}/")

    def on_disk(self) -> dict[int, Path]:
        """The stacks whose masters live in a checkpoint file, and where."""
        return {k: v.file for k, v in self.stacks.items() if isinstance(v, OnDisk)}

    def flat(self, *, with_on_disk: bool = False) -> dict[str, torch.Tensor]:
        """Every tensor under a path-like key, for one safetensors file. Stacks on disk are
        left out (a checkpoint refers to them, see `on_disk`) unless `with_on_disk`."""
        out = {f"shared/{k}": v for k, v in self.shared.items()}
        for position, state in self.stacks.items():
            if isinstance(state, OnDisk) and not with_on_disk:
                continue
            out |= {f"stack/{position}/{k}": v for k, v in state.items()}
        for (position, name), state in self.adapters.items():
            out |= {f"adapter/{position}/{name}/{k}": v for k, v in state.items()}
        return {k: v.detach().contiguous().cpu() for k, v in out.items()}

    @classmethod
    def from_flat(cls, tensors: dict[str, torch.Tensor]) -> Store:
        """The store `flat` wrote; ValueError for a key it never writes."""
        store = cls()
        for key, value in tensors.items():
            kind, _, rest = key.partition("/")
            position, _, name = rest.partition("/")
            if kind == "shared" and rest:
                store.shared[rest] = value
            elif kind == "stack" and position.isdigit() and name:
                store.stacks.setdefault(int(position), {})[name] = value
            elif kind == "adapter" and position.isdigit() and "/" in name:
                adapter, _, name = name.partition("/")
                store.adapters.setdefault((int(position), adapter), {})[name] = value
            else:
                raise ValueError(f"`{key}` is not a shared, stack or adapter weight")
        return store


LATEST = "latest.json"


KEEP_STEP_CHECKPOINTS = 2


def save(run_dir: Path, name: str, store: Store, optimizer: dict | None, state: dict) -> Path:
    """Write checkpoint `name` and make it current. If it cannot be written (a full disk, a
    read-only directory), nothing of it is left and the previous checkpoint stays current."""
    root = run_dir / "checkpoints"
    tmp = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
        _write(tmp, store, optimizer, state, root)
        final = root / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _write_json(run_dir / "checkpoints" / LATEST, {"checkpoint": name})
    except (OSError, SafetensorError) as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        last = latest(run_dir)
        kept = "no checkpoint was written yet"
        if last is not None:
            kept = f"the last good checkpoint, {last.name}, is still current"
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise RunError(f"cannot write checkpoint {name} in {root} ({why}); {kept}") from None
    _prune(root, keep=name)
    return final


def _write(tmp: Path, store: Store, optimizer, state: dict, root: Path) -> None:
    """A checkpoint's files, into the temporary directory `tmp`."""
    from safetensors.torch import save_file

    save_file(store.flat(), str(tmp / "model.safetensors"))
    opt_meta = None
    if optimizer is not None:
        tensors, opt_meta = split_optimizer(optimizer)
        save_file(tensors, str(tmp / "optimizer.safetensors"))
    full = {
        **state,
        "stacks_on_disk": {str(k): _relative(v, root) for k, v in store.on_disk().items()},
        "optimizer": opt_meta,
        "rng": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode(),
    }
    _write_json(tmp / "state.json", full)
    _fsync_dir(tmp)


def latest(run_dir: Path) -> Path | None:
    """The newest complete checkpoint, or None when the run has written none. A latest.json
    that cannot be read, or names anything but a complete checkpoint of this run, is
    `Damaged` (it is only ever replaced whole, so that is damage, not a run in progress).
    Without latest.json (deleted, or a kill between a checkpoint and its pointer) it is the
    newest complete checkpoint, never a fresh start over them."""
    root = Path(run_dir) / "checkpoints"
    pointer = root / LATEST
    if not pointer.exists():
        if not root.is_dir():
            return None
        names = complete(root)
        return root / names[-1] if names else None
    try:
        name = read_json(pointer).get("checkpoint")
    except Damaged as e:
        raise Damaged(f"{e}; {_choices(root)}") from None
    if isinstance(name, str) and _plain_name(name) and (root / name / "state.json").is_file():
        return root / name
    raise Damaged(
        f"{pointer} names {name!r}, which is not a complete checkpoint of this run; "
        + _choices(root)
    )


def complete(root: Path) -> list[str]:
    """The names of the complete checkpoints under `root` (a run's checkpoints/), oldest
    first; none when it is not a directory."""
    if not root.is_dir():
        return []
    return sorted(c.name for c in root.iterdir()
                  if _plain_name(c.name) and (c / "state.json").is_file())  # fmt: skip


def _plain_name(name: str) -> bool:
    """A checkpoint's directory name: one path component, not hidden."""
    return (
        name not in ("", ".", "..")
        and "/" not in name
        and "\\" not in name
        and (not name.startswith("."))
    )


def _choices(root: Path) -> str:
    """What a person can do about a damaged latest.json."""
    names = complete(root)
    if not names:
        return "there is no complete checkpoint to resume from: start the run again"
    return (
        f"complete checkpoints: {', '.join(names)}; to resume from the newest, write "
        f'{{"checkpoint": "{names[-1]}"}} into {root / LATEST}'
    )


def is_stage_end(path: Path) -> bool:
    return bool(state_of(path).get("stage_done", False))


def state_of(path: Path) -> dict:
    """A checkpoint's state.json ({} when it cannot be read; `load` says why)."""
    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


MAX_JSON_BYTES = 64 << 20  # a run's JSON files are kilobytes; anything this big is not one


def _regular(path: Path, limit: int | None = None) -> None:
    """A file of the run is a regular file (never a device or FIFO, which could hang a read
    or never end), of at most `limit` bytes; else `Damaged`. A missing file passes (its
    reader says so)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    except OSError as e:
        raise Damaged(f"{path} cannot be read ({e.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise Damaged(f"{path} is not a regular file (a directory, device or FIFO)")
    if limit is not None and info.st_size > limit:
        raise Damaged(f"{path} is {info.st_size:,} bytes, too large to be what a run writes")


def read_json(path: Path) -> dict:
    """A JSON object from a run directory's file, or `Damaged` naming the file."""
    _regular(path, MAX_JSON_BYTES)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise Damaged(f"{path} is missing") from None
    except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError among them
        raise Damaged(f"{path} cannot be read as JSON ({e})") from None
    if not isinstance(data, dict):
        raise Damaged(f"{path} holds a JSON {type(data).__name__}, not an object")
    return data


_COUNTS = ("stage", "step", "global_step", "metrics_lines")


_SUMMARY = {"stage": int, "kind": str, "steps": int, "train_loss": float, "val_loss": float,
            "seconds": float, "trainable": int, "tokens_per_s": float}  # fmt: skip


def read_state(path: Path, plan: Plan) -> dict:
    """A checkpoint's state.json, every field checked against what `save` writes and the
    run's plan, or `Damaged` naming the first field that is wrong."""
    file = path / "state.json"
    state = read_json(file)

    def wrong(what: str) -> Damaged:
        return Damaged(f"{file} is damaged: {what}; resume from another checkpoint "
                       f"(point {path.parent / LATEST} at it) or start the run again")  # fmt: skip

    for key in (*_COUNTS, "stage_done", "stream", "rng", "stacks_on_disk", "flops"):
        if key not in state:
            raise wrong(f"it has no `{key}`")
    for key, default in (("summaries", []), ("optimizer", None), ("scaler", None),
                         ("window", None)):  # fmt: skip
        state.setdefault(key, default)  # runs written before these were kept
    for key in _COUNTS:
        if not _count(state[key]):
            raise wrong(f"`{key}` is {state[key]!r}, not a whole number >= 0")
    if not 1 <= state["stage"] <= len(plan.stages):
        raise wrong(f"`stage` is {state['stage']}, but the plan has {len(plan.stages)} stages")
    if state["step"] > plan.stages[state["stage"] - 1].steps:
        raise wrong(f"`step` is {state['step']}, past the end of stage {state['stage']}")
    flops = state["flops"]
    if not (isinstance(flops, int | float) and not isinstance(flops, bool)
            and math.isfinite(flops) and flops >= 0):  # fmt: skip
        raise wrong(f"`flops` is {flops!r}, not a number >= 0")
    if not isinstance(state["stage_done"], bool):
        raise wrong(f"`stage_done` is {state['stage_done']!r}, not true or false")
    stream = state["stream"]
    if not (isinstance(stream, dict) and set(stream) == {"epoch", "offset"}
            and all(_count(v) for v in stream.values())):  # fmt: skip
        raise wrong(f"`stream` is {stream!r}, not {{epoch, offset}} whole numbers >= 0")
    if not (isinstance(state["summaries"], list) and all(map(_summary, state["summaries"]))):
        raise wrong("`summaries` is not a list of stage summaries")
    _check_optional(state, wrong)
    _check_on_disk(state["stacks_on_disk"], path, plan, wrong)
    state["rng"] = _rng(state["rng"], wrong)
    return state


def _check_optional(state: dict, wrong) -> None:
    """The fields only some checkpoints fill: optimizer and scaler state, the log window."""
    for key in ("optimizer", "scaler", "window"):
        if not isinstance(state[key], dict | None):
            raise wrong(f"`{key}` is {state[key]!r}, not an object or null")
    optimizer, window = state["optimizer"], state["window"]
    if optimizer is None and not state["stage_done"]:
        raise wrong("it was written in the middle of a stage, but holds no optimizer state")
    if optimizer is not None and not (
        isinstance(optimizer.get("param_groups"), list)
        and isinstance(optimizer.get("scalars"), dict)
    ):
        raise wrong("`optimizer` lacks its param_groups or scalars")
    if window is not None and not (
        set(window) == {"losses", "tokens"} and _count(window["tokens"])
        and isinstance(window["losses"], list)
        and all(isinstance(x, int | float) and not isinstance(x, bool) for x in window["losses"])
    ):  # fmt: skip
        raise wrong("`window` is not the losses and tokens since the last log")


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _summary(entry) -> bool:
    if not (isinstance(entry, dict) and set(entry) == set(_SUMMARY)):
        return False
    for key, kind in _SUMMARY.items():
        value = entry[key]
        if key == "val_loss" and value is None:
            continue
        ok = isinstance(value, int | float) if kind is float else isinstance(value, kind)
        if not ok or isinstance(value, bool):
            return False
    return True


def _check_on_disk(on_disk, path: Path, plan: Plan, wrong) -> None:
    """`stacks_on_disk` maps stack positions of the plan to model files of this run's other
    checkpoints: never a path that leaves the run's checkpoints directory."""
    if not isinstance(on_disk, dict):
        raise wrong(f"`stacks_on_disk` is {on_disk!r}, not an object")
    root = path.parent.resolve()
    for position, file in on_disk.items():
        if not (position.isdigit() and int(position) < len(plan.stacks)):
            raise wrong(f"`stacks_on_disk` names stack {position!r}, which the plan has not")
        if not isinstance(file, str):
            raise wrong(f"`stacks_on_disk` gives {file!r} for stack {position}, not a path")
        target = (path.parent / file).resolve()
        if not target.is_relative_to(root) or target.name != "model.safetensors":
            raise wrong(f"`stacks_on_disk` points outside this run's checkpoints ({file})")
        if not target.is_file():
            raise wrong(f"`stacks_on_disk` names {file}, which does not exist")


def _rng(text, wrong) -> torch.Tensor:
    """The torch RNG state saved as base64: exactly as many bytes as this torch's state."""
    try:
        data = base64.b64decode(text, validate=True) if isinstance(text, str) else None
    except ValueError:
        data = None
    size = torch.get_rng_state().numel()
    if data is None or len(data) != size:
        raise wrong(f"`rng` is not the base64 of a {size}-byte torch RNG state")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).clone()


def load(
    path: Path, plan: Plan, *, optimizer: bool = True
) -> tuple[Store, dict | None, dict, torch.Tensor]:
    """(weights, optimizer state dict or None, state, torch RNG state) of a checkpoint, each
    file checked before anything uses it; `Damaged` names the first that is wrong. Without
    `optimizer` (an export needs only the weights) its state is neither read nor given."""
    state = read_state(path, plan)
    try:
        store = Store.from_flat(_tensors(path / "model.safetensors"))
    except ValueError as e:
        raise Damaged(f"{path / 'model.safetensors'} is not a checkpoint's model: {e}") from None
    for position, file in state["stacks_on_disk"].items():
        try:
            store.stacks[int(position)] = OnDisk(path.parent / file, f"stack/{position}/")
        except (OSError, KeyError, SafetensorError) as e:
            raise Damaged(f"{path.parent / file} (which {path / 'state.json'} refers to) "
                          f"cannot be read: {e}") from None  # fmt: skip
    verify(store, plan, path / "model.safetensors")
    opt_state = None
    if optimizer and state["optimizer"] is not None:
        tensors = _tensors(path / "optimizer.safetensors")
        try:
            opt_state = join_optimizer(tensors, state["optimizer"])
        except (ValueError, KeyError, IndexError) as e:
            raise Damaged(f"{path / 'optimizer.safetensors'} does not match the optimizer "
                          f"state in {path / 'state.json'} ({e})") from None  # fmt: skip
    return store, opt_state, state, state["rng"]


def _tensors(file: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors, or `Damaged` naming it."""
    from safetensors.torch import load_file

    _regular(file)
    try:
        tensors = load_file(str(file))
    except FileNotFoundError:
        raise Damaged(f"{file} is missing; resume from another checkpoint or start the run "
                      "again") from None  # fmt: skip
    except (OSError, SafetensorError) as e:
        raise Damaged(f"{file} is damaged ({e}); resume from another checkpoint or start the "
                      "run again") from None  # fmt: skip
    return tensors


def verify(store: Store, plan: Plan, file: Path) -> None:
    """Every stored tensor is one the plan's model has, with its shape, and every stack and
    shared weight the model needs is there (checked on the meta device: nothing allocated)."""

    with torch.device("meta"):
        shared = {k: v.shape for k, v in Rack(plan).state_dict().items()}
        wanted = {f"shared/{k}": v for k, v in shared.items()}
        for position in store.stacks:
            if not 0 <= position < len(plan.stacks):
                raise Damaged(f"{file} holds stack {position}, which the plan has not")
            stack = BlockStack(plan.stacks[position], plan.model, plan.run.seed)
            wanted |= {f"stack/{position}/{k}": v.shape for k, v in stack.state_dict().items()}
    held = {f"shared/{k}": v.shape for k, v in store.shared.items()}
    for position, state in store.stacks.items():
        held |= {f"stack/{position}/{k}": _shape(state, k) for k in state}
    for key in sorted(set(held) | set(wanted)):
        if key not in wanted:
            raise Damaged(f"{file} holds `{key}`, which the plan's model has not: the "
                          "checkpoint is damaged or from another spec")  # fmt: skip
        if key not in held:
            raise Damaged(f"{file} lacks `{key}`: the checkpoint is damaged")
        if tuple(held[key]) != tuple(wanted[key]):
            raise Damaged(f"{file} holds `{key}` of shape {tuple(held[key])}, but the plan's "
                          f"model has {tuple(wanted[key])}: the checkpoint is damaged or from "
                          "another spec")  # fmt: skip
    for (position, name), _ in store.adapters.items():
        if not (0 <= position < len(plan.stacks) and name in ("stack", "trunk")):
            raise Damaged(f"{file} holds an adapter `{name}` for stack {position}, which the "
                          "plan has not")  # fmt: skip


def _shape(state, key: str) -> tuple[int, ...]:
    """A stored tensor's shape, without reading it when it lies on disk."""
    return tuple(state.shape_of(key)) if isinstance(state, OnDisk) else tuple(state[key].shape)


def _relative(file: Path, root: Path) -> str:
    """A checkpoint file as a path under `checkpoints/` (the run directory may move)."""
    file = Path(file).resolve()
    try:
        return file.relative_to(root.resolve()).as_posix()
    except ValueError:
        raise ValueError(f"{file} is not a checkpoint of this run") from None


def split_optimizer(sd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer state dict as tensors (safetensors) plus a JSON-ready rest. Nested
    entries (bitsandbytes keeps its 8-bit state in a dict per parameter) become paths."""
    tensors, scalars = {}, {}

    def walk(prefix: str, entry: dict) -> None:
        for key, value in entry.items():
            path = f"{prefix}/{key}"
            if isinstance(value, dict):
                walk(path, value)
            elif isinstance(value, torch.Tensor):
                tensors[path] = value.detach().contiguous().cpu()
            else:
                scalars[path] = value

    for index, entry in sd["state"].items():
        walk(str(index), entry)
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def join_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for flat, value in [*tensors.items(), *meta["scalars"].items()]:
        index, *keys = flat.split("/")
        entry = state.setdefault(int(index), {})
        for key in keys[:-1]:
            entry = entry.setdefault(key, {})
        entry[keys[-1]] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def _write_json(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    for child in path.iterdir():
        with open(child, "rb") as f:
            os.fsync(f.fileno())


def _prune(root: Path, keep: str) -> None:
    """Keep every stage-end checkpoint and the newest few step checkpoints; drop temp dirs."""
    steps = []
    for child in root.iterdir():
        if child.name.startswith(".tmp-"):
            shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(
                missing_ok=True
            )
        elif child.is_dir() and child.name != keep and not is_stage_end(child):
            steps.append(child)
    for old in sorted(steps)[: max(0, len(steps) - (KEEP_STEP_CHECKPOINTS - 1))]:
        shutil.rmtree(old, ignore_errors=True)


def plan_file(run_dir: Path) -> Path:
    """A run directory's plan.json, or a RunError saying there is no run."""
    if Path(run_dir).exists() and not Path(run_dir).is_dir():
        raise RunError(f"{run_dir} is a file, not a run directory")
    if not Path(run_dir).is_dir():
        raise RunError(f"{run_dir} is not a run directory (there is no such directory)")
    file = Path(run_dir) / "plan.json"
    if not file.exists():
        raise RunError(f"{run_dir} holds no run (it has no plan.json)")
    return file


_M_MMAP_THRESHOLD = -3  # malloc.h


def _set_threshold(size: int) -> None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, size)
    except (OSError, AttributeError):
        pass


@contextlib.contextmanager
def building():
    """Around building a stage's model."""
    _set_threshold(1 << 20)
    try:
        yield
    finally:
        _set_threshold(32 << 20)


class Metrics:
    def __init__(self, path: Path, events: Path | None = None) -> None:
        self.path = path
        self.lines = 0  # records written; a run sets it with `truncate` before it logs
        self.pending: list[str] | None = None  # what `truncate(..., later=True)` keeps
        self.events = events  # TensorBoard's folder, if the run writes event files
        self.writer = None

    def write(self, record: dict) -> None:
        if self.pending is not None:
            self._replace(self.pending)
            self.pending = None
        try:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:
            raise RunError(f"cannot write {self.path} ({e.strerror})") from None
        self.lines += 1
        if self.events is not None:
            self._event(record)

    def _event(self, record: dict) -> None:
        """The record as scalars at its global step: train/loss, lr, tokens_per_s, tokens
        and flops; val/loss. The writer starts at this process's first record, purging what
        an interrupted attempt wrote from that step on (as metrics.jsonl is truncated)."""
        step = record["global_step"]
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            try:
                self.writer = SummaryWriter(str(self.events), purge_step=step)
            except OSError as e:
                raise RunError(f"cannot write {self.events} ({e.strerror})") from None
        if record["kind"] == "eval":
            self.writer.add_scalar("val/loss", record["val_loss"], step)
        for key, value in record.items():
            if record["kind"] == "train" and key not in ("kind", "stage", "step", "global_step"):
                self.writer.add_scalar(f"train/{key}", value, step)
        self.writer.flush()

    def truncate(self, lines: int, *, later: bool = False) -> None:
        """Keep the first `lines` records (a resumed run rewrites what came after). A line
        cut short by a kill, or one that is not a record, is dropped. `later`: only when the
        first record is written, so a resume that fails before then changes nothing."""
        kept = [x for x in _complete_lines(self.path)[:lines] if _record(x) is not None]
        self.lines = len(kept)
        if later:
            self.pending = kept
        else:
            self._replace(kept)

    def _replace(self, kept: list[str]) -> None:
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text("".join(kept), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise RunError(f"cannot write {self.path} ({e.strerror})") from None


def _complete_lines(path: Path) -> list[str]:
    """The newline-terminated lines of a metrics file ([] when there is none). Anything but
    a regular file there (a directory, a FIFO, a device) is `Damaged`: never read."""
    if not path.exists():
        return []
    if not path.is_file():
        raise Damaged(f"{path} is not a regular file: move it away, and the run goes on")
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise Damaged(f"{path} cannot be read ({e.strerror})") from None
    return [line for line in text.splitlines(keepends=True) if line.endswith("\n")]


def _record(line: str) -> dict | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def read(path: Path) -> list[dict]:
    """The records of a metrics file (lines that are not records are left out)."""
    return [r for r in map(_record, _complete_lines(path)) if r is not None]


def plot(metrics_path: Path, out: Path) -> None:
    """Training loss per global step, one colour per stage, dashed lines at stage boundaries,
    validation loss as markers. Without matplotlib (a compiled script's machine may lack
    it) there is no plot; `sw run` always has it."""
    draw(read(metrics_path), out)


def draw(records: list[dict], out: Path) -> None:
    """The plot of `plot`, from records already read."""
    try:
        import matplotlib
    except ImportError:
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if r.get("kind") == "train" and _plottable(r, "loss")]
    evals = [r for r in records if r.get("kind") == "eval" and _plottable(r, "val_loss")]
    if not train:  # stopped before its first log line: nothing to draw
        return
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
    stages = sorted({r["stage"] for r in train})
    for stage in stages:
        rs = [r for r in train if r["stage"] == stage]
        (line,) = ax.plot(
            [r["global_step"] for r in rs], [r["loss"] for r in rs], lw=1.2, label=f"stage {stage}"
        )
        es = [r for r in evals if r["stage"] == stage]
        if es:
            ax.plot(
                [r["global_step"] for r in es],
                [r["val_loss"] for r in es],
                "o",
                color=line.get_color(),
                ms=4,
            )
        if rs and stage != stages[0]:  # after the previous stage's last step
            start = rs[0]["global_step"] - rs[0]["step"]
            ax.axvline(start + 0.5, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (lines: train, dots: validation)")
    ax.legend(fontsize=8, ncol=min(len(stages), 6))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, out)


def _plottable(record: dict, value: str) -> bool:
    """A record the plot can place: whole stage, step and global step numbers, and a value."""
    numbers = [record.get(k) for k in ("stage", "step", "global_step")]
    return all(isinstance(x, int) and not isinstance(x, bool) for x in numbers) and isinstance(
        record.get(value), int | float
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class StageSummary:
    stage: int
    kind: str
    steps: int
    train_loss: float
    val_loss: float | None
    seconds: float
    trainable: int
    tokens_per_s: float


class Progress:
    """What the loop reports as it goes; the CLI draws it, tests ignore it."""

    def stage_started(self, stage: Stage, done: int) -> None: ...
    def stepped(
        self, stage: Stage, step: int, loss: float | None, tokens_per_s: float | None
    ) -> None:
        """After every step; loss and rate only on logged steps (None otherwise)."""

    def stage_finished(self, summary: StageSummary) -> None: ...


@dataclasses.dataclass
class Trainer:
    """The harness around the loop: it builds each stage's model from the weight store (merging
    adapters first where a fuse stage asks), offloads what the stage does not change, runs
    `loop.train_stage`, and around it writes metrics, evaluations and checkpoints on the run's
    cadence; `restore` continues a run from a checkpoint."""

    plan: Plan
    data: Prepared
    run_dir: Path
    device: torch.device
    progress: Progress = dataclasses.field(default_factory=Progress)
    store: Store = dataclasses.field(default_factory=Store)
    state: RunState = dataclasses.field(default_factory=RunState)  # where the run is
    world: World = dataclasses.field(default_factory=World)  # its processes (rank 0 writes)
    summaries: list[StageSummary] = dataclasses.field(default_factory=list)  # the stages done
    metrics: Metrics = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        events = None
        if self.plan.run.tensorboard:
            events = self.run_dir / "tensorboard"
            if not tensorboard_present():
                raise RunError("the run asks for TensorBoard event files (run.tensorboard), but "
                               "the tensorboard package is not installed: pip install "
                               "'stackwise-dsl[tensorboard]', or remove the setting")  # fmt: skip
        self.metrics = Metrics(self.run_dir / "metrics.jsonl", events=events)

    def run(self) -> list[StageSummary]:
        """Every stage of the plan not done yet (see `restore`)."""
        for stage in self.plan.stages:
            self.stage(stage.number)
        return self.summaries

    def stage(self, number: int) -> StageSummary | None:
        """Train stage `number` (1-based), or nothing if a resumed run is past it."""
        if number < self.state.stage:
            return None
        return self.train_stage(self.plan.stages[number - 1])

    def restore(self, path: Path) -> None:
        """Continue from the checkpoint at `path` (`restored`)."""
        self.store, self.summaries, self.state = restored(path, self.plan, self.data,
                                                          self.metrics, self.world)  # fmt: skip

    def train_stage(self, stage: Stage) -> StageSummary:
        """Build the stage's model, train it from where the run is, evaluate, write back."""
        state = self.state
        if state.stage != stage.number:  # a stage trained out of order (tests)
            state = state.starting(stage.number)
        merged = merge_for(stage, self.store, self.plan) if state.step == 0 else set()
        with building():
            model = StageModel(self.plan, stage, self.store, self.device).train()
        offload_unchanging(self.store, self.run_dir, stage, keep=merged)
        cache = stage_cache(self.run_dir, stage, self.world)
        window = Window()
        if state.window is not None:
            window.resume(state.window)  # the next log line averages the same steps
        self.progress.stage_started(stage, state.step)
        started = time.perf_counter()

        net = shared(self.plan, model, cache, self.world)  # None when alone

        def on_step(now: RunState, loss: float, lr: float, snapshot) -> None:
            window.add(loss, self.plan.tokens_per_step)
            self._after_step(model, net, stage, now, lr, window, snapshot)

        self.state, loss = train_stage(self.plan, stage, model, self.data, state,
                                            cache=cache, on_step=on_step, world=self.world,
                                            net=net)  # fmt: skip
        if cache is not None and cache.directory is not None:
            cache.flush()
        val = evaluate(model, self.plan, stage, self.data, net)
        self._record_eval(stage, stage.steps, val)
        model.capture(self.store)
        summary = StageSummary(
            stage=stage.number, kind=stage.kind.value, steps=stage.steps,
            train_loss=window.last_loss if window.last_loss is not None else loss, val_loss=val,
            seconds=time.perf_counter() - started, trainable=trainable(model, stage, self.plan),
            tokens_per_s=window.overall_rate(),
        )  # fmt: skip
        self.summaries.append(summary)
        self._save(self.state, done=True)
        self.state = self.state.starting(stage.number + 1)
        self.progress.stage_finished(summary)
        return summary

    def _after_step(self, model, net, stage: Stage, now: RunState, lr: float,
                    window: Window, snapshot) -> None:  # fmt: skip
        run, step = self.plan.run, now.step
        last = step == stage.steps
        if step % run.log_every == 0 or last:
            loss, rate = window.flush()
            if self.world.main:
                self.metrics.write({
                    "kind": "train", "stage": stage.number, "step": step,
                    "global_step": now.global_step, "loss": loss, "lr": lr,
                    "tokens_per_s": rate, **self._spent(now),
                })  # fmt: skip
            self.progress.stepped(stage, step, loss, rate)
        else:
            self.progress.stepped(stage, step, None, None)
        if run.eval_every and step % run.eval_every == 0 and not last:
            self._record_eval(stage, step, evaluate(model, self.plan, stage, self.data,
                                                         net), now=now)  # fmt: skip
        if run.checkpoint_every and step % run.checkpoint_every == 0 and not last:
            model.capture(self.store)
            self._save(dataclasses.replace(snapshot(), window=window.state()), done=False)

    # --- records and checkpoints ---

    def _record_eval(self, stage: Stage, step: int, val: float | None, *,
                     now: RunState | None = None) -> None:  # fmt: skip
        now = self.state if now is None else now
        if val is not None and self.world.main:
            self.metrics.write({
                "kind": "eval", "stage": stage.number, "step": step,
                "global_step": now.global_step, "val_loss": val, **self._spent(now),
            })  # fmt: skip

    def _spent(self, now: RunState) -> dict:
        """What the run has trained on so far: tokens (the windows' inputs) and FLOPs."""
        return {"tokens": now.global_step * self.plan.tokens_per_step, "flops": now.flops}

    def _save(self, state: RunState, *, done: bool) -> None:
        """Rank 0 writes the checkpoint; the others wait for it (and read it when offloading)."""
        if self.world.main:
            save_run(self.run_dir, self.store, state, done=done, summaries=self.summaries,
                     metrics_lines=self.metrics.lines)  # fmt: skip
        else:  # the same store as rank 0's: every rank stops alike
            check_finite(self.store, state)
        self.world.barrier()


def check_finite(store: Store, state: RunState) -> None:
    """Diverged unless every weight in the store is finite."""
    broken = next((k for k, v in store.flat().items()
                   if v.is_floating_point() and not torch.isfinite(v).all()), None)  # fmt: skip
    if broken is not None:
        raise Diverged(state.stage, state.step, f"the weights became non-finite ({broken})")


def save_run(run_dir: Path, store: Store, state: RunState, *, done: bool,
             summaries: list[StageSummary], metrics_lines: int) -> Path:  # fmt: skip
    """Checkpoint the store at `state` (checkpoint.save). The store must be finite: a loss is
    measured before the update that may break the weights, so weights are checked too
    before they are kept."""
    check_finite(store, state)
    saved = {
        "stage": state.stage, "step": state.step, "stage_done": done,
        "global_step": state.global_step, "stream": state.stream, "flops": state.flops,
        "metrics_lines": metrics_lines, "scaler": state.scaler,
        "summaries": [dataclasses.asdict(x) for x in summaries], "window": state.window,
    }  # fmt: skip
    name = f"stage{state.stage:03d}-step{state.step:07d}"
    return save(run_dir, name, store, state.optimizer, saved)


def restored(path: Path, plan: Plan, data: Prepared, metrics: Metrics,
             world: World = World()) -> tuple[Store, list[StageSummary], RunState]:  # fmt: skip
    """The weight store, the stages done and where the run is, from the checkpoint at `path`
    (each file checked: checkpoint.load); metrics.jsonl keeps the records written before it.
    Its RNG state is restored where it was saved: before the next stage's model is built (at
    a stage's end) or after this stage's is (mid-stage), since building a model draws from
    torch's generator."""
    store, opt_state, saved, rng = load(path, plan)
    try:
        Stream.of(data, plan.run.seed).restore(saved["stream"])
    except ValueError as e:
        raise Damaged(f"{path / 'state.json'} is damaged: {e}") from None
    if world.main:
        metrics.truncate(saved["metrics_lines"], later=True)
    summaries = [StageSummary(**x) for x in saved["summaries"]]
    where = {"global_step": saved["global_step"], "stream": saved["stream"],
             "flops": saved["flops"]}  # fmt: skip
    if saved["stage_done"]:
        torch.set_rng_state(rng)
        return store, summaries, RunState(stage=saved["stage"] + 1, **where)
    state = RunState(stage=saved["stage"], step=saved["step"], rng=rng, optimizer=opt_state,
                     scaler=saved["scaler"], window=saved["window"], **where)  # fmt: skip
    return store, summaries, state


def offload_unchanging(store: Store, run_dir: Path, stage: Stage, keep: set[int]) -> None:
    """Masters a stage does not change leave memory for the stage-end checkpoint that holds
    them (the one just written, or resumed from); those in `keep` (merged since that
    checkpoint) stay."""
    last = latest(run_dir)
    if last is None or not is_stage_end(last):
        return
    fixed = [x.position for x in stage.parts
             if x.trains is not Trains.FULL and x.position not in keep]  # fmt: skip
    store.offload(fixed, last / "model.safetensors")


def trainable(model: StageModel, stage: Stage, plan: Plan) -> int:
    return sum(x.numel() for g in param_groups(model, stage, plan.optimizer)
               for x in g["params"])  # fmt: skip


def merge_for(stage: Stage, store: Store, plan: Plan) -> set[int]:
    """Fold trained adapters into their masters where the stage asks (MERGES), at its start
    (a stage resumed mid-way finds its store merged already); the stack positions merged."""
    key = merge_key(stage)
    if key is None:
        return set()
    merge = pick(MERGES, key, "adapter merge")
    return {position for position, _ in merge(store, plan, stage.number - 1)}


def stage_cache(run_dir: Path, stage: Stage, world: World = World()):
    """The stage's activation cache (CACHES), or None: each rank's own, over its windows."""
    key = cache_key(stage)
    make = None if key is None else pick(CACHES, key, "activation cache")
    return None if make is None else make(run_dir, stage, world)


MERGES = {}


CACHES = {}


@dataclasses.dataclass
class Window:
    """Losses and token counts since the last log line."""

    losses: list[float] = dataclasses.field(default_factory=list)
    tokens: int = 0
    since: float = dataclasses.field(default_factory=time.perf_counter)
    total_tokens: int = 0
    started: float = dataclasses.field(default_factory=time.perf_counter)
    last_loss: float | None = None

    def add(self, loss: float, tokens: int) -> None:
        self.losses.append(loss)
        self.tokens += tokens
        self.total_tokens += tokens

    def state(self) -> dict:
        """What a mid-stage checkpoint keeps: the losses and tokens since the last log."""
        return {"losses": list(self.losses), "tokens": self.tokens}

    def resume(self, state: dict) -> None:
        self.losses, self.tokens = list(state["losses"]), state["tokens"]

    def flush(self) -> tuple[float, float]:
        now = time.perf_counter()
        loss = float(np.mean(self.losses))
        rate = self.tokens / max(now - self.since, 1e-9)
        self.losses, self.tokens, self.since, self.last_loss = [], 0, now, loss
        return loss, rate

    def overall_rate(self) -> float:
        return self.total_tokens / max(time.perf_counter() - self.started, 1e-9)


def begin(plan: Plan, run_dir: Path, *, spec_text: str = "", info: dict | None = None,
          progress: Progress | None = None, world: World = World()) -> Trainer:  # fmt: skip
    """A new run: its directory (`create`, by rank 0) and its trainer (`start`). If it
    cannot start (no such device, data that cannot be read), what `create` wrote is removed
    again, so the same command can be run again once the cause is fixed."""
    run_dir = Path(run_dir)
    existed = run_dir.exists()
    on_main(world, lambda: create(plan, run_dir, spec_text=spec_text, info=info))
    try:
        return start(plan, run_dir, None, progress, world)
    except RunError:
        if world.main:
            forget(run_dir, existed)
        raise


class Elsewhere(RunError):
    """Another rank's error (rank 0's, which reports it): this rank stops without a word."""


def on_main(world: World, fn):
    """`fn()` on rank 0 alone; every rank returns its result or raises its `RunError`
    (the others as `Elsewhere`), so no rank waits for one that stopped."""
    result, error = None, None
    if world.main:
        try:
            result = fn()
        except RunError as e:
            error = e
    said = world.from_main((result, None if error is None else str(error)))
    if error is not None:
        raise error
    if said[1] is not None:
        raise Elsewhere(said[1])
    return said[0]


def forget(run_dir: Path, existed: bool) -> None:
    """Remove what `create` wrote (and the directory, if it made it and nothing else came
    to be in it), as far as it can: the error that stopped the run is what gets reported."""
    for name in ("plan.json", "run.json", "spec.sw", "metrics.jsonl", "tokenizer.json"):
        with contextlib.suppress(OSError):
            (run_dir / name).unlink(missing_ok=True)
    if not existed:
        with contextlib.suppress(OSError):
            run_dir.rmdir()


def create(plan: Plan, run_dir: Path, *, spec_text: str = "", info: dict | None = None) -> Path:
    """A new run directory holding the spec, the plan and what started it (run.json)."""
    run_dir = Path(run_dir)
    if (run_dir / "plan.json").exists():
        raise RunError(
            f"{run_dir} already holds a run: resume it with --resume {run_dir}, "
            "or pick another --run-dir"
        )
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"{run_dir} is a file, not a directory: pick another --run-dir")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"cannot create the run directory {run_dir} ({e.strerror})") from None
    try:
        (run_dir / "spec.sw").write_text(spec_text, encoding="utf-8")
        started = {"version": __version__, "plan_format": PLAN_FORMAT, **(info or {})}
        (run_dir / "run.json").write_text(json.dumps(started, indent=1) + "\n")
        plan_text = json.dumps(to_json(plan), indent=1) + "\n"
        (run_dir / "plan.json").write_text(plan_text, encoding="utf-8")  # last: marks a run
    except OSError as e:
        raise RunError(f"cannot write the run directory {run_dir} ({e.strerror})") from None
    return run_dir


class Complete(RunError):
    """A run asked to resume has finished its last stage: nothing is left to do."""


def start(plan: Plan, run_dir: Path, resume_from: Path | None = None,
          progress: Progress | None = None, world: World = World()) -> Trainer:  # fmt: skip
    """What comes before the first stage (`setting_up`), and the trainer, restored from
    `resume_from` when given."""

    def shared() -> None:
        if plan.data.batch % world.size:
            raise RunError(
                f"data.batch is {plan.data.batch}, which {world.size} processes cannot share "
                f"equally: make it a multiple of {world.size}, or run on fewer processes"
            )

    on_main(world, shared)
    device, data = setting_up(plan, world)
    on_main(world, lambda: keep_tokenizer(run_dir, data.tokenizer))
    trainer = Trainer(plan=plan, data=data, run_dir=run_dir, device=device,
                      progress=progress or Progress(), world=world)  # fmt: skip
    if resume_from is not None:
        trainer.restore(resume_from)
        return trainer
    if world.main:  # from the start, in a new directory or one whose run never reached one
        trainer.metrics.truncate(0)
    return trainer


def setting_up(plan: Plan, world: World = World()) -> tuple[torch.device, Prepared]:
    """The device (a rank's own GPU), the seed, and the data (read, tokenized, windowed and
    split)."""
    device = device_for(plan.run.device)
    if device.type == "cuda" and world.size > 1:
        device = torch.device("cuda", world.local_rank)
    torch.manual_seed(derive(plan.run.seed, "global"))
    try:
        data = prepare(plan.data, plan.run.seed)
    except DataError as e:
        raise RunError(str(e)) from None
    if data.tokenizer.vocab_size > plan.model.vocab:
        raise RunError(
            f"the tokenizer has {data.tokenizer.vocab_size} ids, but the model's vocab is "
            f"{plan.model.vocab}"
        )
    return device, data


def keep_tokenizer(run_dir: Path, tokenizer) -> None:
    """tokenizer.json: the run's exact vocabulary, which sampling and evaluation read. A
    resumed run's data must give the same one (a changed data file could shift every id)."""
    file = run_dir / "tokenizer.json"
    saved = tokenizer.saved()
    if file.exists():
        try:
            kept = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise Damaged(
                f"{file} cannot be read ({e}); it is the run's vocabulary: "
                "restore it, or delete it for the data to give it again"
            ) from None
        if kept != saved:
            raise RunError(
                f"the data now gives another vocabulary than the run was trained "
                f"with ({file}): restore the data the run started with"
            )
        return
    try:
        file.write_text(json.dumps(saved) + "\n", encoding="utf-8")
    except OSError as e:
        raise RunError(f"cannot write {file} ({e.strerror})") from None


@contextlib.contextmanager
def finishing(trainer: Trainer):
    """Around the stages: draw loss.png whatever happens, write summary.json when every
    stage is done, and turn a diverged run into a message naming its last good checkpoint."""
    run_dir = trainer.run_dir
    try:
        yield trainer
    except Diverged as e:  # on every rank alike (the loss is summed over them): rank 0 says it
        if not trainer.world.main:
            raise Elsewhere(str(e)) from None
        raise RunError(f"{e}; {_last_good(run_dir)}") from None
    except (torch.OutOfMemoryError, MemoryError) as e:
        raise _out_of_memory(e, run_dir) from None
    except RuntimeError as e:  # the CPU allocator's way of saying it
        if "can't allocate memory" not in str(e):
            raise
        raise _out_of_memory(e, run_dir) from None
    finally:
        if trainer.world.main and (run_dir / "metrics.jsonl").exists():
            _plot(run_dir)
    if not trainer.world.main:
        return
    summary = json.dumps([dataclasses.asdict(x) for x in trainer.summaries], indent=1)
    try:
        (run_dir / "summary.json").write_text(summary + "\n", encoding="utf-8")
    except OSError as e:
        raise RunError(f"cannot write {run_dir / 'summary.json'} ({e.strerror})") from None


def _last_good(run_dir: Path) -> str:
    last = latest(run_dir)
    return f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"


def _out_of_memory(e: Exception, run_dir: Path) -> RunError:
    said = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return RunError(
        f"out of memory ({said[:200]}): `sw plan` shows what each stage holds; make the "
        f"model or the batch smaller, or hold the trunk in fewer bits; {_last_good(run_dir)}"
    )


def _plot(run_dir: Path) -> None:
    """loss.png from metrics.jsonl; a failure to write it is reported unless the run is
    already stopping for another reason (which it would hide)."""
    try:
        plot(run_dir / "metrics.jsonl", run_dir / "loss.png")
    except OSError as e:
        if sys.exc_info()[0] is None:
            raise RunError(f"cannot write {run_dir / 'loss.png'} ({e.strerror})") from None


def device_for(device: Device) -> torch.device:
    if device is Device.CUDA and not torch.cuda.is_available():
        raise RunError(
            "the run asks for device cuda, but this machine has no CUDA GPU (use --device cpu)"
        )
    if device is Device.CPU or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


class Printed(Progress):
    """A script's progress: a line when a stage starts and one per logged step."""

    def stage_started(self, stage: Stage, done: int) -> None:
        print(f"stage {stage.number} ({stage.kind.value}), {stage.steps} steps")

    def stepped(self, stage: Stage, step: int, loss: float | None,
                tokens_per_s: float | None) -> None:  # fmt: skip
        if loss is not None:
            print(f"  step {step:>6}  loss {loss:.4f}  {tokens_per_s:,.0f} tokens/s")


def reopen(run_dir: Path, plan: Plan) -> tuple[Plan, Path | None]:
    """The run in `run_dir`, which this script's `plan` must have started (with the steps,
    device and directory the run has), and its latest checkpoint (None: none written yet).
    `Complete` for a run with nothing left to do."""
    ours = _ours(run_dir, plan, "resume it with what started it (`sw run --resume` reads the "
                 "run's own plan)")  # fmt: skip
    last = latest(run_dir)
    if last is not None:
        state = read_state(last, ours)
        if state["stage_done"] and state["stage"] >= len(ours.stages):
            raise Complete(f"the run in {run_dir} is already complete")
    return ours, last


def _ours(run_dir: Path, plan: Plan, instead: str) -> Plan:
    """The run's plan, if this script's `plan` started it (RunError saying what to do
    `instead` if not)."""
    theirs = read_json(plan_file(run_dir))
    try:  # what --max-steps changes: a stage's steps and the schedule's length
        steps = [(s["steps"], s.get("schedule_steps")) for s in theirs["stages"]]
        run = dataclasses.replace(plan.run, dir=theirs["run"]["dir"],
                           device=Device(theirs["run"]["device"]))  # fmt: skip
    except (KeyError, TypeError, ValueError, AttributeError):
        steps, run = [], plan.run
    ours = None
    if len(steps) == len(plan.stages) and all(_a_count(n) and (m is None or _a_count(m))
                                              for n, m in steps):  # fmt: skip
        pairs = zip(plan.stages, steps, strict=True)
        stages = tuple(dataclasses.replace(s, steps=n, schedule_steps=m) for s, (n, m) in pairs)
        ours = dataclasses.replace(plan, stages=stages, run=run)
    if ours is None or to_json(ours) != theirs:
        raise RunError(f"{run_dir / 'plan.json'} is not this script's plan (a run of another "
                       f"plan, or its plan.json was changed): {instead}")  # fmt: skip
    return ours


def sample_run(run_dir: Path, plan: Plan, prompt: str, device: Device | None = None,
               **options) -> list[str]:  # fmt: skip
    """Samples from the latest checkpoint of the run in `run_dir` (which this script's plan
    must have started), as `sw sample` draws them (core/sampling.py `sample`: options), on
    `device` (default the run's).
    ValueError for a request that does not fit the model; RunError for the run."""
    ours = _ours(run_dir, plan, "sample it with `sw sample`, which reads the run's own plan")
    last = latest(run_dir)
    if last is None:
        raise RunError(f"{run_dir} has no checkpoint yet: train first")
    store, _, state, _ = load(last, ours, optimizer=False)
    file = run_dir / "tokenizer.json"
    try:
        tokenizer = tokenizer_from(json.loads(file.read_text(encoding="utf-8")), ours.data)
    except (OSError, ValueError, DataError) as e:
        raise RunError(f"{file} cannot be read ({e}); it is the run's vocabulary") from None
    stage = ours.stages[state["stage"] - 1]
    model = StageModel(ours, stage, store, device_for(device or ours.run.device)).eval()
    try:
        ids = encode_prompt(tokenizer, prompt)
    except DataError as e:
        raise ValueError(f"the prompt cannot be encoded with the run's tokenizer: {e}") from None
    out = sample(model, tokenizer, ids, **options)
    return [tokenizer.decode(row) for row in out.ids.tolist()]


def _a_count(x) -> bool:
    return type(x) is int and x >= 1


# --- what this script was compiled from (written to its run directory) -----------------------

SPEC_FILE = "specs/diffusion.sw"
SPEC_SHA256 = "c4a609430cec17b6e42a074f1ff6eb7cad9693216c1bc07801f04119429f1e8d"
SPEC_TEXT = (
    "# Right-to-left masked diffusion with time as depth: the README's main job.\n"
    "#\n"
    "# The first stack trained sits next to the head and sees the least noise; each later stack\n"
    "# is inserted at the input side and trained, through the frozen suffix, at a higher mask\n"
    '# ratio. The trunk is held in 4-bit NF4 with a small trunk LoRA ("progressive QLoRA"), each\n'
    "# new stack gets its own stack LoRA, and a fuse stage trains all the adapters together.\n"
    "let d = 128\n"
    "\n"
    "model { d_model = d, context = 64, norm = rmsnorm, position = rope(theta = 10000), head = "
    "tied }\n"
    "\n"
    "block denoiser {\n"
    "  attention = gqa(heads = 4, kv_heads = 2, mode = bidirectional)\n"
    "  ffn = swiglu(hidden = 4 * d)\n"
    "}\n"
    "\n"
    "stack s = 2 x denoiser\n"
    "\n"
    "objective = masked_diffusion(time = depth, mask = linear(0.9 -> 0.15))\n"
    "\n"
    "grow prepend 4 x s {\n"
    "  steps = 150\n"
    "  init = copy  # a new stack starts as a copy of its neighbour in the trunk\n"
    "  new { precision = fp32, lora(rank = 16, alpha = 32) }  # bf16 where the hardware has it\n"
    "  trunk { frozen, precision = nf4, lora(rank = 8, alpha = 16, pattern = decreasing) }\n"
    "}\n"
    "\n"
    "fuse { steps = 100, lr = 1e-4, trunk { adapters } }\n"
    "\n"
    "data { source = stdlib, tokenizer = bytes, batch = 16 }\n"
    "optimizer = adamw(lr = 1e-3, weight_decay = 0.1, warmup = 20, clip = 1.0)\n"
    "run { seed = 0, log every 10 steps, eval every 50 steps, checkpoint every 100 steps }\n"
)
OVERRIDES = []
# what the code holds: dispatch.FEATURES, and the entries of its tables
COMPILED_FOR = [
    "ADAPTERS:lora",
    "ATTENTIONS:dense",
    "FFNS:swiglu",
    "FROZEN_LINEARS:nf4",
    "NOISES:masked_diffusion/depth",
    "OPTIMIZERS:adamw",
    "PREDICTED:masked_diffusion/depth",
    "RESTORERS:bytes",
    "SOURCES:stdlib",
    "TOKENIZERS:bytes",
    "adapters",
    "low_precision",
]


# --- main ----------------------------------------------------------------------------------


def _positive(text: str) -> int:
    """A whole number of at least 1 (argparse shows the message)."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def _directory(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError("the directory is empty: name a directory")
    return Path(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=_directory, help="where the run writes")
    parser.add_argument("--max-steps", type=_positive, help="stop every stage after N steps")
    parser.add_argument("--resume", type=_directory, help="continue the run in this directory")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"])
    sampling = parser.add_argument_group("sampling (--sample: from the run's latest checkpoint)")
    sampling.add_argument("--sample", action="store_true", help="generate instead of training")
    sampling.add_argument("--prompt", default="", help="text; <mask> marks a place to fill")
    sampling.add_argument("--max-new-tokens", type=int)
    sampling.add_argument("--num-samples", type=_positive, default=1)
    sampling.add_argument("--temperature", type=float, default=1.0, help="0: the most likely")
    sampling.add_argument("--top-k", type=int)
    sampling.add_argument("--top-p", type=float)
    sampling.add_argument("--seed", type=int, default=0)
    sampling.add_argument("--sampler", help="depth or fused")
    sampling.add_argument("--steps", type=int, help="time steps (time as input)")
    sampling.add_argument("--block", type=int, help="low_confidence's block length")
    args = parser.parse_args()
    given = [a.dest for a in sampling._group_actions if getattr(args, a.dest) != a.default]
    if not args.sample and given:
        parser.error(f"--{given[0].replace('_', '-')} is for sampling: add --sample")
    if args.sample and args.max_steps is not None:
        parser.error("--sample draws from a run's checkpoint: leave out --max-steps")
    if args.resume is not None and (args.max_steps is not None or args.run_dir is not None):
        parser.error("--resume continues a run with its own plan and directory: "
                     "leave out --max-steps and --run-dir")  # fmt: skip
    device = Device(args.device) if args.device else None
    where = args.resume or args.run_dir
    world = World()  # one process; under torchrun, this one's rank among them (joined below)
    try:
        plan = from_json(PLAN)
        compiled_for(plan, frozenset(COMPILED_FOR))
        if [s.number for s in plan.stages] != list(range(1, 5 + 1)):
            raise RunError("PLAN's stages must be numbered 1 to 5, one for each "
                           "call below: compile the spec again")  # fmt: skip
        if args.sample:
            where = where or Path(plan.run.dir)
            options = {k: getattr(args, k) for k in ("max_new_tokens", "num_samples", "temperature",
                                                     "top_k", "top_p", "seed", "sampler", "steps",
                                                     "block")}  # fmt: skip
            try:
                texts = sample_run(where, plan, args.prompt, device=device, **options)
            except ValueError as e:  # a request that does not fit the model
                print(f"error: {e}", file=sys.stderr)
                raise SystemExit(2) from None
            for i, text in enumerate(texts):
                print(f"--- sample {i + 1} ---\n{text}" if len(texts) > 1 else text)
            return
        if args.resume is not None:  # the run's own steps, device and directory
            where = args.resume
            plan, last = reopen(where, plan)
            if device is not None:
                plan = dataclasses.replace(plan, run=dataclasses.replace(plan.run, device=device))
            world = joined(cuda=device_for(plan.run.device).type == "cuda")
            run = start(plan, where, last, Printed() if world.main else None, world)
        else:
            if args.max_steps is not None:
                cap = args.max_steps  # cut a longer stage; its rates stay the full stage's
                stages = tuple(
                    dataclasses.replace(s, steps=cap, schedule_steps=s.schedule_steps or s.steps)
                    if s.steps > cap else s for s in plan.stages
                )  # fmt: skip
                plan = dataclasses.replace(plan, stages=stages)
            where = args.run_dir if args.run_dir is not None else Path(plan.run.dir)
            plan = dataclasses.replace(plan, run=dataclasses.replace(
                plan.run, dir=str(where), device=device or plan.run.device))  # fmt: skip
            info = {"spec": SPEC_FILE, "overrides": OVERRIDES, "max_steps": args.max_steps,
                    "compiled": SPEC_SHA256}  # fmt: skip
            world = joined(cuda=device_for(plan.run.device).type == "cuda")
            run = begin(plan, where, spec_text=SPEC_TEXT, info=info,
                        progress=Printed() if world.main else None, world=world)  # fmt: skip
        with finishing(run):
            # Stage 1 of 5: grow, 150 steps, masked diffusion (time as depth), lr 0.001
            #   stack 3 (s): new, fp32, random init, LoRA r16 stack, mask 0.15
            run.stage(1)
            # Stage 2 of 5: grow, 150 steps, masked diffusion (time as depth), lr 0.001
            #   stack 2 (s): new, fp32, copy init, LoRA r16 stack, mask 0.40
            #   stack 3 (s): trunk, nf4, frozen, LoRA r16 stack + r8 trunk, mask 0.15
            run.stage(2)
            # Stage 3 of 5: grow, 150 steps, masked diffusion (time as depth), lr 0.001
            #   stack 1 (s): new, fp32, copy init, LoRA r16 stack, mask 0.65
            #   stack 2 (s): trunk, nf4, frozen, LoRA r16 stack + r4 trunk, mask 0.40
            #   stack 3 (s): trunk, nf4, frozen, LoRA r16 stack + r8 trunk, mask 0.15
            run.stage(3)
            # Stage 4 of 5: grow, 150 steps, masked diffusion (time as depth), lr 0.001
            #   stack 0 (s): new, fp32, copy init, LoRA r16 stack, mask 0.90
            #   stack 1 (s): trunk, nf4, frozen, LoRA r16 stack + r2 trunk, mask 0.65
            #   stack 2 (s): trunk, nf4, frozen, LoRA r16 stack + r4 trunk, mask 0.40
            #   stack 3 (s): trunk, nf4, frozen, LoRA r16 stack + r8 trunk, mask 0.15
            run.stage(4)
            # Stage 5 of 5: fuse, 100 steps, masked diffusion (time as depth), lr 0.0001
            #   stack 0 (s): trunk, nf4, adapters train, LoRA r16 stack + r1 trunk, mask 0.90
            #   stack 1 (s): trunk, nf4, adapters train, LoRA r16 stack + r2 trunk, mask 0.65
            #   stack 2 (s): trunk, nf4, adapters train, LoRA r16 stack + r4 trunk, mask 0.40
            #   stack 3 (s): trunk, nf4, adapters train, LoRA r16 stack + r8 trunk, mask 0.15
            run.stage(5)
    except Complete as e:  # nothing to resume
        if world.main:
            print(e)
        return
    except Elsewhere:  # rank 0 says what stopped the run, and exits with its status
        return
    except (RunError, NotCompiled) as e:
        who = f" (rank {world.rank} of {world.size})" if world.size > 1 else ""
        raise SystemExit(f"error{who}: {e}") from None
    except PlanFormatError as e:  # PLAN edited into something that is not a plan
        raise SystemExit(f"error: this script's PLAN is wrong: {e}") from None
    except KeyboardInterrupt:
        if not world.main:  # rank 0 says it
            raise SystemExit(130) from None
        resumable = where and not args.sample
        print(f"interrupted; continue with --resume {where}" if resumable else "interrupted",
              file=sys.stderr)  # fmt: skip
        raise SystemExit(130) from None
    finally:
        world.close()
    if not world.main:
        return
    for s in run.summaries:
        val = "-" if s.val_loss is None else f"{s.val_loss:.4f}"
        print(f"stage {s.stage} ({s.kind}): {s.steps} steps, train loss {s.train_loss:.4f}, "
              f"val loss {val}, {s.seconds:.1f} s")  # fmt: skip
    print(f"run written to {where}")


if __name__ == "__main__":
    main()
