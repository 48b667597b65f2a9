"""plan.json: a plan written and read back is the same plan, and JSON that is not one of our
plans is refused naming where it is wrong, before anything runs."""

from __future__ import annotations

import copy

import pytest
from hypothesis import HealthCheck, assume, given, settings

from stackwise_dsl import testing
from stackwise_dsl.frontend import check_file
from stackwise_dsl.lower import to_plan
from stackwise_dsl.lower.serialize import PlanFormatError, from_json, to_json
from tests.conftest import ROOT

SPECS = sorted((ROOT / "specs").glob("*.sw"))


@pytest.mark.parametrize("spec", SPECS, ids=lambda f: f.stem)
def test_every_shipped_plan_reads_back_as_itself(spec):
    plan = to_plan(check_file(spec).spec, vocab=100, name=spec.stem)
    assert from_json(to_json(plan)) == plan


def _tiny() -> dict:
    return to_json(to_plan(check_file(ROOT / "specs" / "tiny.sw").spec, name="tiny"))


@pytest.mark.parametrize(("edit", "said"), [
    (lambda d: d["stages"][0].update(objective=None), "plan.stages[0].objective is None, not one of Clm, Mlm, MaskedDiffusion"),
    (lambda d: d["stacks"][0]["blocks"][0].update(ffn=None), "plan.stacks[0].blocks[0].ffn is None, not one of SwiGlu, Gelu"),
    (lambda d: d["optimizer"].update(method=None), "plan.optimizer.method is None, not one of AdamW, AdamW8bit, Sgd"),
    (lambda d: d["model"].update(position="rope"), "plan.model.position is 'rope', not one of Rope"),
    (lambda d: d["model"]["position"].update(kind="Alibi"), "plan.model.position is a 'Alibi', not one of Rope"),
    (lambda d: d["run"].update(eval_evry=1), "plan.run has `eval_evry`, which is no field of a Run"),
    (lambda d: d["model"]["position"].update(foo=1), "plan.model.position has `foo`, which is no field of a Rope"),
    (lambda d: d["model"].pop("d_model"), "plan.model has no `d_model`"),
    # well-typed, but not what lowering could have written: said before any tensor exists
    (lambda d: d["model"].update(d_model=64), "heads 2 x head_dim 16 is not d_model 64"),
    (lambda d: d["stacks"][0]["blocks"][0]["attention"].update(heads=3), "kv_heads 2 do not divide heads 3"),
    (lambda d: d["model"].update(dropout=5.0), "plan.model.dropout is 5.0, not in [0, 1)"),
    (lambda d: d["stages"][0].update(number=2), "plan.stages[0].number is 2, not 1"),
    (lambda d: d["stages"][0].update(steps=0), "plan.stages[0].steps is 0, not at least 1"),
    (lambda d: d["stages"][0].update(lr=-1.0), "plan.stages[0]: a learning rate is not above 0"),
    (lambda d: d["stages"][1]["parts"][0].update(position=9), "positions [9, 1] are not distinct stacks"),
    (lambda d: d["run"].update(log_every=0), "plan.run.log_every is 0, not at least 1"),
    (lambda d: d["data"].update(batch=0), "plan.data: batch 0 and seq_len 32 (context 32) do not fit"),
])  # fmt: skip
def test_json_that_is_not_a_plan_is_refused_where_it_is_wrong(edit, said):
    data = copy.deepcopy(_tiny())
    edit(data)
    with pytest.raises(PlanFormatError) as e:
        from_json(data)
    assert said in str(e.value)


def test_an_optional_value_left_out_reads_as_none():
    data = copy.deepcopy(_tiny())
    assert data["model"].pop("time") is None and data["run"].pop("eval_every") is None
    plan = from_json(data)
    assert plan.model.time is None and plan.run.eval_every is None
    assert plan == from_json(_tiny())


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(testing.specs(max_stacks=4))
def test_every_plan_a_valid_spec_lowers_to_reads_back_as_itself(spec):
    """The consistency check refuses nothing lowering can write."""
    assume(not testing.errors(spec))
    plan = to_plan(spec, vocab=300)
    assert from_json(to_json(plan)) == plan


def test_the_variants_are_exactly_the_classes_that_share_a_union():
    """`Variant` marks the classes JSON names under "kind": every class that shares a union
    with another anywhere in a plan, and no other (a compiled script keeps a union of one,
    so the mark cannot be computed from its annotations there)."""
    import types
    import typing

    import attrs

    from stackwise_dsl.lower import plan as p

    shared, todo, seen = set(), [p.Plan], set()
    while todo:
        hint = todo.pop()
        if hint in seen:
            continue
        seen.add(hint)
        if attrs.has(hint):
            todo += typing.get_type_hints(hint).values()
            continue
        args = [a for a in typing.get_args(hint) if a is not type(None) and a is not Ellipsis]
        if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) > 1:
            shared.update(args)
        todo += args
    marked = {v for v in vars(p).values() if isinstance(v, type) and issubclass(v, p.Variant)}
    assert marked - {p.Variant} == shared and len(shared) == 25


def test_a_stage_may_copy_only_a_stack_that_exists_before_it():
    import re

    import attrs

    from stackwise_dsl.lower.serialize import consistent

    plan = to_plan(check_file(ROOT / "specs" / "gpt.sw").spec, name="gpt")
    first = attrs.evolve(plan.stages[0], init_from=0)
    with pytest.raises(PlanFormatError, match=re.escape(
            "plan.stages[0].init_from is 0, not a stack that exists before stage 1")):  # fmt: skip
        consistent(attrs.evolve(plan, stages=(first, *plan.stages[1:])))
