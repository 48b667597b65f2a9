"""The samplers (core/sampling.py) on small trained runs: how many network calls, through which
stacks, what each call sees, and what stays fixed."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from stackwise_dsl.core import sampling
from stackwise_dsl.use import load
from stackwise_dsl.use.errors import UseError


def _watch(trained) -> list[tuple[tuple[int, ...], int, float | None]]:
    """Record every network call of `trained`'s model: (stacks, masked inputs, time)."""
    calls = []
    model, mask = trained.model, trained.tokenizer.specials.mask
    hidden = model.hidden

    def watched(inputs, t, positions=None, seen=None):
        used = model.positions if positions is None else tuple(positions)
        time = None if t is None else float(t[0])
        calls.append((used, int((inputs == mask).sum()), time))
        return hidden(inputs, t, positions, seen)

    model.hidden = watched
    return calls


def test_depth_enters_at_each_stack_as_prepend_trained_it(trained_runs):
    m = load(trained_runs["depth"])  # after the fuse stage
    assert m.stage.number == 4
    calls = _watch(m)
    out = m.sample("", max_new_tokens=16, temperature=0)
    # S = 3 calls of decreasing depth; masked: all, then round(16 r_k) for the next level
    ratios = [s.mask_ratio for s in m.plan.stages[:3]]
    assert ratios == pytest.approx([0.15, 0.525, 0.9])
    assert out.calls == 3
    assert [c[0] for c in calls] == [(0, 1, 2), (1, 2), (2,)]
    assert [c[1] for c in calls] == [16, round(16 * 0.525), round(16 * 0.15)]
    assert not (out.ids == m.tokenizer.specials.mask).any()


def test_depth_of_an_earlier_stage_uses_the_stacks_it_had(trained_runs):
    m = load(trained_runs["depth"], 2)
    calls = _watch(m)
    assert m.sample("", max_new_tokens=10, temperature=0).calls == 2
    assert [c[0] for c in calls] == [(1, 2), (2,)]
    assert [c[1] for c in calls] == [10, round(10 * 0.15)]


def test_fused_reads_the_whole_rack_at_every_level(trained_runs):
    m = load(trained_runs["depth"])
    calls = _watch(m)
    assert m.sample("", max_new_tokens=16, sampler="fused", temperature=0).calls == 3
    assert [c[0] for c in calls] == [(0, 1, 2)] * 3
    assert [c[1] for c in calls] == [16, 8, 2]


def test_depth_after_append_growth_exits_after_each_stack(trained_runs):
    m = load(trained_runs["append"])
    calls = _watch(m)
    assert m.sample("", max_new_tokens=16, temperature=0).calls == 3
    assert [c[0] for c in calls] == [(0,), (0, 1), (0, 1, 2)]


def test_a_prompt_fixes_its_positions_prefix_and_infilling(trained_runs):
    m = load(trained_runs["depth"])
    prompt = "ab<mask><mask>cd<mask>"
    ids = m.encode(prompt)
    for sampler in ("depth", "fused"):
        out = m.sample(prompt, max_new_tokens=4, sampler=sampler, num_samples=3, seed=2).ids
        assert out.shape == (3, len(ids) + 4)
        fixed = torch.tensor(ids) != m.tokenizer.specials.mask
        for row in out:
            assert torch.equal(row[: len(ids)][fixed], torch.tensor(ids)[fixed])
            assert not (row == m.tokenizer.specials.mask).any()


def test_ancestral_calls_the_network_only_at_steps_that_reveal_something(trained_runs):
    m = load(trained_runs["input"])
    calls = _watch(m)
    out = m.sample("", max_new_tokens=8, sampler="ancestral", steps=64, seed=3)
    assert not (out.ids == m.tokenizer.specials.mask).any()
    assert out.calls == len(calls) and 1 < out.calls <= 8  # 8 positions, 64 steps
    masked = [c[1] for c in calls]
    assert masked[0] == 8 and all(a > b for a, b in itertools.pairwise(masked))
    times = [c[2] for c in calls]  # each at its own step's time, on the grid of 64
    assert all(a > b for a, b in itertools.pairwise(times))
    assert all(abs(t * 64 - round(t * 64)) < 1e-9 for t in times)
    # the cost follows the tokens, not the steps
    calls.clear()
    many = m.sample("", max_new_tokens=8, sampler="ancestral", steps=100_000, seed=3)
    assert many.calls == len(calls) <= 8


