"""Objectives: real corruption, 80/10/10, deterministic masks, loss on corrupted positions,
depth ratios per stage, and a trained time embedding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stackwise_dsl.core.objectives import IGNORE, Vocabulary, loss_of, make_batch, noise
from stackwise_dsl.lower import plan as p
from tests.runtime.helpers import plan_of, small, trainer_for

VOCAB = Vocabulary(mask=257, ordinary=256)
MLM = p.Mlm(ratio=0.15, bert_mix=True)
DIFFUSION = p.MaskedDiffusion(time=p.DepthTime(), mask=p.LinearSchedule(start=0.9, end=0.15))


def _windows(n: int, width: int = 65) -> tuple[torch.Tensor, np.ndarray]:
    g = torch.Generator().manual_seed(5)
    return torch.randint(0, 256, (n, width), generator=g), np.arange(1000, 1000 + n)


def test_clm_predicts_the_next_token():
    w, ids = _windows(3)
    b = make_batch(w, ids, p.Clm(),
                   None, None, seed=0, vocab=VOCAB)  # fmt: skip
    assert torch.equal(b.inputs, w[:, :-1]) and torch.equal(b.targets, w[:, 1:])


def test_mlm_corrupts_the_inputs_it_asks_about_with_80_10_10():
    w, ids = _windows(800)
    b = make_batch(w, ids, MLM, 0.15, None, seed=0, vocab=VOCAB)
    x = w[:, :-1]
    chosen = b.targets != IGNORE
    assert 0.14 < chosen.float().mean().item() < 0.16
    assert torch.equal(b.targets[chosen], x[chosen])  # targets are the original tokens
    assert torch.equal(b.inputs[~chosen], x[~chosen])  # nothing else is touched
    masked = (b.inputs[chosen] == VOCAB.mask).float().mean().item()
    kept = (b.inputs[chosen] == x[chosen]).float().mean().item()
    assert 0.78 < masked < 0.82 and 0.09 < kept < 0.115  # kept includes random draws of the same id
    random = 1 - masked - kept
    assert 0.085 < random < 0.11
    assert (b.inputs[chosen] == VOCAB.mask).any()  # the model never sees the tokens it must predict


def test_masks_depend_on_sample_ratio_and_seed_only():
    w, ids = _windows(8)
    a = make_batch(w, ids, DIFFUSION, 0.4, None, seed=1, vocab=VOCAB)
    again = make_batch(w.flip(0), ids[::-1].copy(), DIFFUSION, 0.4, None, seed=1, vocab=VOCAB)
    assert torch.equal(a.targets, again.targets.flip(0))  # same sample, same mask, wherever it sits
    other_seed = make_batch(w, ids, DIFFUSION, 0.4, None, seed=2, vocab=VOCAB)
    assert not torch.equal(a.targets, other_seed.targets)
    more = make_batch(w, ids, DIFFUSION, 0.7, None, seed=1, vocab=VOCAB)
    assert (
        (a.targets != IGNORE) <= (more.targets != IGNORE)
    ).all()  # a higher ratio masks a superset


def test_every_sample_has_a_masked_token():
    w, ids = _windows(50)
    b = make_batch(w, ids, DIFFUSION, 1e-6, None, seed=0, vocab=VOCAB)
    assert ((b.targets != IGNORE).sum(dim=1) == 1).all()


def test_loss_counts_corrupted_positions_only():
    h = torch.randn(2, 6, 4)
    targets = torch.full((2, 6), IGNORE)
    targets[0, 2], targets[1, 5] = 1, 3
    w = torch.randn(10, 4)
    base = loss_of(lambda x: x @ w.t(), h, targets)
    h2 = h.clone()
    h2[0, 0] += 100  # an ignored position
    assert torch.equal(loss_of(lambda x: x @ w.t(), h2, targets), base)
    expected = torch.nn.functional.cross_entropy(
        torch.stack([h[0, 2], h[1, 5]]) @ w.t(), torch.tensor([1, 3])
    )
    torch.testing.assert_close(base, expected)


def test_depth_stages_train_at_their_stacks_ratios():
    plan = plan_of(
        small("masked_diffusion(time = depth, mask = linear(0.9 -> 0.1))", grow="prepend 3 x s")
    )
    ratios = [s.mask_ratio for s in plan.stages]
    assert ratios == pytest.approx([0.1, 0.5, 0.9])  # prepend: head side first, least noise
    assert [noise(s, plan, 7)[0] for s in plan.stages] == ratios


def test_time_as_input_draws_t_per_batch_and_trains_its_embedding(tmp_path):
    text = small("masked_diffusion(time = input(embedding = sinusoidal), mask = cosine(0.95 -> 0.05))",
                 grow="end_to_end 2 x s")  # fmt: skip
    trainer = trainer_for(text, tmp_path)
    stage = trainer.plan.stages[0]
    draws = [noise(stage, trainer.plan, k) for k in range(200)]
    ts = [t for _, t in draws]
    assert all(0 < t <= 1 for t in ts) and len(set(ts)) == 200
    from stackwise_dsl.lower.schedule import ratio_at

    assert all(r == pytest.approx(ratio_at(stage.objective.mask, 1 - t)) for r, t in draws)
    trainer.train_stage(stage)
    trained = trainer.store.shared
    from stackwise_dsl.core.stage_model import StageModel

    fresh = StageModel(trainer.plan, stage, type(trainer.store)(), torch.device("cpu"))
    assert not torch.equal(fresh.rack.time.fc1.weight, trained["time.fc1.weight"])
