"""The model: shapes, causality, GQA against MHA, kernel attention against its definition,
pinned values, and parameter counts that match `sw plan`."""

from __future__ import annotations

import pytest
import torch

from stackwise_dsl import estimate
from stackwise_dsl.core.attention import kernel_average, make_attention
from stackwise_dsl.core.layers import rope_tables
from stackwise_dsl.core.model import Rack
from stackwise_dsl.frontend import check_file
from stackwise_dsl.ir.enums import Init, KernelKind, Mode
from stackwise_dsl.lower import plan as p
from stackwise_dsl.lower import to_plan
from tests.conftest import BRING_TEXT, SPECS
from tests.runtime.helpers import plan_of, spec_with

KINDS = {
    "mha": "mha(heads = 4)",
    "gqa": "gqa(heads = 4, kv_heads = 2)",
    "mqa": "gqa(heads = 4, kv_heads = 1)",
    "mla": "mla(heads = 4, q_rank = 16, kv_rank = 8)",
    "kernel_linear": "kernel(heads = 4, kernel = linear, kernel_dim = 16)",
    "kernel_gaussian": "kernel(heads = 4, kernel = gaussian, kernel_dim = 16)",
    "kernel_laplacian": "kernel(heads = 4, kernel = laplacian, kernel_dim = 16)",
    "kernel_uniform": "kernel(heads = 4, kernel = uniform, kernel_dim = 16)",
    "mlgka": "mlgka(heads = 4, kv_heads = 2, q_rank = 16, kv_rank = 8, kernel_dim = 16)",
}


def _rack(attention: str, mode: str = "bidirectional", objective: str = "mlm") -> Rack:
    plan = plan_of(spec_with(attention.replace(")", f", mode = {mode})"), objective=objective))
    torch.manual_seed(0)
    rack = Rack(plan)
    for position in range(len(plan.stacks)):
        rack.add_stack(position, Init.RANDOM)
    return rack.eval()


def _forward(rack: Rack, tokens: torch.Tensor) -> torch.Tensor:
    return rack.logits(rack.run_stacks(rack.embed_tokens(tokens), range(len(rack.plan.stacks))))


@pytest.mark.parametrize("kind", list(KINDS))
def test_shapes_and_finite_outputs(kind):
    rack = _rack(KINDS[kind])
    tokens = torch.randint(0, 256, (3, 16))
    logits = _forward(rack, tokens)
    assert logits.shape == (3, 16, 300)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("kind", list(KINDS))
def test_causal_mode_never_sees_the_future(kind):
    rack = _rack(KINDS[kind], mode="causal", objective="clm")
    tokens = torch.randint(0, 256, (2, 16))
    changed = tokens.clone()
    changed[:, 9:] = torch.randint(0, 256, (2, 7))
    a, b = _forward(rack, tokens), _forward(rack, changed)
    assert torch.equal(a[:, :9], b[:, :9])  # bitwise: positions 0..8 cannot see 9..15
    assert not torch.allclose(a[:, 9:], b[:, 9:])


@pytest.mark.parametrize("kind", ["mha", "kernel_gaussian"])
def test_bidirectional_mode_sees_the_future(kind):
    rack = _rack(KINDS[kind])
    tokens = torch.randint(0, 256, (2, 16))
    changed = tokens.clone()
    changed[:, 15] = (tokens[:, 15] + 1) % 256
    assert not torch.allclose(_forward(rack, tokens)[:, 0], _forward(rack, changed)[:, 0])


