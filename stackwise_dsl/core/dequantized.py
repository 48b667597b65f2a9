"""Frozen layers computed from weights rebuilt out of compact storage (core/precision.py,
core/nvfp4.py), without keeping a full-precision copy alive for the backward pass."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
