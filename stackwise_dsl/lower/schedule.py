"""Noise schedules: a mask ratio for every position between the input side and the head.

p runs from 0 (the input side; t = 1 for time as input) to 1 (next to the head; t = 0):
    linear        a + (b - a) p
    cosine        a + (b - a) (1 - cos(pi p)) / 2
    exponential   a (b / a)^p
    list          the listed ratios, linearly interpolated (exact at p = k / (n - 1))
"""

from __future__ import annotations

import math

from stackwise_dsl.ir import nodes as n
from stackwise_dsl.lower import plan as p


def schedule_of(mask: n.Schedule) -> p.Schedule:
    if isinstance(mask, n.ExplicitSchedule):
        return p.ExplicitSchedule(values=mask.values)
    start, end = mask.range
    shape = {n.LinearSchedule: p.LinearSchedule, n.CosineSchedule: p.CosineSchedule,
             n.ExponentialSchedule: p.ExponentialSchedule}[type(mask)]  # fmt: skip
    return shape(start=start, end=end)


def ratio_at(s: p.Schedule, where: float) -> float:
    """The mask ratio at position `where` in [0, 1]."""
    where = min(max(where, 0.0), 1.0)
    if isinstance(s, p.ExplicitSchedule):
        return _interpolate(s.values, where)
    a, b = s.start, s.end
    if isinstance(s, p.CosineSchedule):
        return a + (b - a) * (1 - math.cos(math.pi * where)) / 2
    if isinstance(s, p.ExponentialSchedule):
        return a * (b / a) ** where
    return a + (b - a) * where


def _interpolate(values: tuple[float, ...], where: float) -> float:
    if len(values) == 1:
        return values[0]
    x = where * (len(values) - 1)
    i = min(int(x), len(values) - 2)
    return values[i] + (values[i + 1] - values[i]) * (x - i)