def _attention(heads, kv_heads, kernel=None, kernel_dim=None, mode=Mode.BIDIRECTIONAL):
    features = None if kernel is None else p.KernelFeatures(kernel=kernel, kernel_dim=kernel_dim)
    a = p.Attention(heads=heads, kv_heads=kv_heads, head_dim=8, mode=mode, latent=None,
                    kernel=features)  # fmt: skip
    torch.manual_seed(1)
    return make_attention(a, heads * 8, features=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("mode", [Mode.BIDIRECTIONAL, Mode.CAUSAL])
def test_gqa_equals_mha_with_repeated_key_value_heads(mode):
    gqa, mha = _attention(4, 2, mode=mode), _attention(4, 4, mode=mode)
    with torch.no_grad():
        mha.q.weight.copy_(gqa.q.weight)
        mha.o.weight.copy_(gqa.o.weight)
        for name in ("k", "v"):  # (kv_heads*hd, d) → each kv head serves 2 query heads
            w = getattr(gqa, name).weight.view(2, 8, -1).repeat_interleave(2, dim=0)
            getattr(mha, name).weight.copy_(w.reshape(32, -1))
    x = torch.randn(3, 10, 32)
    torch.testing.assert_close(gqa(x, None), mha(x, None), rtol=1e-5, atol=1e-6)


def test_gqa_with_kv_heads_equal_to_heads_is_mha():
    a, b = _attention(4, 4), _attention(4, 4)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 7, 32)
    assert torch.equal(a(x, None), b(x, None))


@pytest.mark.parametrize("causal", [False, True])
def test_linear_kernel_matches_the_explicit_quadratic_form(causal):
    mode = Mode.CAUSAL if causal else Mode.BIDIRECTIONAL
    attn = _attention(2, 2, kernel=KernelKind.LINEAR, kernel_dim=8, mode=mode)
    x = torch.randn(2, 6, 16, dtype=torch.float64)
    attn = attn.double()
    q = attn.q(x).view(2, 6, 2, 8).transpose(1, 2)
    k = attn.k(x).view(2, 6, 2, 8).transpose(1, 2)
    v = attn.v(x).view(2, 6, 2, 8).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / 8**0.5  # (B, H, T, T): plain dot products
    if causal:
        scores = scores * torch.tril(torch.ones(6, 6, dtype=torch.float64))
        counts = torch.arange(1, 7, dtype=torch.float64).view(6, 1)
    else:
        counts = torch.full((6, 1), 6.0, dtype=torch.float64)
    explicit = (scores @ v) / counts
    expected = attn.o(explicit.transpose(1, 2).reshape(2, 6, 16))
    torch.testing.assert_close(attn(x, None), expected, rtol=1e-10, atol=1e-12)


def test_random_feature_kernels_approximate_their_kernels():
    """With many features, φ(q)·φ(k) ≈ exp(-|q-k|²/2) (gaussian) and exp(-|q-k|₁) (laplacian)."""
    from stackwise_dsl.core.attention import random_features

    g = torch.Generator().manual_seed(3)
    q, k = (
        torch.randn(64, 4, dtype=torch.float64) * 0.5,
        torch.randn(64, 4, dtype=torch.float64) * 0.5,
    )
    for kind, exact in [
        (KernelKind.GAUSSIAN, torch.exp(-((q - k) ** 2).sum(-1) / 2)),
        (KernelKind.LAPLACIAN, torch.exp(-(q - k).abs().sum(-1))),
    ]:
        w, b = random_features(kind, 4, 20000, g)
        w, b = w.double(), b.double()
        fq = (2.0 / 20000) ** 0.5 * torch.cos(q @ w + b)
        fk = (2.0 / 20000) ** 0.5 * torch.cos(k @ w + b)
        approx = (fq * fk).sum(-1)
        assert (approx - exact).abs().max() < 0.05, kind


def test_kernel_average_causal_equals_the_masked_mean():
    fq, fk, v = torch.randn(1, 1, 5, 3), torch.randn(1, 1, 5, 3), torch.randn(1, 1, 5, 2)
    out = kernel_average(fq, fk, v, causal=True)
    for i in range(5):
        manual = sum((fq[0, 0, i] @ fk[0, 0, j]) * v[0, 0, j] for j in range(i + 1)) / (i + 1)
        torch.testing.assert_close(out[0, 0, i], manual)


def test_pinned_outputs_under_a_fixed_seed():
    rack = _rack(KINDS["gqa"])
    tokens = torch.arange(16).view(1, 16)
    logits = _forward(rack, tokens)
    torch.manual_seed(999)  # the global seed plays no part
    assert torch.equal(_forward(_rack(KINDS["gqa"]), tokens), logits)
    assert logits.sum().item() == pytest.approx(PINNED_SUM, rel=1e-5)
    torch.testing.assert_close(logits[0, 0, :4], torch.tensor(PINNED_FIRST), rtol=1e-5, atol=1e-6)


