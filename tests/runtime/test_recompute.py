"""`recompute = true` (activation checkpointing): each block keeps only its input and runs
its forward again in the backward pass. The numbers do not change (dropout included: torch's
checkpoint replays the RNG); the memory of the saved activations goes."""

from __future__ import annotations

import json

import pytest
import torch

from stackwise_dsl import runtime
from stackwise_dsl.core import loop
from stackwise_dsl.core.stage_model import StageModel
from tests.runtime.helpers import peak_allocated, plan_of, small, trainer_for


def _spec(grow: str, recompute: bool, *, stage: str = "") -> str:
    settings = ", ".join(x for x in (stage, "recompute = true" if recompute else "") if x)
    text = small("clm", grow=grow, stage=settings, d=64).replace(
        "context = 16", "context = 64, dropout = 0.1")  # fmt: skip
    return text.replace("stack s = 1 x b", "stack s = 2 x b").replace("batch = 4", "batch = 16")


def _records(run_dir) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k != "tokens_per_s"} for x in lines]


@pytest.mark.parametrize(("grow", "stage"), [
    ("prepend 3 x s", "trunk { frozen }"),  # backward through the frozen suffix
    ("end_to_end 2 x s", ""),
    ("append 2 x s", "trunk { full }"),
])  # fmt: skip
def test_recomputing_changes_no_number(grow, stage, tmp_path):
    for recompute in (False, True):
        runtime.run(plan_of(_spec(grow, recompute, stage=stage)), tmp_path / str(recompute))
    assert _records(tmp_path / "True") == _records(tmp_path / "False")


def test_fuse_recomputes_too(tmp_path):
    text = _spec("append 2 x s", False) + "fuse { steps = 2, recompute = true }\n"
    plan = plan_of(text)
    assert [s.recompute for s in plan.stages] == [False, False, True]
    runtime.run(plan, tmp_path / "on")
    runtime.run(plan_of(text.replace(", recompute = true", "")), tmp_path / "off")
    assert _records(tmp_path / "on") == _records(tmp_path / "off")


def test_recomputing_frees_the_activations_of_a_frozen_suffix(tmp_path):
    """The last prepend stage backpropagates through 2 frozen stacks of 2 blocks: its peak
    tensor memory (weights, gradients, AdamW's state, activations, logits) falls by 69%."""
    peaks = {}
    for recompute in (False, True):
        trainer = trainer_for(_spec("prepend 3 x s", recompute, stage="trunk { frozen }"),
                              tmp_path / str(recompute))  # fmt: skip
        plan = trainer.plan
        for stage in plan.stages[:2]:
            trainer.train_stage(stage)
        stage = plan.stages[2]

        def train(stage=stage, trainer=trainer, plan=plan) -> None:
            model = StageModel(plan, stage, trainer.store, torch.device("cpu")).train()
            loop.train_stage(plan, stage, model, trainer.data, trainer.state)

        peaks[recompute] = peak_allocated(train)
    assert peaks[True] < 0.4 * peaks[False], peaks
