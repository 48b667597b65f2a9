"""The stage loop: what stays frozen stays bit-identical, prepend trains through its suffix,
and the head that trains is the head that is evaluated."""

from __future__ import annotations

import torch

from stackwise_dsl.core import loop
from stackwise_dsl.core.stage_model import StageModel
from stackwise_dsl.lower import plan as p
from tests.runtime.helpers import small, trainer_for


def _snapshot(state: dict) -> dict:
    return {k: v.clone() for k, v in state.items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_frozen_stacks_are_bit_identical_in_later_stages(tmp_path):
    trainer = trainer_for(small(grow="append 3 x s", stage="trunk { frozen }"), tmp_path)
    after = []
    for stage in trainer.plan.stages:
        trainer.train_stage(stage)
        after.append({pos: _snapshot(s) for pos, s in trainer.store.stacks.items()})
    assert _same(after[0][0], after[1][0]) and _same(
        after[1][0], after[2][0]
    )  # stack 0 frozen since stage 2
    assert _same(after[1][1], after[2][1])  # stack 1 frozen since stage 3
    assert not _same(
        after[0][0], {k: v * 0 for k, v in after[0][0].items()}
    )  # it did train in stage 1


def test_each_new_stack_trains(tmp_path):
    trainer = trainer_for(small(grow="append 2 x s"), tmp_path)
    trainer.train_stage(trainer.plan.stages[0])
    StageModel(trainer.plan, trainer.plan.stages[1], trainer.store, torch.device("cpu"))
    initial = _snapshot(trainer.store.stacks[1])  # created (and stored) when its stage is built
    trainer.train_stage(trainer.plan.stages[1])
    assert not _same(initial, trainer.store.stacks[1])


def test_prepend_trains_the_new_stack_through_the_frozen_suffix(tmp_path):
    trainer = trainer_for(small("mlm", grow="prepend 2 x s"), tmp_path)
    plan = trainer.plan
    trainer.train_stage(plan.stages[0])  # the stack next to the head
    suffix_before = _snapshot(trainer.store.stacks[1])
    stage = plan.stages[1]
    assert [(x.position, x.role, x.trains) for x in stage.parts] == [
        (0, p.Role.NEW, p.Trains.FULL), (1, p.Role.TRUNK, p.Trains.NOTHING),
    ]  # fmt: skip
    model = StageModel(plan, stage, trainer.store, torch.device("cpu")).train()
    batch = loop.batch_for(plan, stage, trainer.data, trainer.data.train[:4], draw=0)
    loss = loop.stage_loss(model, batch)
    loss.backward()
    new_grads = [x.grad for x in model.stack(0).parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in new_grads)  # reached through stack 1
    assert all(x.grad is None for x in model.stack(1).parameters())  # the suffix itself is frozen
    # the only path from stack 0 to the loss runs through stack 1 and the head:
    with torch.no_grad():
        h0 = model.run(model.rack.embed_tokens(batch.inputs, None), [0])
        through = model.logits(model.run(h0, [1]))
    assert torch.allclose(through, model.logits(model.hidden(batch.inputs, None)))
    trainer.train_stage(stage)
    assert _same(suffix_before, trainer.store.stacks[1])


def test_the_trained_head_is_the_evaluated_head(tmp_path):
    text = small("clm", grow="append 1 x s").replace("context = 16", "context = 16, head = untied")
    trainer = trainer_for(text, tmp_path)
    stage = trainer.plan.stages[0]
    initial = StageModel(
        trainer.plan, stage, trainer.store, torch.device("cpu")
    ).rack.head.weight.clone()
    trainer.train_stage(stage)
    trained = trainer.store.shared["head.weight"]
    assert not torch.equal(initial, trained)  # the head trained
    model = StageModel(trainer.plan, stage, trainer.store, torch.device("cpu"))
    assert torch.equal(model.rack.head.weight, trained)
    val = loop.evaluate(model, trainer.plan, stage, trainer.data)
    last_eval = [r for r in trainer.metrics.path.read_text().splitlines() if '"eval"' in r][-1]
    assert f'"val_loss": {val}' in last_eval  # the run's own evaluation used this head
    trainer.store.shared["head.weight"] = trained + 1.0
    moved = StageModel(trainer.plan, stage, trainer.store, torch.device("cpu"))
    assert loop.evaluate(moved, trainer.plan, stage, trainer.data) != val