# Recorded from this implementation; weights come from generators derived from (seed, name),
# so they do not depend on torch's global seed (checked in the test below).
PINNED_SUM = 10.419242858886719
PINNED_FIRST = [0.6067093, -0.0181102, 0.0031102, 0.0424896]


def test_initial_weights_depend_only_on_seed_and_position():
    plan = plan_of(spec_with(KINDS["mha"]))
    a, b = Rack(plan), Rack(plan)
    a.add_stack(0, Init.RANDOM)
    b.add_stack(1, Init.RANDOM)
    b.add_stack(0, Init.RANDOM)  # created second here, first there: same weights
    for (name, x), (_, y) in zip(
        a.stacks["0"].state_dict().items(), b.stacks["0"].state_dict().items(), strict=True
    ):
        assert torch.equal(x, y), name
    assert not torch.equal(
        b.stacks["0"].blocks[0].attn.q.weight, b.stacks["1"].blocks[0].attn.q.weight
    )


def test_identity_init_leaves_the_hidden_state_unchanged_and_copy_copies():
    plan = plan_of(spec_with(KINDS["mha"]))
    rack = Rack(plan)
    rack.add_stack(0, Init.RANDOM)
    rack.add_stack(1, Init.IDENTITY)
    h = torch.randn(2, 8, 32)
    assert torch.equal(rack.run_stacks(h, [1]), h)
    rack.add_stack(1, Init.COPY, copy_of=rack.stacks["0"].state_dict())
    assert torch.equal(rack.run_stacks(h, [1]), rack.run_stacks(h, [0]))


@pytest.mark.parametrize("path", [s for s in SPECS if s.stem != "llama70b"], ids=lambda s: s.stem)
def test_parameter_counts_match_the_estimate(path):
    report = check_file(path, ["data.source=stdlib"] if path.stem in BRING_TEXT else [])
    plan = to_plan(report.spec, vocab=80, name=path.stem)
    rack = Rack(plan)
    for s in plan.stacks:
        rack.add_stack(s.position, Init.RANDOM)
    assert sum(x.numel() for x in rack.parameters()) == estimate.final_params(plan)


def test_blocks_of_different_head_widths_each_get_their_own_rope():
    """gqa(heads = 32, kv_heads = 8) (head width 4) beside mha(heads = 2) (width 64) in one
    stack and across stacks: each block rotates with the tables of its own width, so a block
    gives the output it gives in a model of its width alone."""
    text = (
        "model { d_model = 128, context = 16, vocab = 300 }\n"
        "block narrow { attention = gqa(heads = 32, kv_heads = 8), ffn = swiglu(hidden = 64) }\n"
        "block wide { attention = mha(heads = 2), ffn = swiglu(hidden = 64) }\n"
        "stack s = narrow + wide\nstack t = 1 x wide\nobjective = mlm\n"
        "grow append s + t { steps = 1 }\n"
    )
    plan = plan_of(text)
    torch.manual_seed(0)
    rack = Rack(plan)
    for position in range(len(plan.stacks)):
        rack.add_stack(position, Init.RANDOM)
    rack.eval()
    tables = rack.ropes(torch.device("cpu"))
    assert sorted(tables) == [4, 64]
    for width in (4, 64):
        expected = rope_tables(16, width, plan.model.position.theta)
        assert all(torch.equal(a, b) for a, b in zip(tables[width], expected, strict=True))
    h = rack.embed_tokens(torch.randint(0, 256, (2, 16)))
    with torch.no_grad():
        out = rack.run_stacks(h, range(2))
        narrow, wide = rack.stacks["0"].blocks
        by_hand = rack.stacks["1"].blocks[0](wide(narrow(h, tables), tables), tables)
    assert out.shape == (2, 16, 128) and torch.isfinite(out).all()
    assert torch.equal(out, by_hand)