def test_ancestral_reveals_each_masked_token_with_the_schedules_chance(trained_runs):
    m = load(trained_runs["input"])
    mask = m.tokenizer.specials.mask
    x = torch.full((400, 16), mask)
    banned = (mask,)
    for after in (0.25, 0.5):
        out = sampling.ancestral(m.model, x, [1.0, after, 0.0], [1.0], mask=mask, banned=banned,
                                 generator=torch.Generator().manual_seed(0))  # fmt: skip
        revealed = float((out.ids != mask).double().mean())
        assert revealed == pytest.approx(1 - after, abs=0.015)  # 6,400 draws: sd 0.006


def test_low_confidence_fills_blocks_left_to_right(trained_runs):
    m = load(trained_runs["input"])
    calls = _watch(m)
    out = m.sample("ab", max_new_tokens=12, sampler="low_confidence", steps=6, block=4,
                   temperature=0)  # fmt: skip
    # 3 blocks of 4, 2 steps each, 2 tokens a step
    assert out.calls == 6
    assert [c[1] for c in calls] == [12, 10, 8, 6, 4, 2]
    mask = m.tokenizer.specials.mask
    assert not (out.ids == mask).any() and m.decode(out.ids[0][:2]) == "ab"


def test_low_confidence_never_touches_a_later_block_early(trained_runs):
    m = load(trained_runs["input"])
    mask = m.tokenizer.specials.mask
    seen = []
    hidden = m.model.hidden

    def watched(inputs, t, positions=None, seen_=None):
        seen.append(inputs.clone())
        return hidden(inputs, t, positions, seen_)

    m.model.hidden = watched
    m.sample("", max_new_tokens=12, sampler="low_confidence", steps=6, block=4, seed=1)
    for i, x in enumerate(seen):
        block = i // 2
        assert (x[0, (block + 1) * 4 :] == mask).all()  # later blocks: still masked
        assert (x[0, : block * 4] != mask).all()  # earlier blocks: done


def test_low_confidence_needs_a_step_per_block(trained_runs):
    m = load(trained_runs["input"])
    with pytest.raises(UseError, match="6 steps cannot fill 8 blocks"):
        m.sample("", max_new_tokens=16, sampler="low_confidence", steps=6, block=2)


def test_mlm_fills_only_the_masks(trained_runs):
    m = load(trained_runs["mlm"])
    calls = _watch(m)
    prompt = "abc<mask>ef<mask>"
    out = m.sample(prompt, temperature=0).ids[0]
    ids = torch.tensor(m.encode(prompt))
    keep = ids != m.tokenizer.specials.mask
    assert torch.equal(out[keep], ids[keep]) and not (out == m.tokenizer.specials.mask).any()
    assert len(calls) == 1


def test_greedy_clm_through_the_api_equals_rereading_without_a_cache(trained_runs):
    m = load(trained_runs["clm"])
    got = m.sample("abc", max_new_tokens=8, temperature=0).ids
    ids = torch.tensor([m.encode("abc")])
    with torch.no_grad():
        for _ in range(8):
            logits = m.model.logits(m.model.hidden(ids, None))[:, -1]
            ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(got, ids)


