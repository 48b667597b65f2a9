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
