"""Attention: dense (MHA, GQA, MQA) through scaled_dot_product_attention, MLA through a
shared low-rank key/value latent, and random-feature kernel attention in linear time.

Layer names are the LoRA targets: q, k, v, o (and q_down, kv_down for MLA's latents).
"""

from __future__ import annotations

import math

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from stackwise_dsl.core.layers import apply_rope
from stackwise_dsl.ir.enums import KernelKind, Mode
from stackwise_dsl.lower import plan as p
from stackwise_dsl.lower.dispatch import attention_key, pick


class SelfAttention(nn.Module):
    """Dense attention: MHA, GQA and MQA (kv_heads < heads share key/value heads), through
    scaled_dot_product_attention."""

    def __init__(
        self,
        a: p.Attention,
        d_model: int,
        *,
        features: torch.Generator | None,
    ) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = a.heads, a.kv_heads, a.head_dim
        self.causal = a.mode is Mode.CAUSAL
        self._projections(a, d_model, a.heads * a.head_dim, a.kv_heads * a.head_dim)
        self.o = nn.Linear(a.heads * a.head_dim, d_model, bias=False)

    def _projections(self, a: p.Attention, d_model: int, inner: int, kv: int) -> None:
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


@attrs.define
class Seen:
    """What the attention modules keep of a sequence while it is decoded token by token:
    `offset` tokens read so far (the sampler moves it on after each call), and each
    module's own state, by module."""

    offset: int = 0
    states: dict = attrs.field(factory=dict)

    def of(self, module: nn.Module) -> dict:
        return self.states.setdefault(id(module), {})


class LatentAttention(SelfAttention):
    """MLA: queries from a low-rank latent of x (q_down, q_rank wide), keys and values from
    one shared latent (kv_down, kv_rank wide)."""

    def _projections(self, a: p.Attention, d_model: int, inner: int, kv: int) -> None:
        q_rank, kv_rank = a.latent.q_rank, a.latent.kv_rank
        self.q_down = nn.Linear(d_model, q_rank, bias=False)
        self.q = nn.Linear(q_rank, inner, bias=False)
        self.kv_down = nn.Linear(d_model, kv_rank, bias=False)
        self.k = nn.Linear(kv_rank, kv, bias=False)
        self.v = nn.Linear(kv_rank, kv, bias=False)

    def _inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.q_down(x), self.kv_down(x)

    def _attend(self, q, kv_in, rope, at, state: dict, offset: int) -> torch.Tensor:
        """Only the kv latent (kv_rank wide) is kept; keys and values are expanded from it."""
        latent = kv_in if "latent" not in state else torch.cat([state["latent"], kv_in], dim=1)
        state["latent"] = latent
        k, v = self._heads(self.k(latent)), self._heads(self.v(latent))
        if rope is not None:
            k = apply_rope(k, *rope)
        return self._softmax(q, k, v, offset)


