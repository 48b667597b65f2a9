"""Sampling from a causal LM stage: the next token, and a prompt continued token by token.

`continue_text` reads the prompt once and then each new token alone, the attention kinds
keeping what they need of what they have read (core/attention.py `Seen`: keys and values,
MLA's kv latent, or kernel attention's running sums). `cached=False` reads the whole
sequence again at every step; greedy output is the same token for token
(tests/runtime/test_decoding.py).
"""

from __future__ import annotations

import math

import attrs
import torch

from stackwise_dsl.core.attention import Seen
from stackwise_dsl.core.stage_model import StageModel
from stackwise_dsl.data.corpus import DataError
from stackwise_dsl.lower import plan as p
from stackwise_dsl.lower.dispatch import samplers_for
from stackwise_dsl.lower.schedule import ratio_at


@attrs.frozen
class Sampled:
    ids: torch.Tensor  # (B, T) every masked position filled
    calls: int  # network calls made


def next_token(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
    """One id per row of `logits` (B, V): the most likely at temperature 0, else a draw from
    the softmax at `temperature`, within the `top_k` most likely and the smallest set whose
    probability reaches `top_p`. Probabilities are computed in float64."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = _within(logits.double() / temperature, top_k, top_p)
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(-1)


def continue_text(model: StageModel, prompt: torch.Tensor, max_new_tokens: int, *,
                  cached: bool = True, banned: tuple[int, ...] = (),
                  **choice) -> Sampled:  # fmt: skip
    """`prompt` (B, T) ids followed by `max_new_tokens` more, each chosen by `next_token`
    (`choice`: temperature, top_k, top_p, generator), never a `banned` id (`<mask>`).
    The whole may not exceed the model's context."""
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
            logits = model.logits(h[:, -1]).float()
            logits[:, list(banned)] = float("-inf")
            token = next_token(logits, **choice)
            ids = torch.cat([ids, token[:, None].to(ids.dtype)], dim=1)
    return Sampled(ids=ids, calls=max_new_tokens)


# --- masked models: fill what is masked ---


def _predict(model: StageModel, x: torch.Tensor, t: float | None, banned: tuple[int, ...],
             positions=None) -> torch.Tensor:  # fmt: skip
    """Float64 logits (B, T, V) of a masked model, never choosing a banned id
    (`<mask>`)."""
    times = None if t is None else torch.full((x.shape[0],), float(t), device=x.device)
    logits = model.logits(model.hidden(x, times, positions)).double()
    logits[..., list(banned)] = float("-inf")
    return logits


def _choose(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
            top_p: float | None = None, generator: torch.Generator | None = None,
            ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """A token for every position of float64 `logits` (B, T, V) and the model's probability
    of it: the most likely at temperature 0, else the Gumbel-max draw from the softmax at
    `temperature` within top-k and top-p (the noise in float64, as LLaDA found it must be)."""
    probs = logits.softmax(dim=-1)
    if temperature == 0:
        chosen = logits.argmax(dim=-1)
    else:
        flat = logits.reshape(-1, logits.shape[-1]) / temperature
        flat = _within(flat, top_k, top_p)
        u = torch.rand(flat.shape, dtype=torch.float64, generator=generator).to(flat.device)
        u = u.clamp_(1e-300, 1.0)
        chosen = (flat - torch.log(-torch.log(u))).argmax(dim=-1).reshape(logits.shape[:-1])
    return chosen, probs.gather(-1, chosen[..., None]).squeeze(-1)


def _within(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """`logits` (N, V) with every token outside the top k and the top-p nucleus at -inf."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        ordered, order = torch.sort(logits, dim=-1, descending=True)
        probs = ordered.softmax(dim=-1)
        beyond = probs.cumsum(dim=-1) - probs >= top_p  # reached top_p before this token
        logits = logits.masked_fill(beyond.scatter(-1, order, beyond), float("-inf"))
    return logits


def _commit(x: torch.Tensor, chosen: torch.Tensor, confidence: torch.Tensor,
            open_: torch.Tensor, count: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """`x` with the `count[b]` most confident `open_` positions of each row set to `chosen`."""
    score = confidence.masked_fill(~open_, float("-inf"))
    rank = score.argsort(dim=-1, descending=True).argsort(dim=-1)
    take = open_ & (rank < count[:, None])
    return torch.where(take, chosen, x)


def fill(model: StageModel, x: torch.Tensor, *, mask: int, banned: tuple[int, ...],
         **choice) -> Sampled:  # fmt: skip
    """MLM: every `<mask>` of `x` filled from one reading of it."""
    model.eval()
    with torch.no_grad():
        chosen, _ = _choose(_predict(model, x, None, banned), **choice)
    return Sampled(ids=torch.where(x == mask, chosen, x), calls=1)


def unroll_depth(model: StageModel, x: torch.Tensor, levels: list[tuple[tuple[int, ...], float]],
                 *, mask: int, banned: tuple[int, ...], **choice) -> Sampled:  # fmt: skip
    """Masked diffusion with time as depth: `levels` are the arrangements the stages trained,
    (stack positions, mask ratio), noisiest first. Call k reads `x` through arrangement k and
    commits its most confident predictions until the next level's ratio of the positions that
    started masked is still masked (none after the last): one network call per level."""
    model.eval()
    start = (x == mask).sum(dim=1)
    calls = 0
    with torch.no_grad():
        for k, (positions, _) in enumerate(levels):
            masked = x == mask
            chosen, confidence = _choose(_predict(model, x, None, banned, positions), **choice)
            calls += 1
            later = levels[k + 1][1] if k + 1 < len(levels) else 0.0
            keep = torch.round(start.double() * later).long()
            x = _commit(x, chosen, confidence, masked, masked.sum(dim=1) - keep)
    return Sampled(ids=x, calls=calls)


def ancestral(model: StageModel, x: torch.Tensor, fractions: list[float], times: list[float],
              *, mask: int, banned: tuple[int, ...],
              generator: torch.Generator | None = None, **choice) -> Sampled:  # fmt: skip
    """Masked diffusion with time as input, MDLM's ancestral sampler: step i goes from
    `fractions[i]` of the positions that started masked still masked to `fractions[i + 1]`
    (1.0 first, 0.0 last) at time `times[i]`, revealing each masked position with
    probability (f_i - f_{i+1}) / f_i, as a draw from the model read at that time. Whether
    and when a position is revealed does not depend on the model, so it is drawn first (a
    position survives through step i with probability f_{i+1}); the network is called only
    at the steps that reveal something, since a step that reveals nothing changes nothing.
    The cost grows with the tokens, not with the steps."""
    model.eval()
    masked = x == mask
    after = torch.tensor(fractions[1 : len(times) + 1], dtype=torch.float64)
    u = torch.rand(x.shape, dtype=torch.float64, generator=generator)
    # steps survived: how many of the (never rising) fractions after a step are >= u
    when = (len(after) - torch.searchsorted(after.flip(0), u, right=False)).to(x.device)
    calls = 0
    with torch.no_grad():
        for i in sorted(set(when[masked].tolist())):
            if i >= len(times):
                break  # the steps given end before these positions are revealed
            logits = _predict(model, x, times[i], banned)
            calls += 1
            chosen, _ = _choose(logits, generator=generator, **choice)
            x = torch.where(masked & (when == i), chosen, x)
    return Sampled(ids=x, calls=calls)


def low_confidence(model: StageModel, x: torch.Tensor, steps: int, block: int | None,
                   read_at, *, mask: int, banned: tuple[int, ...],
                   **choice) -> Sampled:  # fmt: skip
    """Masked diffusion with time as input, LLaDA's low-confidence remasking: the positions
    that started masked are filled in blocks of `block` (all at once without), left to
    right; each block over its share of `steps`, committing at every step its most confident
    predictions (an even share of the block) and leaving the rest masked. The model reads at
    `read_at(f)`, f the fraction of the first masked positions still masked."""
    model.eval()
    free = x == mask
    start = free.sum(dim=1).clamp(min=1)
    order = free.long().cumsum(dim=1) - 1  # the index of each free position among its row's
    width = int(free.sum(dim=1).max()) if block is None else block
    blocks = max(1, -(-int(free.sum(dim=1).max()) // max(width, 1)))
    if steps < blocks:
        raise ValueError(f"{steps} steps cannot fill {blocks} blocks: give at least one step "
                         "per block (--steps, or a longer --block)")  # fmt: skip
    shares = [steps // blocks + (b < steps % blocks) for b in range(blocks)]
    calls = 0
    with torch.no_grad():
        for b, share in enumerate(shares):
            here = free & (order >= b * width) & (order < (b + 1) * width)
            left = (here & (x == mask)).sum(dim=1)
            for j in range(share):
                masked = x == mask
                open_ = here & masked
                if not open_.any():
                    break
                fraction = float((masked & free).sum()) / float(start.sum())
                chosen, confidence = _choose(
                    _predict(model, x, read_at(fraction), banned), **choice
                )
                calls += 1
                count = left // share + (j < left % share).long()  # LLaDA's even shares
                x = _commit(x, chosen, confidence, open_, count)
    return Sampled(ids=x, calls=calls)


# --- the noise levels a run's model was trained at ---


def depth_levels(
    plan: p.Plan, upto: p.Stage, *, fused: bool = False
) -> list[tuple[tuple[int, ...], float]]:
    """Time as depth: (stack positions, mask ratio) for every grow stage up to `upto`, the
    arrangement that stage trained at its ratio, noisiest first. `fused`: the whole of
    `upto`'s rack at each of those ratios (the way a fuse stage trains)."""
    levels = [(tuple(x.position for x in s.parts), s.mask_ratio)
              for s in plan.stages[: upto.number] if s.mask_ratio is not None]  # fmt: skip
    if fused:
        every = tuple(x.position for x in upto.parts)
        levels = [(every, ratio) for _, ratio in levels]
    return sorted(levels, key=lambda level: -level[1])


def masked_at(objective: p.MaskedDiffusion, t: float) -> float:
    """Time as input: the mask ratio at time t (1: the input side of the schedule)."""
    return ratio_at(objective.mask, 1.0 - t)


def model_time(objective: p.MaskedDiffusion, t: float) -> float:
    """t as the model read it in training: on its grid k / num_time_steps (k >= 1) if it has
    one."""
    steps = objective.time.num_time_steps
    return max(1, math.ceil(t * steps - 1e-9)) / steps if steps else t


def time_for(objective: p.MaskedDiffusion, ratio: float) -> float:
    """The time whose mask ratio is `ratio` (the nearest end of the schedule beyond it), as
    the model reads it. Schedules are monotone, so halving the interval finds it."""
    lo, hi = 0.0, 1.0
    rising = masked_at(objective, 1.0) >= masked_at(objective, 0.0)
    for _ in range(60):
        mid = (lo + hi) / 2
        if (masked_at(objective, mid) < ratio) == rising:
            lo = mid
        else:
            hi = mid
    return model_time(objective, round((lo + hi) / 2, 12))


def ancestral_steps(objective: p.MaskedDiffusion, steps: int) -> tuple[list[float], list[float]]:
    """MDLM's grid of `steps` steps from t = 1 to 0: the fraction still masked before and
    after each (from 1.0, the schedule's ratios between, down to 0.0; never rising) and the
    time each step reads at."""
    times = [1.0 - i / steps for i in range(steps)]
    fractions = [1.0, *(masked_at(objective, t) for t in times[1:]), 0.0]
    for i in range(1, len(fractions)):
        fractions[i] = min(fractions[i], fractions[i - 1])
    return fractions, [model_time(objective, t) for t in times]


# --- a prompt in, samples out: what `sw sample`, the API and a compiled script call ---

MASK = "<mask>"  # where a prompt asks a masked model to fill in


def encode_prompt(tokenizer, text: str) -> list[int]:
    """Token ids of `text`; each `<mask>` in it is the mask token."""
    ids: list[int] = []
    pieces = text.split(MASK)
    if len(pieces) > 1 and tokenizer.specials.mask is None:
        raise ValueError("a causal LM continues its prompt; it has no `<mask>` to fill")
    for i, piece in enumerate(pieces):
        if i:
            ids.append(tokenizer.specials.mask)
        if piece:
            ids += [int(x) for x in tokenizer.encode(piece)]
    return ids


MAX_STEPS = 100_000  # time steps a time-as-input sampler may take
CHUNK = 64  # samples drawn together; more are drawn chunk by chunk, with the same generator


def sample(model: StageModel, tokenizer, prompt: list[int], *, max_new_tokens: int | None = None,
           num_samples: int = 1, sampler: str | None = None, steps: int | None = None,
           block: int | None = None, seed: int = 0, temperature: float = 1.0,
           top_k: int | None = None, top_p: float | None = None) -> Sampled:  # fmt: skip
    """`num_samples` samples from `model` (a checkpoint's, built for its stage) for the
    prompt's ids: continued (CLM; default 100 new tokens, or what fits the context) or with
    its masks and `max_new_tokens` more after it filled (masked models; default: to seq_len,
    or none when the prompt has masks). `steps`: time steps of a time-as-input sampler
    (default num_time_steps, else 64); `block`: the low_confidence sampler's block length
    (default one block). ValueError, in words, for a request that does not fit the model."""
    o, plan = model.stage.objective, model.plan
    sampler = sampler or samplers_for(o)[0]
    _check(model.stage, sampler, max_new_tokens, num_samples, temperature, top_k, top_p, steps,
           block, seed)  # fmt: skip
    mask, ids = tokenizer.specials.mask, list(prompt)
    causal = isinstance(o, p.Clm)
    if causal and mask is not None and mask in ids:
        raise ValueError("a causal LM continues its prompt; it has no `<mask>` to fill")
    given = len(ids)
    if causal and not ids:
        ids = _start(tokenizer)
    room = plan.model.context - len(ids)
    if max_new_tokens is None:
        wanted = 100 if causal else plan.data.seq_len - len(ids)
        max_new_tokens = 0 if mask in ids else max(0, min(wanted, room))
    if max_new_tokens > room:
        what = (f"a prompt of {len(ids)} tokens" if given
                else "the token an empty prompt starts from")  # fmt: skip
        context = plan.model.context
        raise ValueError(f"{what} and {max_new_tokens} new ones: the whole must fit the "
                         f"model's context of {context} (at most {room} new)")  # fmt: skip
    if causal and max_new_tokens == 0:
        raise ValueError("nothing to generate: max_new_tokens is 0"
                         + (f" (a prompt of {len(ids)} tokens fills the context)" if room == 0
                            else ""))  # fmt: skip
    if not causal:
        ids = ids + [mask] * max_new_tokens
        if mask not in ids:
            raise ValueError("nothing to fill: give max_new_tokens, or a prompt with `<mask>`")
    generator = torch.Generator().manual_seed(seed)
    rows, calls = [], 0
    for start in range(0, num_samples, CHUNK):
        count = min(CHUNK, num_samples - start)
        x = torch.tensor([ids] * count, dtype=torch.long, device=model.device)
        out = _draw(model, x, sampler, steps, block, tokenizer, max_new_tokens,
                    temperature=temperature, top_k=top_k, top_p=top_p,
                    generator=generator)  # fmt: skip
        rows.append(out.ids.cpu())
        calls += out.calls
    return Sampled(ids=torch.cat(rows), calls=calls)


def _start(tokenizer) -> list[int]:
    """What a causal LM continues when the prompt is empty: `<eos>` (a document starts after
    it), or a newline for a model of one text, which has no `<eos>` (as nanoGPT starts)."""
    if tokenizer.specials.eos is not None:
        return [tokenizer.specials.eos]
    try:
        ids = [int(x) for x in tokenizer.encode("\n")]
    except DataError:
        ids = []
    if len(ids) != 1:
        raise ValueError("this model has no `<eos>` to start from and no newline in its "
                         "vocabulary: give a prompt")  # fmt: skip
    return ids


def _draw(model: StageModel, x: torch.Tensor, sampler: str, steps, block, tokenizer,
          max_new_tokens: int, **choice) -> Sampled:  # fmt: skip
    """One chunk of samples, with the objective's sampler."""
    o = model.stage.objective
    mask = tokenizer.specials.mask
    banned = (mask,) if mask is not None else ()
    if isinstance(o, p.Clm):
        out = continue_text(model, x, max_new_tokens, banned=banned, **choice)
    if isinstance(o, p.Mlm):
        out = fill(model, x, mask=mask, banned=banned, **choice)
    if isinstance(o, p.MaskedDiffusion) and isinstance(o.time, p.DepthTime):
        levels = depth_levels(model.plan, model.stage, fused=sampler == "fused")
        out = unroll_depth(model, x, levels, mask=mask, banned=banned, **choice)
    if isinstance(o, p.MaskedDiffusion) and isinstance(o.time, p.InputTime):
        steps = steps or o.time.num_time_steps or 64
        if sampler == "ancestral":
            fractions, times = ancestral_steps(o, steps)
            out = ancestral(model, x, fractions, times, mask=mask, banned=banned, **choice)
        else:
            out = low_confidence(model, x, steps, block, lambda f: time_for(o, f), mask=mask,
                                 banned=banned, **choice)  # fmt: skip
    return out


def _check(stage: p.Stage, sampler, max_new_tokens, num_samples, temperature, top_k, top_p,
           steps, block, seed) -> None:  # fmt: skip
    """ValueError for an option of the wrong type or out of range, or one the stage's
    objective has no use for."""
    names = samplers_for(stage.objective)
    if sampler not in names:
        raise ValueError(f"sampler {sampler!r} does not fit this run's objective: use "
                         f"{' or '.join(names)}")  # fmt: skip
    if sampler == "fused" and stage.kind is not p.StageKind.FUSE:
        raise ValueError("the fused sampler reads the whole rack at every level, the way a "
                         f"fuse stage trains; stage {stage.number} is a {stage.kind.value} "
                         "stage: use depth")  # fmt: skip
    whole = {"num_samples": (num_samples, 1), "max_new_tokens": (max_new_tokens, 0),
             "top_k": (top_k, 1), "steps": (steps, 1), "block": (block, 1)}  # fmt: skip
    for name, (value, least) in whole.items():
        if value is not None and (type(value) is not int or value < least):
            raise ValueError(f"{name} must be a whole number of at least {least}, not {value!r}")
    if type(seed) is not int or not -(2**63) <= seed < 2**64:
        raise ValueError(f"seed must be a whole number from -2^63 to 2^64 - 1, not {seed!r}")
    if (
        not isinstance(temperature, int | float)
        or isinstance(temperature, bool)
        or not (temperature == 0 or 1e-6 <= temperature < math.inf)
    ):
        raise ValueError(f"temperature must be 0 (the most likely token) or a finite number "
                         f"of at least 1e-6, not {temperature!r}")  # fmt: skip
    if top_p is not None and (not isinstance(top_p, int | float) or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1], not {top_p!r}")
    if steps is not None and "ancestral" not in names:
        raise ValueError("steps is only for masked diffusion with time as input")
    if steps is not None and steps > MAX_STEPS:
        raise ValueError(f"steps must be at most {MAX_STEPS:,}, not {steps:,}")
    if block is not None and sampler != "low_confidence":
        raise ValueError("block is only for the low_confidence sampler (--sampler low_confidence)")
