"""Sampling from a causal LM stage: the next token, and a prompt continued token by token.

`continue_text` reads the prompt once and then each new token alone, the attention kinds
keeping what they need of what they have read (core/attention.py `Seen`: keys and values,
MLA's kv latent, or kernel attention's running sums). `cached=False` reads the whole
sequence again at every step; greedy output is the same token for token
(tests/runtime/test_decoding.py).
"""

from __future__ import annotations

import torch

from stackwise_dsl.core.attention import Seen
from stackwise_dsl.core.stage_model import StageModel


def next_token(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
    """One id per row of `logits` (B, V): the most likely at temperature 0, else a draw from
    the softmax at `temperature`, within the `top_k` most likely and the smallest set whose
    probability reaches `top_p`. Probabilities are computed in float64."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.double() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        ordered, order = torch.sort(logits, dim=-1, descending=True)
        probs = ordered.softmax(dim=-1)
        beyond = probs.cumsum(dim=-1) - probs >= top_p  # reached top_p before this token
        drop = beyond.scatter(-1, order, beyond)  # back to vocabulary order
        logits = logits.masked_fill(drop, float("-inf"))
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(-1)


def continue_text(model: StageModel, prompt: torch.Tensor, max_new_tokens: int, *,
                  cached: bool = True, **choice) -> torch.Tensor:  # fmt: skip
    """`prompt` (B, T) ids followed by `max_new_tokens` more, each chosen by `next_token`
    (`choice`: temperature, top_k, top_p, generator). The whole may not exceed the model's
    context."""
    context = model.plan.model.context
    if prompt.shape[1] + max_new_tokens > context:
        raise ValueError(f"a prompt of {prompt.shape[1]} tokens and {max_new_tokens} new ones "
                         f"exceed the model's context of {context}")  # fmt: skip
    model.eval()
    ids, seen = prompt, Seen() if cached else None
    with torch.no_grad():
        for _ in range(max_new_tokens):
            if seen is None:
                h = model.hidden(ids, None)
            else:
                new = ids[:, seen.offset :]
                h = model.hidden(new, None, seen=seen)
                seen.offset += new.shape[1]
            token = next_token(model.logits(h[:, -1]).float(), **choice)
            ids = torch.cat([ids, token[:, None].to(ids.dtype)], dim=1)
    return ids
