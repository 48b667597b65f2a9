"""Optimizers: parameter groups with their own learning rates, warmup, and a schedule."""

from __future__ import annotations

import math

import torch

from stackwise_dsl.core.precision import import_bitsandbytes
from stackwise_dsl.ir.enums import LrSchedule
from stackwise_dsl.lower import plan as p
from stackwise_dsl.lower.dispatch import optimizer_key, pick


def lr_factor(o: p.Optimizer, step: int, steps: int) -> float:
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


def build(o: p.Optimizer, groups: list[dict]) -> torch.optim.Optimizer:
    """The optimizer over `groups` (dicts of params, lr, weight_decay, name)."""
    groups = [g for g in groups if g["params"]]
    for g in groups:
        g["base_lr"] = g["lr"]
    return pick(OPTIMIZERS, optimizer_key(o), "optimizer")(o, groups)


def _adamw(o: p.Optimizer, groups: list[dict]) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=groups[0]["lr"], betas=o.method.betas, eps=o.method.eps,
                             foreach=False)  # fmt: skip


def _sgd(o: p.Optimizer, groups: list[dict]) -> torch.optim.Optimizer:
    sgd = o.method
    nesterov = sgd.nesterov and sgd.momentum > 0
    return torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=sgd.momentum, nesterov=nesterov)


def _adamw8bit(o: p.Optimizer, groups: list[dict]) -> torch.optim.Optimizer:
    bnb = import_bitsandbytes()
    return bnb.optim.AdamW8bit(groups, lr=groups[0]["lr"], betas=o.method.betas,
                                eps=o.method.eps)  # fmt: skip


OPTIMIZERS = {
    "adamw": _adamw,
    "sgd": _sgd,
    "adamw8bit": _adamw8bit,
}


def set_lr(opt: torch.optim.Optimizer, o: p.Optimizer, step: int, steps: int) -> float:
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


# the moments each optimizer keeps per parameter, in the parameter's shape
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
