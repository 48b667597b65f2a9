"""`sw plan`'s memory estimate (estimate/memory.py) against the peak tensor memory each stage
of a real run holds (runtime/peaks.py, the CPU allocator's records), across what changes the
memory: block kinds, norms, dropout, objectives, growth with frozen and quantized trunks,
adapters, autocast, recompute, optimizers, accumulation and the activation cache."""

from __future__ import annotations

import pytest

from stackwise_dsl.data import plan_spec, prepare
from stackwise_dsl.estimate.memory import stage_memory
from stackwise_dsl.frontend import check_text
from stackwise_dsl.runtime.peaks import stage_peaks
from tests.conftest import ROOT

SPEC = """model {{ d_model = {d_model}, context = 32 {model} }}
block b {{ attention = {attention}, ffn = {ffn} }}
stack s = {blocks} x b
objective = {objective}
grow {grow}
data {{ source = stdlib, tokenizer = bytes, batch = 8 }}
optimizer = {optimizer}
run {{ seed = 0, eval_batches = 1 }}
"""
CAUSAL = "mha(heads = 4, mode = causal)"
TINY = ROOT / "specs" / "models" / "tiny-llama"  # its embedding is 64 wide
DEFAULTS = dict(d_model=64, model="", attention=CAUSAL, ffn="gelu", blocks=1, objective="clm",
                grow="end_to_end 2 x s { steps = 2 }", optimizer="adamw(lr = 1e-3)")  # fmt: skip
CASES = {
    "end to end, gelu, rmsnorm": {},
    "swiglu, dropout, layernorm": dict(ffn="swiglu", model=", dropout = 0.1, norm = layernorm"),
    "mlm, learned positions": dict(
        attention="mha(heads = 4)", objective="mlm", model=", position = learned"
    ),
    "gqa and mla": dict(attention="mla(heads = 4, q_rank = 32, kv_rank = 16, mode = causal)"),
    "kernel attention": dict(
        attention="kernel(heads = 4, kernel = gaussian, kernel_dim = 32, mode = causal)"
    ),
    "append over an nf4 trunk with lora": dict(
        blocks=2,
        grow="append 3 x s { steps = 2, trunk { frozen, precision = nf4,"
        " lora(rank = 4, targets = [q, v]) } }",
    ),
    "prepend through a frozen suffix": dict(
        blocks=2, grow="prepend 3 x s { steps = 2, trunk { frozen } }"
    ),
    "prepend with recompute": dict(
        blocks=2, grow="prepend 3 x s { steps = 2, recompute = true, trunk { frozen } }"
    ),
    "a new stack in bf16": dict(grow="append 2 x s { steps = 2, new { precision = bf16 } }"),
    "adamw8bit, accumulation": dict(optimizer="adamw8bit(lr = 1e-3, accumulate = 2)"),
    "sgd with momentum": dict(optimizer="sgd(lr = 1e-3, momentum = 0.9)"),
    "a memory cache over 20 steps": dict(
        grow="append 3 x s { steps = 20, cache = memory, trunk { frozen } }"
    ),
    "a frozen pretrained embedding under its adapter": dict(
        d_model=32,
        model=f', vocab = 257, embed_dim = 64, head = untied, embedding = hf("{TINY}")',
        grow="prepend 2 x s { steps = 2, embeddings = train }",
    ),
    "a frozen pretrained embedding and its tied head": dict(
        model=f', vocab = 257, embedding = hf("{TINY}")',
        grow="append 2 x s { steps = 2, trunk { frozen } }",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_estimate_within_5_percent_of_the_measured_peak(case, tmp_path):
    report = check_text(SPEC.format(**{**DEFAULTS, **CASES[case]}), "memory.sw")
    assert report.ok, [d.message for d in report.diagnostics if d.is_error]
    plan = plan_spec(report.spec, "memory")
    windows = len(prepare(plan.data, plan.run.seed).train)
    measured = stage_peaks(plan, tmp_path / "run")
    for stage, peak in zip(plan.stages, measured, strict=True):
        estimate = stage_memory(plan, stage, windows=windows).peak
        assert estimate == pytest.approx(peak, rel=0.05), (stage.number, estimate, peak)
