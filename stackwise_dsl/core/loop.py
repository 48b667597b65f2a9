"""One stage's training loop: the core a researcher reads and edits.

`train_stage(plan, stage, model, data, state)` trains one stage's model from `state` (where
the run is: a frozen `RunState`) to the stage's last step and returns the state there. Every
step: set the learning rate; for each micro-batch take the next windows, corrupt them for the
objective, run the model (through the activation cache when the stage has one) and
backpropagate; stop on a non-finite loss; clip; step.

Everything around it is the harness's (runtime/train.py): building the stage's model from
the weight store, checkpoints and resume, metrics, evaluation cadence and progress. It hears
of every step through `on_step`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import attrs
import numpy as np
import torch

from stackwise_dsl.core import adapters, optim
from stackwise_dsl.core.batches import Stream, eval_ids
from stackwise_dsl.core.errors import Damaged, RunError
from stackwise_dsl.core.layers import share_dropout
from stackwise_dsl.core.objectives import (
    IGNORE,
    Batch,
    Vocabulary,
    loss_of,
    make_batch,
    noise,
)
from stackwise_dsl.core.precision import loss_scaler
from stackwise_dsl.core.stage_model import (
    StageModel,
    base_parameters,
    head_parameters,
    input_parameters,
)
from stackwise_dsl.core.world import World, accumulating, full, reshard_state
from stackwise_dsl.data import Prepared
from stackwise_dsl.estimate.flops import stage_flops
from stackwise_dsl.lower import plan as p
from stackwise_dsl.lower.dispatch import uses


@attrs.frozen(kw_only=True)
class RunState:
    """Where a run is, beyond its weights: what a checkpoint keeps and a resume starts from.
    Mid-stage (`step` > 0) it also holds what the stage's loop had: its optimizer and loss
    scale, and torch's RNG (restored once the stage's model is built, since building draws)."""

    stage: int = 1  # the stage in progress (1-based)
    step: int = 0  # the steps of it done
    global_step: int = 0  # the steps of the whole run done
    # the data position (batches.Stream)
    stream: dict = attrs.field(factory=lambda: {"epoch": 0, "offset": 0})
    flops: float = 0.0  # the run's training FLOPs so far (estimate/flops.py)
    rng: torch.Tensor | None = None
    optimizer: dict | None = None
    scaler: dict | None = None
    window: dict | None = None  # the harness's: losses since its last log line

    def starting(self, stage: int) -> RunState:
        """The state at the start of `stage`: the run's step count and data position go on."""
        return RunState(stage=stage, global_step=self.global_step, stream=self.stream,
                        flops=self.flops)  # fmt: skip


# on_step(state after the step, its loss, the learning rate, a full snapshot for a checkpoint)
OnStep = Callable[[RunState, float, float, Callable[[], RunState]], None]