class KernelAttention(SelfAttention):
    """softmax(q·k) replaced by a kernel φ(q)·φ(k), in time linear in the sequence length:
    the linear kernel, or random Fourier features of a gaussian, laplacian or uniform
    kernel (drawn from the stack's seeded generator and saved with the model)."""

    def __init__(
        self,
        a: p.Attention,
        d_model: int,
        *,
        features: torch.Generator | None,
    ) -> None:
        super().__init__(a, d_model, features=features)
        self.kernel = a.kernel.kernel
        if self.kernel is not KernelKind.LINEAR:
            w, b = random_features(self.kernel, a.head_dim, a.kernel.kernel_dim, features)
            self.register_buffer("feature_w", w)  # (hd, D): fixed, seeded, saved with the model
            self.register_buffer("feature_b", b)  # (D,)

    def _mix(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.kv_heads != self.heads:
            repeat = self.heads // self.kv_heads
            k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        fq, fk = self._features(q), self._features(k)  # (B, H, T, D)
        return kernel_average(fq, fk, v, causal=self.causal)

    def _attend(self, q, kv_in, rope, at, state: dict, offset: int) -> torch.Tensor:
        """Causal kernel attention as a recurrence: the running sum of φ(k_j) v_jᵀ (B, H, D,
        hd), whatever the length."""
        if not self.causal:
            raise ValueError("bidirectional kernel attention has no token-by-token decoding")
        k, v = self._heads(self.k(kv_in)), self._heads(self.v(kv_in))
        if at is not None:
            k = apply_rope(k, *at)
        if self.kv_heads != self.heads:
            repeat = self.heads // self.kv_heads
            k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        fq, fk = self._features(q), self._features(k)
        prefix = (fk.unsqueeze(-1) * v.unsqueeze(-2)).cumsum(dim=-3)  # (B, H, T, D, hd)
        if "sums" in state:
            prefix = prefix + state["sums"].unsqueeze(-3)
        state["sums"] = prefix[..., -1, :, :]
        y = (fq.unsqueeze(-2) @ prefix).squeeze(-2)
        counts = torch.arange(offset + 1, offset + q.shape[2] + 1, device=y.device)
        return y / counts.to(y.dtype).view(-1, 1)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        """φ(x): the identity for the linear kernel (scaled by hd^-1/4 so φ(q)·φ(k) = q·k/√hd),
        else sqrt(2/D) cos(xW + b) on x scaled by hd^-1/4."""
        x = x * self.head_dim**-0.25
        if self.kernel is KernelKind.LINEAR:
            return x
        d = self.feature_w.shape[1]
        return math.sqrt(2.0 / d) * torch.cos(x @ self.feature_w + self.feature_b)


class LatentKernelAttention(KernelAttention, LatentAttention):
    """MLA's latent projections with a kernel in place of softmax (`mlgka`)."""


ATTENTIONS = {
    "dense": SelfAttention,
    "latent": LatentAttention,
    "kernel": KernelAttention,
    "latent_kernel": LatentKernelAttention,
}


def make_attention(
    a: p.Attention, d_model: int, *, features: torch.Generator | None
) -> SelfAttention:
    """The attention module of a block, by kind (see `attention_key`)."""
    kind = pick(ATTENTIONS, attention_key(a), "attention kind")
    return kind(a, d_model, features=features)


def kernel_average(
    fq: torch.Tensor, fk: torch.Tensor, v: torch.Tensor, *, causal: bool
) -> torch.Tensor:
    """y_i = mean over attended j of (φ(q_i)·φ(k_j)) v_j, computed as φ(q_i)ᵀ(Σ_j φ(k_j) v_jᵀ)
    in time linear in the sequence length. (B, H, T, D) x2, (B, H, T, hd) → (B, H, T, hd)."""
    t = fq.shape[-2]
    if not causal:
        state = fk.transpose(-2, -1) @ v  # (B, H, D, hd)
        return (fq @ state) / t
    outer = fk.unsqueeze(-1) * v.unsqueeze(-2)  # (B, H, T, D, hd)
    prefix = outer.cumsum(dim=-3)  # Σ_{j<=i} φ(k_j) v_jᵀ
    y = (fq.unsqueeze(-2) @ prefix).squeeze(-2)  # (B, H, T, hd)
    counts = torch.arange(1, t + 1, device=y.device, dtype=y.dtype).view(t, 1)
    return y / counts


def random_features(kind: KernelKind, head_dim: int, count: int, gen: torch.Generator | None):
    """Frequencies W (hd, D) and phases b (D,) of random Fourier features: normal W for the
    gaussian kernel, Cauchy W for the laplacian, uniform W (unit variance) for the sinc-shaped
    'uniform' kernel; b ~ U(0, 2π)."""
    shape = (head_dim, count)
    if kind is KernelKind.GAUSSIAN:
        w = torch.randn(shape, generator=gen)
    elif kind is KernelKind.LAPLACIAN:
        w = torch.tan(math.pi * (torch.rand(shape, generator=gen) - 0.5))
    else:
        w = (torch.rand(shape, generator=gen) * 2 - 1) * math.sqrt(3.0)
    b = torch.rand(count, generator=gen) * 2 * math.pi
    return w, b
