"""The recipes that close the stage-wise gap, as language features: the top keeps training
(`top = N`, after SegProp), growth from the middle stack (`init = middle`, MIDAS), and a
closing joint fine-tune sized as a share of all steps (`fuse { share = f }`)."""

from __future__ import annotations

import pytest
import torch

from stackwise_dsl.core.stage_model import StageModel
from stackwise_dsl.frontend import check_text
from stackwise_dsl.lower import plan as p
from tests.runtime.helpers import plan_of, small, trainer_for

PREPEND = small("clm", grow="prepend 4 x s", stage="top = 1")
MIDDLE = small("clm", grow="append 4 x s", stage="init = middle")


def _codes(text: str) -> list[str]:
    return [d.code for d in check_text(text, "t.sw").diagnostics]


def test_the_top_keeps_training_in_every_stage_with_the_head():
    plan = plan_of(PREPEND)
    for stage in plan.stages[1:]:
        parts = {part.position: part for part in stage.parts}
        assert parts[3].trains is p.Trains.FULL and parts[3].role is p.Role.TRUNK
        frozen = [x for x in stage.parts if x.role is p.Role.TRUNK and x.position != 3]
        assert all(x.trains is p.Trains.NOTHING for x in frozen)
        assert stage.train_head  # prepend freezes the head after stage 1 without `top`
    plain = plan_of(PREPEND.replace("top = 1", ""))
    assert not plain.stages[1].train_head
    assert all(x.trains is p.Trains.NOTHING for x in plain.stages[1].parts if x.position == 3)
    two = plan_of(PREPEND.replace("top = 1", "top = 2"))
    assert [x.position for x in two.stages[3].parts if x.trains is p.Trains.FULL] == [0, 2, 3]


def test_the_top_trains_and_the_rest_of_the_trunk_does_not(tmp_path):
    trainer = trainer_for(PREPEND, tmp_path)
    first, second = trainer.plan.stages[:2]
    trainer.train_stage(first)
    before = {k: v.clone() for k, v in trainer.store.stacks[3].items()}
    trainer.train_stage(second)
    after = trainer.store.stacks[3]
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the top trained
    trainer.train_stage(trainer.plan.stages[2])
    kept = {k: v.clone() for k, v in trainer.store.stacks[2].items()}
    trainer.train_stage(trainer.plan.stages[3])
    assert all(torch.equal(kept[k], trainer.store.stacks[2][k]) for k in kept)  # frozen


def test_a_new_stack_starts_as_a_copy_of_the_trunks_middle_stack(tmp_path):
    trainer = trainer_for(MIDDLE, tmp_path)
    stages = trainer.plan.stages
    assert [s.init_from for s in stages] == [None, 0, 1, 1]  # trunks [0], [0 1], [0 1 2]
    assert [s.init.value for s in stages] == ["random", "middle", "middle", "middle"]
    for stage in stages[:3]:
        trainer.train_stage(stage)
    model = StageModel(trainer.plan, stages[3], trainer.store, torch.device("cpu"))
    new = model.stack(3).state_dict()
    source = trainer.store.stacks[1]
    assert new.keys() == source.keys() and all(torch.equal(new[k], source[k]) for k in new)


def test_the_closing_fine_tune_takes_its_share_of_all_steps():
    fuse = small("clm", grow="append 3 x s", extra="fuse { share = 0.25 }\n")
    plan = plan_of(fuse)  # growth: 3 x 6 = 18 steps; 0.25 of the whole: 6 more
    assert [s.steps for s in plan.stages] == [6, 6, 6, 6]
    assert plan.stages[-1].kind is p.StageKind.FUSE
    tenth = plan_of(fuse.replace("0.25", "0.1"))
    assert tenth.stages[-1].steps == 2  # 0.1 / 0.9 x 18 = 2
    assert _codes(fuse.replace("share = 0.25", "share = 0.25, steps = 5")) == ["SW407"]
    assert _codes(fuse.replace("share = 0.25", "share = 0")) == ["SW407"]
    assert _codes(fuse.replace("share = 0.25", "share = 1")) == ["SW301"]


@pytest.mark.parametrize(("text", "code"), [
    (small("clm", grow="append 3 x s", stage="top = 1, cache = memory"), "SW403"),
    (small("clm", grow="end_to_end 3 x s", stage="top = 1"), "SW410"),
    (small("clm", grow="append 2 x s", stage="init = middle").replace(
        "stack s = 1 x b", "stack s = 1 x b\nblock c { attention = mha(heads = 4, mode = "
        "causal), ffn = swiglu(hidden = 64) }\nstack t = 1 x c").replace("2 x s", "s + t"),
     "SW411"),
])  # fmt: skip
def test_recipes_that_cannot_hold_are_refused(text, code):
    assert code in _codes(text)


def test_a_top_larger_than_any_trunk_is_named_with_the_size_it_can_have():
    report = check_text(small("clm", grow="append 3 x s", stage="top = 5"), "t.sw")
    [warning] = [d for d in report.diagnostics if d.code == "SW410"]
    assert warning.message == (
        "`top = 5` keeps more trunk stacks training than the trunk ever holds (2 stacks, in "
        "stage 3): the excess has no effect"
    )
    assert warning.hint == "write `top = 2`, or `trunk { full }` to train the whole trunk"
    assert "SW410" not in _codes(small("clm", grow="append 3 x s", stage="top = 2"))


def test_a_truth_value_where_a_number_goes_is_a_type_error_not_an_unknown_name():
    report = check_text(small("clm", grow="append 3 x s", stage="top = true"), "t.sw")
    [error] = [d for d in report.diagnostics if d.is_error]
    assert (error.code, error.message) == (
        "SW104",
        "`grow.top` must be a whole number; got the truth value true",
    )


def test_a_stage_override_inherits_top_without_a_warning_of_its_own():
    text = small("clm", grow="append 3 x s", stage="top = 2, stage 1 { lr = 1e-3 }")
    assert "SW410" not in _codes(text)
    assert "SW410" in _codes(text.replace("top = 2", "top = 3"))