def train_stage(plan: p.Plan, stage: p.Stage, model: StageModel, data: Prepared,
                state: RunState, *, cache=None, on_step: OnStep | None = None,
                world: World = World(), net=None) -> tuple[RunState, float]:  # fmt: skip
    """Train `stage` from `state` to its last step: (the state there, the last step's loss).
    `cache`: the stage's activation cache (runtime/cache.py), if it has one. `world`: the
    processes sharing each micro-batch (core/world.py; one by default), and `net` the model
    as they share it (`shared`, made here if not given)."""
    o = plan.optimizer
    if net is None:
        net = shared(plan, model, cache, world)
    opt = optim.build(o, param_groups(model, stage, o))  # after sharding: its weights
    scaler = loss_scaler(stage.parts, model.device)
    if state.optimizer is not None:  # resumed mid-stage
        try:
            opt.load_state_dict(state.optimizer)
            optim.check_state(opt)
            reshard_state(opt)
            if state.scaler:
                scaler.load_state_dict(state.scaler)
        except (ValueError, KeyError, RuntimeError) as e:
            raise Damaged(
                f"the checkpoint's optimizer state does not fit stage {stage.number}'s "
                f"optimizer ({e}); resume from a stage-end checkpoint or start again"
            ) from None
    if state.rng is not None:
        torch.set_rng_state(state.rng)
    stream = Stream.of(data, plan.run.seed)
    stream.restore(state.stream)
    trainable = [x for g in opt.param_groups for x in g["params"]]
    cost, flops = stage_flops(plan, stage), state.flops
    seen = _seen(plan, stage, data, state, world) if cache is not None else None

    def snapshot() -> RunState:  # a copy: the optimizer's tensors go on changing in place
        return attrs.evolve(state, optimizer=copy.deepcopy(full(opt.state_dict())),
                            scaler=scaler.state_dict() or None,  # {} when disabled
                            rng=torch.get_rng_state())  # fmt: skip

    loss = math.nan
    for step in range(state.step + 1, stage.steps + 1):
        optim.set_lr(opt, o, step, stage.schedule_steps or stage.steps)
        loss = 0.0
        for micro in range(o.accumulate):
            ids = stream.take(plan.data.batch)
            batch = batch_for(plan, stage, data, ids, draw=(step - 1) * o.accumulate + micro)
            predicted = int((batch.targets != IGNORE).sum())
            if net is None:
                part = stage_loss(model, batch, cache) / o.accumulate
                scaler.scale(part).backward()
            else:  # this rank's slice; DDP averages over the ranks, hence x size
                with accumulating(net, last=micro == o.accumulate - 1):
                    part = net(batch.rows(world.share(len(ids))), predicted) / o.accumulate
                    scaler.scale(part * world.size).backward()
            loss += part.item()
            flops += cost.batch(len(ids), predicted, _computed(seen, ids, world))
        loss = world.total(loss)  # every rank stops on a non-finite loss, or none does
        if not math.isfinite(loss):
            raise Diverged(stage.number, step, f"the loss became {loss}")
        if o.clip is not None:
            scaler.unscale_(opt)  # so the norm is of the true gradients
            torch.nn.utils.clip_grad_norm_(trainable, o.clip)
        scaler.step(opt)  # skipped when a scaled gradient overflowed
        scaler.update()
        opt.zero_grad(set_to_none=True)
        state = RunState(stage=stage.number, step=step, global_step=state.global_step + 1,
                         stream=stream.state(), flops=flops)  # fmt: skip
        if on_step is not None:
            on_step(state, loss, opt.param_groups[0]["lr"], snapshot)
    return state, loss


def _seen(plan: p.Plan, stage: p.Stage, data: Prepared, state: RunState,
          world: World) -> list[set[int]]:  # fmt: skip
    """The windows a stage with an activation cache has read before `state`, per rank (each
    rank caches its own; their trunk output is cached: in a resumed run too, its FLOPs count
    as in the uninterrupted one)."""
    seen: list[set[int]] = [set() for _ in range(world.size)]
    stream = Stream.of(data, plan.run.seed)
    stream.seek((state.global_step - state.step) * plan.data.batch * plan.optimizer.accumulate)
    for _ in range(state.step * plan.optimizer.accumulate):  # to the stage's first step
        _computed(seen, stream.take(plan.data.batch), world)
    return seen


def _computed(seen: list[set[int]] | None, ids: np.ndarray, world: World) -> int | None:
    """How many windows of a micro-batch run the cached trunk, over the ranks (None without
    a cache: all)."""
    if seen is None:
        return None
    computed = 0
    for rank, cached in enumerate(seen):
        fresh = set(ids[attrs.evolve(world, rank=rank).share(len(ids))].tolist()) - cached
        cached |= fresh
        computed += len(fresh)
    return computed


def batch_for(plan: p.Plan, stage: p.Stage, data: Prepared, ids: np.ndarray, draw: int) -> Batch:
    """The batch of windows `ids` for the `draw`-th micro-batch of a stage, corrupted for its
    objective (the noise level depends on the draw, the masks on the windows)."""
    ratio, t = noise(stage, plan, draw)
    return _batch(plan, stage, data, data.train_rows(ids), ids, ratio, t)


def stage_loss(model: StageModel, b: Batch, cache=None) -> torch.Tensor:
    """The model's loss on a batch; with an activation cache, the hidden states come through
    it (runtime/cache.py: the frozen trunk runs once per window)."""
    device = model.device
    inputs, targets = b.inputs.to(device), b.targets.to(device)
    t = b.t.to(device) if b.t is not None else None
    h = model.hidden(inputs, t) if cache is None else cache.hidden(model, inputs, b.ids)
    return loss_of(model.logits, h, targets)


def shared(plan: p.Plan, model: StageModel, cache, world: World):
    """The stage's model as the ranks share it (`run.distributed`: core/world.py), as a
    `LossOf`; None in a world of one. With an activation cache, the frozen stacks stay
    whole on every rank (each rank runs them for its own cache misses). Dropout draws each
    micro-batch's whole mask on every rank and keeps the rank's rows (core/layers.py)."""
    if world.size == 1:
        return None
    share_dropout(model, plan.data.batch, world.share(plan.data.batch))  # one process's masks
    whole = tuple(model.stack(x.position) for x in model.stage.parts
                  if cache is not None and x.trains is p.Trains.NOTHING)  # fmt: skip
    return world.wrap(LossOf(model, cache), plan.run.distributed, whole)


