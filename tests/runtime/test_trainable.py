"""The optimizer holds exactly what the plan says trains, stage by stage (`sw plan` counts)."""

from __future__ import annotations

import pytest
import torch

from stackwise_dsl import estimate
from stackwise_dsl.core import loop
from stackwise_dsl.core.stage_model import StageModel
from tests.runtime.helpers import small, trainer_for

CASES = {
    "frozen": small("mlm", grow="append 3 x s", stage="trunk { frozen }"),
    "adapters": small("mlm", grow="append 3 x s", stage="new { lora(rank = 2) }, trunk { adapters, lora(rank = 4, pattern = decreasing) }"),
    "full": small("mlm", grow="prepend 3 x s", stage="trunk { full }"),
    "fuse": small("mlm", grow="append 2 x s", stage="trunk { nvfp4 }".replace("{ nvfp4 }", "{ precision = nvfp4, lora(rank = 2) }"),
                  extra="fuse { steps = 2, trunk { adapters } }\n"),
    "end_to_end": small("mlm", grow="end_to_end 2 x s", stage="new { lora(rank = 2) }"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_optimizer_params_equal_plan_counts(case, tmp_path):
    trainer = trainer_for(CASES[case], tmp_path)
    for stage in trainer.plan.stages:
        model = StageModel(trainer.plan, stage, trainer.store, torch.device("cpu"))
        groups = loop.param_groups(model, stage, trainer.plan.optimizer)
        in_optimizer = sum(x.numel() for g in groups for x in g["params"])
        requires_grad = sum(x.numel() for x in model.parameters() if x.requires_grad)
        assert (
            in_optimizer == requires_grad == estimate.stage_count(trainer.plan, stage).trainable
        ), stage.number
        trainer.train_stage(stage)
