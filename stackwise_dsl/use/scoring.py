"""Scoring a trained model on text: the measures `sw eval` and `Trained.score` report.

- CLM: the mean loss per predicted token, its perplexity, and bits per token, per byte and
  per character of the text predicted (special tokens count no bytes or characters).
- MLM: the loss on the masked tokens at the objective's ratio, the masks fixed by the seed
  and the window (the way training draws them).
- Masked diffusion: the loss on the masked tokens at ratios 0.15, 0.3, 0.5, 0.7 and 0.9,
  masks fixed the same way. With time as depth each ratio is read through the arrangement of
  stacks trained at the nearest level; with time as input at the time whose ratio it is.
  With time as input also MDLM's continuous-time bound on the negative log-likelihood
  (`nelbo`), in bits per token: the integral over the mask ratio m of the masked tokens' loss
  / m (midpoint rule in m, NELBO_POINTS points; nested masks stratified over each window's
  positions), plus the loss of the tokens
  still masked at t = 0 when the schedule ends above 0, plus the prior's cost of the tokens
  left unmasked at t = 1 (uniform over the vocabulary less `<mask>`) when it
  starts below 1. With `mask = linear(1.0 -> 0.0)` that is MDLM's bound exactly.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from stackwise_dsl.core import sampling
from stackwise_dsl.core.objectives import IGNORE, Vocabulary, make_batch
from stackwise_dsl.core.seeds import generator
from stackwise_dsl.data.tokenizer import ByteTokenizer, CharTokenizer
from stackwise_dsl.lower import plan as p
from stackwise_dsl.use.errors import UseError

RATIOS = (0.15, 0.3, 0.5, 0.7, 0.9)
NELBO_POINTS = 32
BATCH = 16


def windows_of(ids: np.ndarray, seq_len: int) -> list[np.ndarray]:
    """`ids` cut into windows of seq_len + 1 tokens, the last (at least 2 tokens) shorter."""
    width = seq_len + 1
    out = [ids[i : i + width] for i in range(0, len(ids), width)]
    out = [w for w in out if len(w) >= 2]
    if not out:
        raise UseError(f"the text has {len(ids)} token(s): at least 2 are needed to score it")
    return out


def score(trained, windows: list[np.ndarray], ids: np.ndarray | None = None) -> dict:
    """The measures of the module docstring over `windows` (token id arrays; `ids` name them
    for the masks, default 0, 1, ...)."""
    ids = np.arange(len(windows)) if ids is None else np.asarray(ids)
    batches = _batches(windows, ids)
    trained.model.eval()
    with torch.no_grad():
        if isinstance(trained.objective, p.Clm):
            return _clm(trained, batches)
        if isinstance(trained.objective, p.Mlm):
            return _mlm(trained, batches)
        return _diffusion(trained, batches)


def headline(result: dict) -> float:
    """One loss for a row: the loss, or a masked diffusion's mean over its ratios."""
    if "ratios" in result:
        return float(np.mean([r["loss"] for r in result["ratios"]]))
    return result["loss"]


def _batches(windows: list[np.ndarray], ids: np.ndarray) -> list[tuple[torch.Tensor, np.ndarray]]:
    """Windows of one length together, BATCH at a time, in order."""
    out, i = [], 0
    while i < len(windows):
        j = i
        while j < len(windows) and j - i < BATCH and len(windows[j]) == len(windows[i]):
            j += 1
        out.append((torch.from_numpy(np.stack(windows[i:j]).astype(np.int64)), ids[i:j]))
        i = j
    return out


def _clm(trained, batches) -> dict:
    model, device = trained.model, trained.model.device
    nats, tokens, units = 0.0, 0, np.zeros(2, dtype=np.int64)
    for w, _ in batches:
        x, y = w[:, :-1].to(device), w[:, 1:].to(device)
        logits = model.logits(model.hidden(x, None)).float()
        nats += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                reduction="sum").item()  # fmt: skip
        tokens += y.numel()
        units += _text_units(trained.tokenizer, w[:, 1:].numpy())
    loss = nats / tokens
    return {
        "objective": "clm", "windows": sum(len(w) for w, _ in batches), "tokens": tokens,
        "bytes": int(units[0]), "chars": int(units[1]), "loss": loss,
        "perplexity": math.exp(min(loss, 700.0)), "bits_per_token": loss / math.log(2),
        "bits_per_byte": nats / math.log(2) / int(units[0]) if units[0] else None,
        "bits_per_char": nats / math.log(2) / int(units[1]) if units[1] else None,
    }  # fmt: skip


def _text_units(tokenizer, targets: np.ndarray) -> np.ndarray:
    """(bytes, characters) of the text the ordinary tokens among `targets` spell."""
    ordinary = targets[targets < tokenizer.ordinary]
    if isinstance(tokenizer, ByteTokenizer):
        return np.array([len(ordinary), int(((ordinary & 0xC0) != 0x80).sum())])
    if isinstance(tokenizer, CharTokenizer):
        sizes = np.array([len(c.encode("utf-8")) for c in tokenizer.chars])
        return np.array([int(sizes[ordinary].sum()), len(ordinary)])
    out = np.zeros(2, dtype=np.int64)
    for row in targets:  # a subword tokenizer: decode each window's text
        text = tokenizer.decode(row[row < tokenizer.ordinary])
        out += [len(text.encode("utf-8")), len(text)]
    return out


