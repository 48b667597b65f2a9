"""`--set PATH=VALUE`: lets, nested fields, calls, stages, strings, and errors."""

from __future__ import annotations

import pytest

from stackwise_dsl import diagnostics as diag
from stackwise_dsl.elaborate import elaborate_text, parse_override
from stackwise_dsl.ir.facts import stage_settings
from tests.elaborate.helpers import BASE, codes

SPEC = (
    "let width = 64\n"
    + BASE.replace("d_model = 64", "d_model = width")
    + ('optimizer = adamw(lr = 1e-3, weight_decay = 0.1)\ndata { source = text("a.txt") }\n')
)


def _set(*overrides):
    r = elaborate_text(SPEC, "spec.sw", overrides)
    return r


def test_overrides_reach_every_kind_of_place():
    r = _set(
        "width=128",
        "model.position.theta=5e5",
        "block.b.attention.heads=8",
        "optimizer.lr=3e-4",
        "grow.stage.2.steps=50",
        "grow.steps=20",
        "data.source.files=../shared/data/tinyshakespeare.txt",
        "run.dir=runs/exp1",
        "objective=clm",
    )
    assert codes(r) == []
    spec = r.spec
    assert spec.model.d_model == 128
    assert spec.model.position.theta == 5e5
    assert spec.blocks[0].attention.heads == 8
    assert (spec.optimizer.lr, spec.optimizer.weight_decay) == (3e-4, 0.1)
    assert spec.grow.settings.steps == 20 and stage_settings(spec.grow)[1].steps == 50
    assert spec.data.source.files == ("../shared/data/tinyshakespeare.txt",)
    assert spec.run.dir == "runs/exp1"
    assert spec.objective.sw_name == "clm"


def test_origin_of_an_overridden_value_is_recorded():
    spec = _set("model.context=48").spec
    span = spec.model.spans["context"]
    assert span.source == "<--set model.context>" and (span.line, span.column) == (1, 15)


def test_stage_ranges_in_paths():
    spec = _set("grow.stage.1..2.lr=0.01").spec
    assert [(o.first, o.last, o.settings.lr) for o in spec.grow.overrides] == [(1, 2, 0.01)]


@pytest.mark.parametrize("text", ["nosuch", "=3", "a..b=1", "model.=1", "9x=1"])
def test_malformed_overrides(text):
    d = parse_override(text)
    assert isinstance(d, diag.Diagnostic) and d.code == "SW006"


def test_unknown_targets_are_diagnosed_at_the_override():
    r = _set("model.dmodel=3", "model.d_model.x=1")
    assert sorted(codes(r)) == ["SW006", "SW101"]
    unknown = next(d for d in r.diagnostics if d.code == "SW101")
    assert (
        unknown.span.source == "<--set model.dmodel>" and unknown.hint == "did you mean `d_model`?"
    )


def test_wrong_value_type_names_the_field():
    r = _set("data.batch=oops")
    (d,) = r.diagnostics
    assert d.code == "SW106" and "`data.batch` needs a whole number" in d.message
