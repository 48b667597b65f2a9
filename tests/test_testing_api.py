"""The public property-testing API: users vary their own specs and assert they stay valid."""

from __future__ import annotations

import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st

from stackwise_dsl import testing
from stackwise_dsl.ir import nodes as n
from stackwise_dsl.ir.enums import Mode
from tests.conftest import ROOT

TINY = ROOT / "specs" / "tiny.sw"
DIFFUSION = ROOT / "specs" / "diffusion.sw"


@given(
    testing.variants(
        TINY,
        attention=testing.attentions(d_model=32, mode=Mode.CAUSAL),
        new_precision=testing.trainable_precisions(),
    )
)
@settings(max_examples=60)
def test_every_attention_kind_and_precision_keeps_tiny_valid(spec):
    assert testing.errors(spec) == []
    kinds = {b.attention.latent is not None or b.attention.kernel is not None for b in spec.blocks}
    assert len(kinds) == 1  # one attention drawn, applied to every block


@given(testing.variants(DIFFUSION, trunk_precision=testing.frozen_precisions()))
@settings(max_examples=30)
def test_any_frozen_precision_keeps_diffusion_valid(spec):
    assert testing.errors(spec) == []


def test_variants_find_combinations_that_break_a_spec():
    """diffusion.sw's stack LoRA (rank 16) does not fit an MLA block with a narrow latent."""
    broken = find(
        testing.variants(
            DIFFUSION,
            attention=testing.attentions(d_model=128, mode=Mode.BIDIRECTIONAL, kinds=("mla",)),
        ),
        lambda spec: any(e.startswith("SW405") for e in testing.errors(spec)),
    )
    assert (
        broken.blocks[0].attention.latent.kv_rank < 16
        or broken.blocks[0].attention.latent.q_rank < 16
    )


def test_load_refuses_a_base_with_errors():
    with pytest.raises(ValueError, match="SW201"):
        testing.load(
            "model { d_model = 60, context = 8 }\nblock b { attention = mha(heads = 7) }\n"
            "stack s = b\nobjective = mlm\ngrow append s { steps = 1 }\n"
        )


@given(testing.specs(objective_kinds=("clm",)))
@settings(max_examples=30)
def test_specs_honour_the_objective(spec):
    assert isinstance(spec.objective, n.Clm)
    assert {b.attention.mode for b in spec.blocks} == {Mode.CAUSAL}
    assert testing.diagnostics(spec) == ()


@given(st.data())
@settings(max_examples=20)
def test_building_blocks_are_valid_on_their_own(data):
    d_model = data.draw(st.sampled_from([32, 64, 96]))
    attention = data.draw(testing.attentions(d_model))
    assert d_model % attention.heads == 0 and attention.heads % attention.kv_heads == 0
    assert (d_model // attention.heads) % 2 == 0