def _masked(trained, batches, ratio: float, t: float | None, positions=None,
            objective: p.Objective | None = None) -> tuple[float, int]:  # fmt: skip
    """(summed loss, masked tokens) at `ratio`, with training's masks for each window."""
    model, device, plan = trained.model, trained.model.device, trained.plan
    vocab = Vocabulary(mask=trained.tokenizer.specials.mask, ordinary=trained.tokenizer.ordinary)
    nats, count = 0.0, 0
    for w, ids in batches:
        b = make_batch(w, ids, objective or trained.objective, ratio, t, seed=plan.run.seed,
                       vocab=vocab)  # fmt: skip
        times = b.t.to(device) if b.t is not None else None
        h = model.hidden(b.inputs.to(device), times, positions)
        chosen = b.targets.to(device) != IGNORE
        logits = model.logits(h[chosen]).float()
        nats += F.cross_entropy(logits, b.targets.to(device)[chosen], reduction="sum").item()
        count += int(chosen.sum())
    return nats, count


def _mlm(trained, batches) -> dict:
    ratio = trained.objective.ratio
    nats, count = _masked(trained, batches, ratio, None)
    return {
        "objective": "mlm", "windows": sum(len(w) for w, _ in batches), "ratio": ratio,
        "masked_tokens": count, "loss": nats / count,
        "perplexity": math.exp(min(nats / count, 700.0)),
    }  # fmt: skip


def _diffusion(trained, batches) -> dict:
    o = trained.objective
    by_input = isinstance(o.time, p.InputTime)
    levels = [] if by_input else sampling.depth_levels(trained.plan, trained.stage)
    rows = []
    for ratio in RATIOS:
        if by_input:
            t = sampling.time_for(o, ratio)
            nats, count = _masked(trained, batches, ratio, t)
            rows.append({"ratio": ratio, "t": t, "loss": nats / count, "masked_tokens": count})
        else:
            positions, level = min(levels, key=lambda x: (abs(x[1] - ratio), -x[1]))
            nats, count = _masked(trained, batches, ratio, None, positions)
            rows.append({"ratio": ratio, "stacks": list(positions), "trained_at": level,
                         "loss": nats / count, "masked_tokens": count})  # fmt: skip
    result = {
        "objective": "masked_diffusion", "time": "input" if by_input else "depth",
        "windows": sum(len(w) for w, _ in batches), "ratios": rows,
    }  # fmt: skip
    if by_input:
        result["nelbo"] = _nelbo(trained, batches)
    return result


def _nelbo(trained, batches) -> dict:
    """MDLM's bound in bits per token (see the module docstring)."""
    o, model, device = trained.objective, trained.model, trained.model.device
    m0, m1 = sampling.masked_at(o, 0.0), sampling.masked_at(o, 1.0)
    if not m1 > m0:
        return {"bits_per_token": None,
                "why": "the schedule does not mask more at t = 1 than at t = 0"}  # fmt: skip
    mask, seed = trained.tokenizer.specials.mask, trained.plan.run.seed
    choices = trained.plan.model.vocab - 1  # every id but <mask>
    grid = [m0 + (m1 - m0) * (j + 0.5) / NELBO_POINTS for j in range(NELBO_POINTS)]
    diffusion = reconstruction = 0.0
    positions = 0
    for w, ids in batches:
        x = w[:, :-1].to(device)
        positions += x.numel()
        u = torch.stack([_strata(x.shape[1], generator(seed, "nelbo", int(i))) for i in ids])
        u = u.to(device)

        for m in grid:
            diffusion += (
                (m1 - m0)
                / NELBO_POINTS
                * _nested(model, x, u, m, sampling.time_for(o, m), mask)
                / m
            )
        if m0 > 0:
            reconstruction += _nested(model, x, u, m0, sampling.model_time(o, 0.0), mask)
    prior = (1.0 - m1) * positions * math.log(choices)
    bits = 1 / (positions * math.log(2))
    return {
        "bits_per_token": (prior + diffusion + reconstruction) * bits,
        "diffusion": diffusion * bits, "reconstruction": reconstruction * bits,
        "prior": prior * bits, "points": NELBO_POINTS,
    }  # fmt: skip


def _strata(length: int, g: torch.Generator) -> torch.Tensor:
    """One uniform draw per position, one in each 1/length of [0, 1) in a random order: the
    masks at ratio m then hold m·length positions within one, which keeps the 1/m weighting
    of the bound from amplifying chance counts at small m."""
    return (torch.randperm(length, generator=g) + torch.rand(length, generator=g)) / length


def _nested(model, x: torch.Tensor, u: torch.Tensor, ratio: float, t: float, mask: int) -> float:
    """The summed loss on the positions with u < ratio masked (nested as the ratio grows),
    read at time t."""
    chosen = u < ratio
    if not chosen.any():
        return 0.0
    times = torch.full((x.shape[0],), t, device=x.device)
    h = model.hidden(torch.where(chosen, mask, x), times)
    logits = model.logits(h[chosen]).float()
    return F.cross_entropy(logits, x[chosen], reduction="sum").item()
