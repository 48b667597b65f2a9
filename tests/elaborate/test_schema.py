"""The schema: fields, types, values, constructors and presets."""

from __future__ import annotations

import pytest

from stackwise_dsl.elaborate import elaborate_text
from stackwise_dsl.ir import nodes as n
from stackwise_dsl.ir.enums import KernelKind, Mode, Strategy
from tests.conftest import ROOT
from tests.elaborate.helpers import BASE, codes


def _attention(expr: str) -> n.Attention:
    r = elaborate_text(BASE.replace("mha(heads = 4)", expr))
    assert codes(r) == [], r.diagnostics
    return r.spec.blocks[0].attention


def test_presets_expand_to_the_same_ir():
    assert _attention("bert_style(heads = 4)") == _attention("mha(heads = 4, mode = bidirectional)")
    assert _attention("gpt_style(heads = 4)") == _attention("mha(heads = 4, mode = causal)")
    assert _attention("efficient_gqa(heads = 4, kv_heads = 2)") == _attention(
        "gqa(heads = 4, kv_heads = 2)"
    )
    assert _attention("mla_attention(heads = 4, q_rank = 32, kv_rank = 16)") == _attention(
        "mla(heads = 4, q_rank = 32, kv_rank = 16)"
    )
    assert _attention("kernel_attention(heads = 4, kernel_dim = 32)") == _attention(
        "kernel(heads = 4, kernel = gaussian, kernel_dim = 32)"
    )
    mlgka = _attention("mlgka(heads = 4, kv_heads = 2, q_rank = 32, kv_rank = 16, kernel_dim = 32)")
    assert mlgka == n.Attention(
        heads=4, kv_heads=2, mode=Mode.BIDIRECTIONAL, latent=n.Latent(q_rank=32, kv_rank=16),
        kernel=n.KernelFeatures(kernel=KernelKind.LAPLACIAN, kernel_dim=32),
    )  # fmt: skip


def test_unknown_attention_argument_names_its_owner():
    r = elaborate_text(BASE.replace("mha(heads = 4)", "mha(heads = 4, kv_heads = 2)"))
    (d,) = r.diagnostics
    assert d.code == "SW101" and "`kv_heads` belongs to `gqa`" in d.hint


@pytest.mark.parametrize(
    ("fragment", "code", "hint"),
    [("context = 32", "SW101", "did you mean `context`?"),
     ("context = 32, norm = batchnorm", "SW105", None),
     ('context = "32"', "SW104", None),
     ("context = 32.5", "SW104", "divide with `//` for a whole number"),
     ("context = 32, position = rope(10000)", "SW111", "name it: `rope(field = ...)`")],
)  # fmt: skip
def test_field_errors(fragment, code, hint):
    text = BASE.replace("context = 32", fragment)
    if code == "SW101":
        text = text.replace("context = 32", "contxt = 32")
    r = elaborate_text(text)
    assert codes(r) == [code]
    if hint:
        assert r.diagnostics[0].hint == hint


def test_missing_required_parts():
    r = elaborate_text("block b { attention = mha(heads = 4) }\n")
    assert [d.message for d in r.diagnostics] == ["the spec has no `model`, `objective` or `grow`"]
    assert r.spec is None and not r.complete


def test_a_misspelt_required_field_is_reported_once():
    r = elaborate_text(BASE.replace("context = 32", "contxt = 32"))
    assert codes(r) == ["SW101"]  # not also "model needs context"


def test_flags_and_flag_calls():
    r = elaborate_text(BASE.replace("{ steps = 10 }", "{ steps = 10, trunk { adapters, lora } }"))
    trunk = r.spec.grow.settings.trunk
    assert trunk.strategy is Strategy.ADAPTERS and trunk.lora == n.Lora()


def test_sections_are_not_values():
    r = elaborate_text(BASE + "run = 3\n")
    (d,) = r.diagnostics
    assert d.code == "SW104" and d.message == "`run` is a section: write `run { ... }`"


def test_a_section_named_after_its_field_means_the_default_constructor():
    r = elaborate_text(BASE.replace("context = 32", "context = 32, position { theta = 500 }"))
    assert codes(r) == [] and r.spec.model.position == n.Rope(theta=500.0)


def test_misplaced_stage():
    r = elaborate_text(BASE + "fuse { steps = 5, stage 1 { steps = 2 } }\n")
    assert codes(r) == ["SW110"]


def test_fuse_trunk_inherits_precision_and_adapters_but_not_strategy():
    text = BASE.replace(
        "{ steps = 10 }", "{ steps = 10, trunk { precision = nf4, lora(rank = 4) } }"
    )
    r = elaborate_text(text + "fuse { steps = 5 }\n")
    fuse = r.spec.fuse.trunk
    assert (fuse.strategy, fuse.precision.value, fuse.lora.rank) == (Strategy.FULL, "nf4", 4)
    r = elaborate_text(text + "fuse { steps = 5, trunk { adapters } }\n")
    assert r.spec.fuse.trunk.strategy is Strategy.ADAPTERS and r.spec.fuse.trunk.lora.rank == 4


def test_no_default_stands_in_for_a_value_written_wrong():
    """`mode = casual` is SW105 alone: the checks do not run on the default mode and report
    a causal objective over a bidirectional block (SW501)."""
    from stackwise_dsl.frontend import check_text

    tiny = (ROOT / "specs" / "tiny.sw").read_text()
    for wrong, code in (("mode = casual", "SW105"), ("stack s = 0 x b", "SW109"),
                        ("stack s = 1e3 x b", "SW109")):  # fmt: skip
        text = tiny.replace("mode = causal" if "mode" in wrong else "stack s = 1 x b", wrong)
        report = check_text(text, "t.sw")
        assert [d.code for d in report.diagnostics] == [code], wrong
    report = check_text(tiny.replace("stack s = 1 x b", "stack s = 1e3 x b"), "t.sw")
    assert report.diagnostics[0].hint == "write `1000 x ...`"
