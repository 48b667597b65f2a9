"""Token-by-token decoding (the ground sampling stands on, issue 11): a model reading a
sequence in pieces, keeping what each attention kind keeps of what it has read, gives the
logits it gives reading the sequence whole."""

from __future__ import annotations

import pytest
import torch

from stackwise_dsl.core.attention import Seen
from stackwise_dsl.core.stage_model import StageModel
from stackwise_dsl.runtime.weights import Store
from tests.runtime.helpers import plan_of, spec_with

KINDS = {
    "mha": "mha(heads = 4, mode = causal)",
    "gqa": "gqa(heads = 4, kv_heads = 2, mode = causal)",
    "mla": "mla(heads = 4, q_rank = 16, kv_rank = 8, mode = causal)",
    "linear kernel": "kernel(heads = 4, kernel = linear, kernel_dim = 16, mode = causal)",
    "gaussian kernel": "kernel(heads = 4, kernel = gaussian, kernel_dim = 16, mode = causal)",
    "mlgka": "mlgka(heads = 4, kv_heads = 2, q_rank = 16, kv_rank = 8, kernel_dim = 16, "
    "mode = causal)",
}


def _model(attention: str, extra: str = "", plan=None) -> StageModel:
    """The last stage's model (two stacks of two blocks), built as a run builds it."""
    torch.manual_seed(0)
    plan = plan or plan_of(spec_with(attention, objective="clm", extra=extra))
    store = Store()
    StageModel(plan, plan.stages[0], store, torch.device("cpu")).capture(store)
    return StageModel(plan, plan.stages[-1], store, torch.device("cpu")).eval()


def _pieces(model: StageModel, ids: torch.Tensor, cuts: list[int]) -> tuple[torch.Tensor, Seen]:
    seen, out = Seen(), []
    for a, b in zip([0, *cuts], [*cuts, ids.shape[1]], strict=True):
        out.append(model.logits(model.hidden(ids[:, a:b], None, seen=seen)))
        seen.offset = b
    return torch.cat(out, dim=1), seen


@pytest.mark.parametrize("kind", list(KINDS))
def test_reading_in_pieces_gives_the_logits_of_reading_whole(kind):
    model = _model(KINDS[kind])
    ids = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = model.logits(model.hidden(ids, None))
        # a prompt of 5, then one token at a time; and uneven pieces
        for cuts in ([5, *range(6, 16)], [3, 4, 9, 15]):
            pieces, _ = _pieces(model, ids, cuts)
            torch.testing.assert_close(pieces, whole, rtol=1e-5, atol=1e-5)


def test_what_each_kind_keeps_is_its_keys_its_latent_or_a_constant_state():
    ids = torch.randint(0, 300, (1, 16), generator=torch.Generator().manual_seed(2))
    sizes = {}
    for kind in ("mha", "gqa", "mla", "linear kernel"):
        model = _model(KINDS[kind])
        with torch.no_grad():
            _, short = _pieces(model, ids[:, :8], [4])
            _, long = _pieces(model, ids, [4, 8, 12])
        sizes[kind] = [sum(v.numel() for s in x.states.values() for v in s.values())
                       for x in (short, long)]  # fmt: skip
    # 4 blocks; 8 then 16 tokens of keys and values: 2 x (heads or kv_heads) x 8 per token
    assert sizes["mha"] == [4 * 2 * 4 * 8 * 8, 4 * 2 * 4 * 8 * 16]
    assert sizes["gqa"] == [4 * 2 * 2 * 8 * 8, 4 * 2 * 2 * 8 * 16]
    assert sizes["mla"] == [4 * 8 * 8, 4 * 8 * 16]  # the kv latent alone: kv_rank per token
    assert sizes["linear kernel"] == [4 * 4 * 8 * 8] * 2  # heads x head_dim x head_dim, any length


def test_learned_positions_continue_where_the_prompt_ended():
    plan = plan_of(spec_with(KINDS["mha"], objective="clm").replace(
        "vocab = 300 }", "vocab = 300, position = learned }"))  # fmt: skip
    model = _model("", plan=plan)
    assert model.rack.positions is not None
    ids = torch.randint(0, 300, (2, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        whole = model.logits(model.hidden(ids, None))
        pieces, _ = _pieces(model, ids, [4, 5, 6, 7, 8, 9, 10, 11])
    torch.testing.assert_close(pieces, whole, rtol=1e-5, atol=1e-5)


def test_bidirectional_kernel_attention_cannot_be_decoded():
    attention = "kernel(heads = 4, kernel = linear, kernel_dim = 16, mode = bidirectional)"
    model = _model("", plan=plan_of(spec_with(attention, objective="mlm")))
    with pytest.raises(ValueError, match="no token-by-token decoding"), torch.no_grad():
        _pieces(model, torch.zeros(1, 4, dtype=torch.long), [2])


@pytest.mark.parametrize("kind", list(KINDS))
def test_greedy_text_with_the_cache_is_the_text_without_it(kind):
    """Issue 11's check per attention kind: the same tokens, one pass per new token."""
    from stackwise_dsl.core.sampling import continue_text

    model = _model(KINDS[kind])
    prompt = torch.randint(0, 300, (3, 4), generator=torch.Generator().manual_seed(4))
    cached = continue_text(model, prompt, 12, temperature=0).ids
    again = continue_text(model, prompt, 12, temperature=0, cached=False).ids
    assert cached.shape == (3, 16) and torch.equal(cached[:, :4], prompt)
    assert torch.equal(cached, again)


def test_sampling_is_seeded_and_top_k_and_top_p_narrow_the_choice():
    from stackwise_dsl.core.sampling import continue_text, next_token

    model = _model(KINDS["gqa"])
    prompt = torch.zeros(2, 3, dtype=torch.long)

    def draw(seed, **choice):
        return continue_text(model, prompt, 8, generator=torch.Generator().manual_seed(seed),
                             **choice).ids  # fmt: skip

    assert torch.equal(draw(7), draw(7)) and not torch.equal(draw(7), draw(8))
    greedy = continue_text(model, prompt, 8, temperature=0).ids
    assert torch.equal(draw(7, top_k=1), greedy) and torch.equal(draw(7, top_p=1e-9), greedy)
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    probs = torch.softmax(logits.double(), dim=-1)[0]  # 0.032, 0.087, 0.237, 0.644
    seen = {int(next_token(logits, top_p=0.8, generator=torch.Generator().manual_seed(s)))
            for s in range(200)}  # fmt: skip
    assert seen == {2, 3} and probs[3] < 0.8 <= probs[2] + probs[3]
    seen = {int(next_token(logits, top_k=3, generator=torch.Generator().manual_seed(s)))
            for s in range(200)}  # fmt: skip
    assert seen == {1, 2, 3}
    with pytest.raises(ValueError, match="exceed the model's context of 16"):
        continue_text(model, prompt, 14)
    # never a banned id, even where it is the most likely
    top = int(greedy[0, 3])
    banned = continue_text(model, prompt, 8, temperature=0, banned=(top,)).ids
    assert banned[0, 3] != top and not (banned[:, 3:] == top).any()
