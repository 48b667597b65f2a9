"""Pinned loss trajectories, one per objective, before the runtime is redesigned (issue 10):
every train and eval record of a small run, logged each step. A refactor changes no number.

Measured on the development VM (AMD EPYC, AVX2, torch 2.13.0+cpu). The bound, 1e-5
relative, is far below what any change to the training would move (steps move the loss by
1e-2) and above the last-digit differences another CPU's kernels may give."""

from __future__ import annotations

import json

import pytest

from stackwise_dsl import runtime
from tests.runtime.helpers import plan_of, small

DEPTH = "masked_diffusion(time = depth, mask = linear(0.8 -> 0.2))"
NF4 = "trunk { adapters, precision = nf4, lora(rank = 2) }"  # trains through an nf4 suffix

SPECS = {
    "clm": small("clm", grow="append 2 x s"),
    "mlm": small("mlm", grow="append 2 x s"),
    "diffusion_depth": small(DEPTH, grow="prepend 2 x s"),
    "diffusion_input": small(
        "masked_diffusion(time = input(embedding = sinusoidal))", grow="end_to_end 2 x s"
    ),
    "nf4_trunk_adapters": small(DEPTH, grow="prepend 2 x s", stage=NF4),
}

# (kind, stage, step) of every record, then its loss (train) or val_loss (eval)
PINNED = {
    "clm": (
        [('train', 1, 1), ('train', 1, 2), ('train', 1, 3), ('train', 1, 4), ('train', 1, 5), ('train', 1, 6), ('eval', 1, 6), ('train', 2, 1), ('train', 2, 2), ('train', 2, 3), ('train', 2, 4), ('train', 2, 5), ('train', 2, 6), ('eval', 2, 6)],
        [5.5041003, 5.520113, 5.3722916, 5.2565317, 5.2151985, 5.2863402, 5.2318951, 5.2262464, 5.0431037, 4.9527512, 4.8154655, 4.7769914, 4.7793808, 4.775282],
    ),
    "mlm": (
        [('train', 1, 1), ('train', 1, 2), ('train', 1, 3), ('train', 1, 4), ('train', 1, 5), ('train', 1, 6), ('eval', 1, 6), ('train', 2, 1), ('train', 2, 2), ('train', 2, 3), ('train', 2, 4), ('train', 2, 5), ('train', 2, 6), ('eval', 2, 6)],
        [5.5721865, 5.5367064, 5.4317074, 5.4678097, 5.244133, 5.2826209, 5.3470355, 5.3115201, 5.2456203, 5.2069054, 5.0521698, 5.0976553, 5.228673, 5.0738079],
    ),
    "diffusion_depth": (
        [('train', 1, 1), ('train', 1, 2), ('train', 1, 3), ('train', 1, 4), ('train', 1, 5), ('train', 1, 6), ('eval', 1, 6), ('train', 2, 1), ('train', 2, 2), ('train', 2, 3), ('train', 2, 4), ('train', 2, 5), ('train', 2, 6), ('eval', 2, 6)],
        [5.545475, 5.5038195, 5.3750205, 5.3498192, 5.3121729, 5.2648864, 5.2739917, 5.2825675, 5.2276211, 5.2793517, 5.2442536, 5.2600303, 5.2028761, 5.2416713],
    ),
    "diffusion_input": (
        [('train', 1, 1), ('train', 1, 2), ('train', 1, 3), ('train', 1, 4), ('train', 1, 5), ('train', 1, 6), ('eval', 1, 6)],
        [5.5562797, 5.4992871, 5.3835578, 5.2848554, 5.229156, 5.2724013, 5.2501231],
    ),
    "nf4_trunk_adapters": (
        [('train', 1, 1), ('train', 1, 2), ('train', 1, 3), ('train', 1, 4), ('train', 1, 5), ('train', 1, 6), ('eval', 1, 6), ('train', 2, 1), ('train', 2, 2), ('train', 2, 3), ('train', 2, 4), ('train', 2, 5), ('train', 2, 6), ('eval', 2, 6)],
        [5.545475, 5.5038195, 5.3750205, 5.3498192, 5.3121729, 5.2648864, 5.2739917, 5.2826996, 5.2260728, 5.2784462, 5.2434359, 5.2600369, 5.2024879, 5.241049],
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(SPECS))
def test_the_loss_trajectory_is_pinned(name, tmp_path):
    text = SPECS[name].replace("log every 2 steps", "log every 1 steps")
    runtime.run(plan_of(text), tmp_path / "run")
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    keys, losses = PINNED[name]
    assert [(r["kind"], r["stage"], r["step"]) for r in rows] == [tuple(k) for k in keys]
    got = [r["loss"] if r["kind"] == "train" else r["val_loss"] for r in rows]
    assert got == pytest.approx(losses, rel=1e-5)
