"""The learning-rate schedule (core/optim.py): warmup from zero, then decay to min_lr, an
absolute floor, per parameter group."""

from __future__ import annotations

import math

import pytest
import torch

from stackwise_dsl.core import optim
from tests.runtime.helpers import plan_of, small


def _rates(optimizer: str, steps: int, base: tuple[float, ...] = (1e-3, 1e-5)) -> list[list[float]]:
    plan = plan_of(
        small().replace("optimizer = adamw(lr = 3e-3, warmup = 0)", f"optimizer = {optimizer}")
    )
    params = [torch.nn.Parameter(torch.zeros(2, 2)) for _ in base]
    opt = optim.build(plan.optimizer, [{"params": [x], "lr": lr, "weight_decay": 0.0}
                                       for x, lr in zip(params, base, strict=True)])  # fmt: skip
    out = []
    for step in range(1, steps + 1):
        optim.set_lr(opt, plan.optimizer, step, steps)
        out.append([g["lr"] for g in opt.param_groups])
    return out


def test_warmup_rises_from_zero_then_cosine_falls_to_the_absolute_floor():
    rates = _rates("adamw(lr = 1e-3, warmup = 4, min_lr = 1e-4)", 12)
    # warmup: rate x step / warmup, from zero, even with a floor above zero
    assert [r[0] for r in rates[:4]] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3], rel=1e-12)
    assert [r[1] for r in rates[:4]] == pytest.approx([2.5e-6, 5e-6, 7.5e-6, 1e-5], rel=1e-12)
    # then cosine from the rate to min_lr = 1e-4 (absolute) over the 8 steps after warmup
    for step in range(5, 13):
        shape = 0.5 * (1 + math.cos(math.pi * (step - 4) / 8))
        assert rates[step - 1][0] == pytest.approx(1e-4 + (1e-3 - 1e-4) * shape, rel=1e-12)
        assert rates[step - 1][1] == pytest.approx(1e-5, rel=1e-12)  # below the floor: kept
    assert rates[-1][0] == pytest.approx(1e-4, rel=1e-12)


def test_linear_and_constant_schedules():
    linear = _rates("adamw(lr = 1e-3, schedule = linear, min_lr = 0)", 4)
    assert [r[0] for r in linear] == pytest.approx([7.5e-4, 5e-4, 2.5e-4, 0.0], abs=1e-15)
    constant = _rates("sgd(lr = 0.1, warmup = 2, schedule = constant)", 4, base=(0.1,))
    assert [r[0] for r in constant] == pytest.approx([0.05, 0.1, 0.1, 0.1], rel=1e-12)
