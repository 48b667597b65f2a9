"""Property-testing support for specs: public Hypothesis strategies and helpers.

    from hypothesis import given
    from stackwise_dsl import testing

    bidirectional = testing.attentions(d_model=256, mode=testing.Mode.BIDIRECTIONAL)

    @given(testing.variants("my.sw", attention=bidirectional,
                            trunk_precision=testing.frozen_precisions()))
    def test_my_spec_in_every_variant(spec):
        assert testing.errors(spec) == []

`specs()` draws whole valid specs; `variants()` varies a spec of your own along the axes you
choose, everywhere that axis appears; `errors()` and `diagnostics()` run the checks;
`on_small_data()` and `one_step_per_stage()` train a drawn spec briefly (what `sw check`
passes, `sw run` runs); `with_pretrained_embedding()` gives it a local Hugging Face model's
embedding.
"""

from __future__ import annotations

from pathlib import Path

import attrs
from hypothesis import strategies as st

from stackwise_dsl import diagnostics as diag
from stackwise_dsl.checks import CPU_ONLY, Host, run_checks
from stackwise_dsl.ir import nodes as n
from stackwise_dsl.ir.enums import Mode, Precision
from stackwise_dsl.testing.runs import on_small_data, one_step_per_stage, with_pretrained_embedding
from stackwise_dsl.testing.strategies import (
    attentions,
    blocks,
    frozen_precisions,
    loras,
    objectives,
    raw_specs,
    schedules,
    spec_texts,
    specs,
    trainable_precisions,
)

__all__ = [
    "Mode",
    "Precision",
    "attentions",
    "blocks",
    "diagnostics",
    "errors",
    "frozen_precisions",
    "load",
    "loras",
    "objectives",
    "on_small_data",
    "one_step_per_stage",
    "raw_specs",
    "schedules",
    "spec_texts",
    "specs",
    "trainable_precisions",
    "variants",
    "with_pretrained_embedding",
]


def diagnostics(spec: n.Spec, host: Host = CPU_ONLY) -> tuple[diag.Diagnostic, ...]:
    """Everything the checks report about an IR spec."""
    return run_checks(spec, host)


def errors(spec: n.Spec, host: Host = CPU_ONLY) -> list[str]:
    """The codes and messages of the errors the checks report (empty when the spec is valid)."""
    return [f"{d.code}: {d.message}" for d in run_checks(spec, host) if d.is_error]


def load(spec: n.Spec | str | Path) -> n.Spec:
    """An IR spec from an IR spec, a path to a .sw file, or spec text."""
    if isinstance(spec, n.Spec):
        return spec
    from stackwise_dsl.frontend import check_file, check_text

    is_path = isinstance(spec, Path) or (
        isinstance(spec, str) and "\n" not in spec and spec.endswith(".sw")
    )
    report = check_file(spec) if is_path else check_text(spec)
    if not report.ok:
        problems = "; ".join(f"{d.code} {d.message}" for d in report.diagnostics if d.is_error)
        raise ValueError(f"the base spec has errors: {problems}")
    return report.spec


def variants(
    base: n.Spec | str | Path,
    *,
    attention: st.SearchStrategy[n.Attention] | None = None,
    ffn: st.SearchStrategy[n.Ffn] | None = None,
    new_precision: st.SearchStrategy[Precision] | None = None,
    trunk_precision: st.SearchStrategy[Precision] | None = None,
    objective: st.SearchStrategy[n.Objective] | None = None,
) -> st.SearchStrategy[n.Spec]:
    """Specs equal to `base` except along the given axes, each drawn once and applied to
    every block (attention, ffn), every stage (precisions) or the spec (objective)."""
    spec = load(base)
    axes = {
        "attention": attention,
        "ffn": ffn,
        "new_precision": new_precision,
        "trunk_precision": trunk_precision,
        "objective": objective,
    }
    drawn = {k: (s if s is not None else st.none()) for k, s in axes.items()}
    return st.fixed_dictionaries(drawn).map(lambda chosen: _apply(spec, chosen))


def _apply(spec: n.Spec, chosen: dict) -> n.Spec:
    blocks_ = tuple(
        attrs.evolve(
            b,
            attention=chosen["attention"] or b.attention,
            ffn=chosen["ffn"] or b.ffn,
        )
        for b in spec.blocks
    )
    grow = spec.grow
    settings = _precisions(grow.settings, chosen)
    overrides = tuple(
        attrs.evolve(o, settings=_precisions(o.settings, chosen)) for o in grow.overrides
    )
    fuse = spec.fuse
    if fuse is not None and chosen["trunk_precision"] is not None:
        fuse = attrs.evolve(
            fuse, trunk=attrs.evolve(fuse.trunk, precision=chosen["trunk_precision"])
        )
    return attrs.evolve(
        spec,
        blocks=blocks_,
        objective=chosen["objective"] or spec.objective,
        grow=attrs.evolve(grow, settings=settings, overrides=overrides),
        fuse=fuse,
    )


def _precisions(s: n.StageSettings, chosen: dict) -> n.StageSettings:
    new, trunk = s.new, s.trunk
    if chosen["new_precision"] is not None:
        new = attrs.evolve(new, precision=chosen["new_precision"])
    if chosen["trunk_precision"] is not None:
        trunk = attrs.evolve(trunk, precision=chosen["trunk_precision"])
    return attrs.evolve(s, new=new, trunk=trunk)
