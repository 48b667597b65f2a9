"""Derived facts the checks (and later the plan) rely on: stage views, growth order, ranks."""

from __future__ import annotations

import pytest

from stackwise_dsl.frontend import check_text
from stackwise_dsl.ir import nodes as n
from stackwise_dsl.ir.enums import Pattern, Target
from stackwise_dsl.ir.facts import Facts
from stackwise_dsl.ir.walk import ffn_hidden, layer_shapes, lora_alpha, lora_rank
from tests.elaborate.helpers import BASE


def _spec(text):
    report = check_text(text)
    assert report.ok, report.diagnostics
    return report.spec


@pytest.mark.parametrize(
    ("direction", "order", "views"),
    [("append", (0, 1, 2), [((0,), ()), ((1,), (0,)), ((2,), (0, 1))]),
     ("prepend", (2, 1, 0), [((2,), ()), ((1,), (2,)), ((0,), (1, 2))]),
     ("end_to_end", (0, 1, 2), [((0, 1, 2), ())])],
)  # fmt: skip
def test_stage_views_follow_the_direction(direction, order, views):
    spec = _spec(
        BASE.replace("grow append 2 x s", f"grow {direction} 3 x s") + "fuse { steps = 4 }\n"
    )
    facts = Facts.of(spec)
    assert facts.order == order
    got = [(v.new, tuple(sorted(v.trunk))) for v in facts.stages]
    assert got == [*views, ((), (0, 1, 2))]  # the fuse stage last, every stack trunk
    assert [v.fuse for v in facts.stages][-1] is True


def test_creation_index_in_prepend():
    spec = _spec(BASE.replace("grow append 2 x s", "grow prepend 3 x s"))
    assert Facts.of(spec).created == (3, 2, 1)


def test_stage_settings_take_the_first_override():
    text = BASE.replace(
        "grow append 2 x s { steps = 10 }",
        "grow append 4 x s { steps = 10, stage 2..3 { steps = 20 }, stage 4 { steps = 40 } }",
    )
    facts = Facts.of(_spec(text))
    assert [v.settings.steps for v in facts.stages] == [10, 20, 20, 40]


@pytest.mark.parametrize(
    ("pattern", "ranks"),
    [(Pattern.CONSTANT, [8, 8, 8, 8]), (Pattern.INCREASING, [8, 16, 32, 64]),
     (Pattern.DECREASING, [8, 4, 2, 1]), (Pattern.LINEAR, [8, 16, 24, 32])],
)  # fmt: skip
def test_lora_rank_patterns(pattern, ranks):
    lora = n.Lora(rank=8, alpha=16.0, pattern=pattern)
    assert [lora_rank(lora, k) for k in range(1, 5)] == ranks
    assert [lora_alpha(lora, k) for k in range(1, 5)] == [2.0 * r for r in ranks]  # scale kept


def test_lora_tables_and_default_alpha():
    lora = n.Lora(rank=(16, 8, 4), alpha=None)
    assert [lora_rank(lora, k) for k in (1, 2, 3)] == [16, 8, 4]
    assert [lora_alpha(lora, k) for k in (1, 2, 3)] == [16.0, 8.0, 4.0]
    assert lora_rank(n.Lora(rank=1, pattern=Pattern.INCREASING), 10_000) == 2**62


def test_default_ffn_widths():
    assert ffn_hidden(n.Gelu(), 96) == 384
    assert ffn_hidden(n.SwiGlu(), 96) == 256  # 8/3 * 96 = 256 exactly
    assert ffn_hidden(n.SwiGlu(), 100) == 320  # 266.7 rounded up to a multiple of 64
    assert ffn_hidden(n.SwiGlu(hidden=7), 100) == 7


def test_layer_shapes_for_mla_and_gelu():
    block = n.Block(
        name="b",
        attention=n.Attention(heads=8, kv_heads=2, latent=n.Latent(q_rank=32, kv_rank=16)),
        ffn=n.Gelu(hidden=256),
    )
    shapes = layer_shapes(block, 64)
    assert shapes == {
        Target.Q: (32, 64), Target.K: (16, 16), Target.V: (16, 16), Target.O: (64, 64),
        Target.UP: (64, 256), Target.DOWN: (256, 64),
    }  # fmt: skip
