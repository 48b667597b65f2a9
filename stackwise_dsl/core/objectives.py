"""Objectives: a batch of token windows → inputs, targets, and the noise level.

- CLM: predict token i+1 from tokens 0..i; every position counts.
- MLM: replace a fraction of tokens (80% `<mask>`, 10% a random token, 10% unchanged with
  `bert_mix`; all `<mask>` without) and predict them.
- Masked diffusion: mask a fraction r of tokens with `<mask>` and predict them; r is the
  stage's depth ratio, a ratio drawn per batch from the rack's (fuse with time as depth), or
  r = schedule(t) with t ~ U(0, 1] per batch (time as input).

The loss counts corrupted positions only (every position for CLM). A sample's draws come
from a generator keyed by (seed, window id), so its mask depends on (sample, ratio, seed)
alone: a higher ratio masks a superset, and a cached trunk output stays valid.
"""

from __future__ import annotations

import attrs
import numpy as np
import torch
import torch.nn.functional as F

from stackwise_dsl.core.seeds import generator
from stackwise_dsl.lower import plan as p
from stackwise_dsl.lower.dispatch import noise_key, pick
from stackwise_dsl.lower.schedule import ratio_at

IGNORE = -100


@attrs.frozen
class Batch:
    inputs: torch.Tensor  # (B, T) token ids the model reads
    targets: torch.Tensor  # (B, T) ids to predict, IGNORE elsewhere
    t: torch.Tensor | None  # (B,) time as input, else None
    ids: np.ndarray  # (B,) window ids
    ratio: float | None  # the mask ratio used (masked objectives)

    def rows(self, s: slice) -> Batch:
        """The batch of windows `s` (one rank's share)."""
        t = self.t[s] if self.t is not None else None
        return Batch(inputs=self.inputs[s], targets=self.targets[s], t=t, ids=self.ids[s],
                     ratio=self.ratio)  # fmt: skip


@attrs.frozen
class Vocabulary:
    mask: int | None  # None for a tokenizer without `<mask>` (a CLM's)
    ordinary: int  # random replacements draw ids below this


def noise(stage: p.Stage, plan: p.Plan, step: int) -> tuple[float | None, float | None]:
    """(mask ratio, t) for one step of a stage; t only for time as input."""
    return pick(NOISES, noise_key(stage.objective), "objective")(stage, plan, step)


def _mlm_noise(stage: p.Stage, plan: p.Plan, step: int) -> tuple[float | None, float | None]:
    return stage.objective.ratio, None  # an Mlm


def _clm_noise(stage: p.Stage, plan: p.Plan, step: int) -> tuple[float | None, float | None]:
    return None, None


def _depth_noise(stage: p.Stage, plan: p.Plan, step: int) -> tuple[float | None, float | None]:
    """The stage's depth ratio; in a fuse stage, one of the rack's ratios per step."""
    if stage.mask_ratio is not None:
        return stage.mask_ratio, None
    ratios = [part.mask_ratio for part in stage.parts]
    chosen = torch.randint(
        len(ratios), (1,), generator=generator(plan.run.seed, "depth", stage.number, step)
    )
    return ratios[int(chosen)], None


def _input_noise(stage: p.Stage, plan: p.Plan, step: int) -> tuple[float | None, float | None]:
    """t ~ U(0, 1] (on the model's time steps when it has them), and r = schedule(t)."""
    u = torch.rand(1, generator=generator(plan.run.seed, "time", stage.number, step)).item()
    steps = stage.objective.time.num_time_steps
    t = (int(u * steps) + 1) / steps if steps else 1.0 - u  # in (0, 1]
    return ratio_at(stage.objective.mask, 1.0 - t), t


NOISES = {
    "mlm": _mlm_noise,
    "clm": _clm_noise,
    "masked_diffusion/depth": _depth_noise,
    "masked_diffusion/input": _input_noise,
}


def make_batch(windows: torch.Tensor, ids: np.ndarray, objective: p.Objective, ratio, t, *,
               seed: int, vocab: Vocabulary) -> Batch:  # fmt: skip
    """The model's inputs and targets for windows (B, seq_len + 1): the next token (clm),
    or the tokens under a mask drawn per window (mlm, masked diffusion)."""
    if isinstance(objective, p.Mlm | p.MaskedDiffusion):
        x = windows[:, :-1]
        draws = torch.stack(
            [torch.rand((3, x.shape[1]), generator=generator(seed, "mask", int(i))) for i in ids]
        )
        selected = draws[:, 0] < ratio
        selected[torch.arange(len(ids)), draws[:, 0].argmin(dim=1)] = True  # one per sample
        targets = torch.where(selected, x, IGNORE)
        inputs = torch.where(selected, vocab.mask, x)
        if isinstance(objective, p.Mlm) and objective.bert_mix:
            random_ids = (draws[:, 2] * vocab.ordinary).long()
            inputs = torch.where(
                selected & (draws[:, 1] >= 0.8) & (draws[:, 1] < 0.9), random_ids, inputs
            )
            inputs = torch.where(selected & (draws[:, 1] >= 0.9), x, inputs)
        times = None if t is None else torch.full((len(ids),), float(t))
        return Batch(inputs=inputs, targets=targets, t=times, ids=ids, ratio=ratio)
    return Batch(inputs=windows[:, :-1], targets=windows[:, 1:], t=None, ids=ids, ratio=None)


def loss_of(logits_fn, h: torch.Tensor, targets: torch.Tensor,
            reduction: str = "mean") -> torch.Tensor:  # fmt: skip
    """Cross-entropy over the predicted positions (their mean, or `sum`), computing logits
    only there."""
    chosen = targets != IGNORE
    if bool(chosen.all()):
        logits = logits_fn(h.reshape(-1, h.shape[-1]))
        return F.cross_entropy(logits.float(), targets.reshape(-1), reduction=reduction)
    logits = logits_fn(h[chosen])
    return F.cross_entropy(logits.float(), targets[chosen], reduction=reduction)
