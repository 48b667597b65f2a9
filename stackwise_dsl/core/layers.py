"""Norms, rotary positions and feed-forward layers. Linear layers have no bias."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stackwise_dsl.ir.enums import Norm


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


class GeluFfn(nn.Module):
    """down(gelu(up(x)))"""

    def __init__(self, d_model: int, hidden: int) -> None:
        super().__init__()
        self.up = nn.Linear(d_model, hidden, bias=False)
        self.down = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))