class LossOf(torch.nn.Module):
    """A stage model's loss on one rank's slice of a micro-batch, as a module DDP wraps: the
    sum over the slice's predicted positions divided by the whole micro-batch's count
    (`predicted`), so the ranks' losses add up to the micro-batch's mean."""

    def __init__(self, model: StageModel, cache=None) -> None:
        super().__init__()
        self.model, self.cache = model, cache

    def forward(self, b: Batch, predicted: int) -> torch.Tensor:
        model = self.model
        inputs, targets = b.inputs.to(model.device), b.targets.to(model.device)
        t = b.t.to(model.device) if b.t is not None else None
        cached = self.cache is not None
        h = self.cache.hidden(model, inputs, b.ids) if cached else model.hidden(inputs, t)
        return loss_of(model.logits, h, targets, reduction="sum") / predicted

    def stacks(self) -> tuple[torch.nn.Module, ...]:
        """The model's stacks, input side first."""
        positions = sorted(x.position for x in self.model.stage.parts)
        return tuple(self.model.stack(x) for x in positions)


def evaluate(model: StageModel, plan: p.Plan, stage: p.Stage, data: Prepared,
             net=None) -> float | None:  # fmt: skip
    """Mean loss over the validation batches (None without validation data). They see the
    same noise at every evaluation, and cycle through the rack's ratios in a fuse stage with
    time as depth. With `net` (the model the ranks share), every rank scores every batch."""
    batches = eval_ids(data.val, plan.data.batch, plan.run.eval_batches)
    if not batches:
        return None
    model.eval()
    losses = []
    with torch.no_grad():
        for i, ids in enumerate(batches):
            ratio, t = noise(stage, plan, -1 - i)
            if stage.mask_ratio is None and stage.parts[0].mask_ratio is not None:
                ratio = stage.parts[i % len(stage.parts)].mask_ratio  # time as depth, fuse
            batch = _batch(plan, stage, data, data.windows[ids], ids, ratio, t)
            if net is None:
                losses.append(stage_loss(model, batch).item())
            else:
                losses.append(net(batch, int((batch.targets != IGNORE).sum())).item())
    model.train()
    return float(np.mean(losses))


def _batch(plan: p.Plan, stage: p.Stage, data: Prepared, rows: np.ndarray, ids: np.ndarray,
           ratio, t) -> Batch:  # fmt: skip
    windows = torch.from_numpy(rows)
    vocab = Vocabulary(mask=data.tokenizer.specials.mask, ordinary=data.tokenizer.ordinary)
    return make_batch(windows, ids, stage.objective, ratio, t, seed=plan.run.seed, vocab=vocab)


def param_groups(model: StageModel, stage: p.Stage, o: p.Optimizer) -> list[dict]:
    """Stack weights at the stage's lr, adapters at adapter_lr, embeddings and head at
    embedding_lr; weight decay on matrices only."""
    stacks, lora = [], []
    for part in stage.parts:
        stack = model.stack(part.position)
        stacks += [x for x in base_parameters(stack) if x.requires_grad]
        if uses("adapters"):
            lora += [x for x in adapters.adapter_parameters(stack) if x.requires_grad]
    rack = model.rack
    shared = [x for x in [*input_parameters(rack), *head_parameters(rack)] if x.requires_grad]
    shared = list({id(x): x for x in shared}.values())
    groups = []
    for name, params, lr in (("stacks", stacks, stage.lr), ("adapters", lora, stage.adapter_lr),
                             ("embeddings", shared, stage.embedding_lr)):  # fmt: skip
        matrices = [x for x in params if x.dim() >= 2]
        others = [x for x in params if x.dim() < 2]
        groups.append({"name": name, "params": matrices, "lr": lr, "weight_decay": o.weight_decay})
        groups.append({"name": name + "/no_decay", "params": others, "lr": lr, "weight_decay": 0.0})
    if not any(g["params"] for g in groups):
        raise RunError(f"stage {stage.number} trains nothing")
    return groups


class Diverged(RunError):
    """Training produced a non-finite loss or non-finite weights."""

    def __init__(self, stage: int, step: int, what: str) -> None:
        super().__init__(f"{what} in stage {stage} at step {step}")
        self.stage, self.step = stage, step