def test_seeds_fix_every_draw(trained_runs):
    for name, sampler in (("clm", None), ("depth", "depth"), ("input", "ancestral"),
                          ("input", "low_confidence")):  # fmt: skip
        m = load(trained_runs[name])
        a = m.generate("", max_new_tokens=10, num_samples=2, sampler=sampler, seed=5)
        b = m.generate("", max_new_tokens=10, num_samples=2, sampler=sampler, seed=5)
        c = m.generate("", max_new_tokens=10, num_samples=2, sampler=sampler, seed=6)
        assert a == b and a != c, (name, sampler)


def test_gumbel_draws_follow_the_softmax_and_temperature_zero_is_argmax():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)
    logits = probs.log().expand(1, 40000, 4).clone()
    chosen, confidence = sampling._choose(logits, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(chosen.flatten(), minlength=4).double() / 40000
    torch.testing.assert_close(freq, probs, atol=0.008, rtol=0)  # sd <= 0.0025
    torch.testing.assert_close(confidence, probs[chosen])
    top2, _ = sampling._choose(logits, top_k=2, generator=torch.Generator().manual_seed(0))
    assert set(top2.flatten().tolist()) == {0, 1}
    frac = float((top2 == 0).double().mean())
    assert frac == pytest.approx(0.5 / 0.8, abs=0.01)
    greedy, _ = sampling._choose(logits, temperature=0)
    assert (greedy == 0).all()


def test_time_for_inverts_the_schedule_on_the_models_grid(trained_runs):
    o = load(trained_runs["input"]).objective  # linear(1.0 -> 0.05), continuous t
    for ratio in (0.05, 0.3, 0.5, 0.99, 1.0):
        assert sampling.masked_at(o, sampling.time_for(o, ratio)) == pytest.approx(ratio)
    fractions, times = sampling.ancestral_steps(o, 4)
    assert fractions == pytest.approx([1.0, 0.7625, 0.525, 0.2875, 0.0])
    assert times == [1.0, 0.75, 0.5, 0.25]


def test_requests_that_do_not_fit_are_refused_in_words(trained_runs):
    m = load(trained_runs["clm"])
    cases = [
        ({"sampler": "ancestral"}, "does not fit this run's objective: use autoregressive"),
        ({"max_new_tokens": 40}, "the whole must fit the model's context of 16"),
        ({"temperature": -1}, "temperature must be 0 (the most likely token) or a finite"),
        ({"temperature": math.inf}, "temperature must be 0"),
        ({"temperature": 1e-320}, "of at least 1e-6, not 1e-320"),
        ({"max_new_tokens": -1}, "max_new_tokens must be a whole number of at least 0"),
        ({"max_new_tokens": "3"}, "max_new_tokens must be a whole number"),
        ({"seed": 10**30}, "seed must be a whole number"),
        ({"top_k": 2.5}, "top_k must be a whole number"),
        ({"top_p": 0}, "top_p must be in (0, 1]"),
        ({"top_k": 0}, "top_k must be a whole number of at least 1"),
        ({"steps": 4}, "steps is only for masked diffusion with time as input"),
        ({"num_samples": 0}, "num_samples must be a whole number of at least 1"),
    ]
    for options, message in cases:
        with pytest.raises(UseError, match=message.replace("(", r"\(").replace(")", r"\)")):
            m.sample("ab", **options)
    with pytest.raises(UseError, match="no `<mask>` to fill"):
        m.sample("a<mask>")
    assert math.isfinite(m.loss("abcabc"))
    d = load(trained_runs["depth"])
    with pytest.raises(UseError, match="nothing to fill"):
        d.sample("abc", max_new_tokens=0)
    with pytest.raises(UseError, match="steps must be a whole number of at least 1"):
        load(trained_runs["input"]).sample("", steps=0)
    with pytest.raises(UseError, match="steps must be at most 100,000"):
        load(trained_runs["input"]).sample("", steps=10**9)
    with pytest.raises(UseError, match=r"fused sampler .* stage 2 is a grow stage: use depth"):
        load(trained_runs["depth"], 2).sample("", sampler="fused")
    with pytest.raises(UseError, match="block is only for the low_confidence sampler"):
        d.sample("", block=4)
