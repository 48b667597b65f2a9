"""Training FLOPs from the plan alone (no torch): the matrix products one stage's step runs.

Counted as `torch.utils.flop_counter` counts them: 2 per multiply-add of every matrix product
(linear layers, LoRA's two factors, kernel attention's feature maps and averages, the head),
scaled_dot_product_attention as torch's formula for it (the scores and the weighted values
in full, T x T even when causal; its backward 2.5 times its forward, as flash attention
recomputes the scores), and nothing for element-wise work (norms, activations, softmax,
RoPE, the loss). A backward product is counted only where autograd runs it: through a layer
whose output depends on something that trains, the gradient of each input that does, and
of each weight that trains. So a frozen trunk below the new stack costs its forward alone,
a frozen suffix above a prepended stack costs its forward and its input gradients, and an
activation-cache hit saves the trunk's forward (`StageFlops.cached`).
"""

from __future__ import annotations

import attrs

from stackwise_dsl.ir.enums import Cache, Head, KernelKind, Mode, TimeEmbedding
from stackwise_dsl.lower import plan as p
from stackwise_dsl.lower.dispatch import noise_key, pick
from stackwise_dsl.lower.schedule import ratio_at

SDPA_BACKWARD = 2.5  # torch's count for scaled_dot_product_attention's backward / forward


@attrs.frozen
class Cost:
    """FLOPs of some products: forward and backward, and whether their output needs a
    gradient (depends on something that trains)."""

    forward: float = 0.0
    backward: float = 0.0
    grad: bool = False

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.forward + other.forward, self.backward + other.backward,
                    self.grad or other.grad)  # fmt: skip


@attrs.frozen
class StageFlops:
    """One stage's training FLOPs: per sequence (its `seq_len` tokens) through the stacks,
    per predicted position through the head."""

    sequence: float  # embeddings to the last stack, forward and backward
    cached: float  # of which the trunk's forward, saved on an activation-cache hit
    head: float  # the head, forward and backward, per predicted position
    predicted: float  # predicted positions per sequence (the expected count for masks)
    sequences: int  # sequences per step: batch x accumulate

    def batch(self, sequences: int, predicted: int, computed: int | None = None) -> float:
        """FLOPs of `sequences` sequences with `predicted` predicted positions among them,
        `computed` of them running the cached trunk (all without a cache)."""
        computed = sequences if computed is None else computed
        return (sequences * (self.sequence - self.cached) + computed * self.cached
                + predicted * self.head)  # fmt: skip

    def step(self) -> float:
        """A step's FLOPs with every trunk forward run (no cache hit)."""
        return self.sequences * (self.sequence + self.predicted * self.head)

    def total(self, steps: int) -> float:
        return steps * self.step()

    def all_hits(self, steps: int) -> float:
        """The stage's FLOPs if every trunk forward were a cache hit."""
        return steps * (self.step() - self.sequences * self.cached)


def linear(n: int, fan_in: int, fan_out: int, x_grad: bool, trains: bool,
           lora: tuple[int, bool] | None = None) -> Cost:  # fmt: skip
    """A linear layer over n rows; `lora`: (rank, trains) of an adapter over it."""
    product = 2.0 * n * fan_in * fan_out
    cost = Cost(product, product * (x_grad + trains), x_grad or trains)
    if lora is None:
        return cost
    rank, lora_trains = lora
    a = linear(n, fan_in, rank, x_grad, lora_trains)
    b = linear(n, rank, fan_out, a.grad, lora_trains)
    both = a + b
    if not both.grad:  # nothing flows back through the adapter
        both = Cost(both.forward, 0.0, False)
    return Cost(cost.forward + both.forward, cost.backward + both.backward, cost.grad or both.grad)


def matmul(product: float, *inputs_grad: bool) -> Cost:
    """A product of two inputs: each input that needs a gradient costs the forward again."""
    return Cost(product, product * sum(inputs_grad), any(inputs_grad))


def _no_backward(c: Cost) -> Cost:
    return c if c.grad else Cost(c.forward, 0.0, False)


@attrs.frozen
class _Layers:
    """Which layers of a stack train, and the adapters over them: (rank, trains) by name."""

    trains: bool
    lora: dict[str, tuple[int, bool]]


def block(b: p.Block, d: int, t: int, x_grad: bool, layers: _Layers) -> Cost:
    """One block over a sequence of t tokens whose input needs a gradient or not."""
    a = b.attention
    inner, kv = a.heads * a.head_dim, a.kv_heads * a.head_dim
    own = layers.trains

    def lin(name: str, fan_in: int, fan_out: int, grad: bool, trains: bool = own) -> Cost:
        return _no_backward(linear(t, fan_in, fan_out, grad, trains, layers.lora.get(name)))

    normed = x_grad or own  # a norm's weight trains with its stack
    if a.latent is not None:
        q_down = lin("q_down", d, a.latent.q_rank, normed)
        kv_down = lin("kv_down", d, a.latent.kv_rank, normed)
        q = lin("q", a.latent.q_rank, inner, q_down.grad)
        k = lin("k", a.latent.kv_rank, kv, kv_down.grad)
        v = lin("v", a.latent.kv_rank, kv, kv_down.grad)
        cost = q_down + kv_down + q + k + v
    else:
        q, k, v = lin("q", d, inner, normed), lin("k", d, kv, normed), lin("v", d, kv, normed)
        cost = q + k + v
    mix = _mix(a, t, q.grad, k.grad, v.grad)
    o = lin("o", inner, d, mix.grad)
    cost = cost + mix + o
    h_grad = x_grad or o.grad
    normed = h_grad or own
    hidden = b.ffn.hidden
    up = lin("up", d, hidden, normed, own and not b.freeze_up_proj)
    if isinstance(b.ffn, p.SwiGlu):
        gate = lin("gate", d, hidden, normed)
        up = up + gate
    down = lin("down", hidden, d, up.grad)
    cost = cost + up + down
    return Cost(cost.forward, cost.backward, h_grad or down.grad)


def _mix(a: p.Attention, t: int, q: bool, k: bool, v: bool) -> Cost:
    """Attention's products between the projections, over H query heads."""
    heads, hd = a.heads, a.head_dim
    if a.kernel is None:
        forward = 4.0 * heads * t * t * hd  # scores and weighted values, in full
        grad = q or k or v
        return Cost(forward, SDPA_BACKWARD * forward if grad else 0.0, grad)
    features = hd if a.kernel.kernel is KernelKind.LINEAR else a.kernel.kernel_dim
    cost = Cost()
    if a.kernel.kernel is not KernelKind.LINEAR:  # x W on q and k (W fixed: no weight gradient)
        cost = matmul(2.0 * heads * t * hd * features, q) + matmul(
            2.0 * heads * t * hd * features, k
        )
    average = 2.0 * heads * t * features * hd
    if a.mode is Mode.CAUSAL:  # φ(q_i) against the running sums of φ(k_j) v_jᵀ
        return cost + matmul(average, q, k or v)
    state = matmul(average, k, v)  # Σ φ(k_j) v_jᵀ
    return cost + state + matmul(average, q, state.grad)


def _time(m: p.Model, n: int, trains: bool) -> Cost:
    """The sinusoidal time embedding's MLP, once per sequence."""
    if m.time is None or m.time.embedding is not TimeEmbedding.SINUSOIDAL:
        return Cost()
    first = linear(n, m.d_model, m.d_model, False, trains)
    return first + linear(n, m.d_model, m.d_model, first.grad, trains)


def _loras(plan: p.Plan, stage: p.Stage, part: p.Part, trained: set) -> dict:
    """The adapters attached over a stack this stage (those that train now or trained
    before), by layer: (summed rank, trains)."""
    trains = part.role is p.Role.TRUNK and part.trains is not p.Trains.NOTHING
    out: dict[str, tuple[int, bool]] = {}
    for name, lora in (("stack", plan.stacks[part.position].stack_lora),
                       ("trunk", part.trunk_lora)):  # fmt: skip
        if lora is None or not (trains or (part.position, name) in trained):
            continue
        for target in lora.targets:
            rank, was = out.get(target.value, (0, False))
            out[target.value] = (rank + lora.rank, was or trains)
    return out


def _trained_adapters(plan: p.Plan, before: int) -> set:
    """(position, name) of the adapters that trained in a stage before `before` and were not
    merged into their stack since."""
    trained: set = set()
    for stage in plan.stages[: before - 1]:
        if stage.merge_adapters:
            trained.clear()
        for part in stage.parts:
            if part.role is p.Role.TRUNK and part.trains is not p.Trains.NOTHING:
                if plan.stacks[part.position].stack_lora is not None:
                    trained.add((part.position, "stack"))
                if part.trunk_lora is not None:
                    trained.add((part.position, "trunk"))
    if before <= len(plan.stages) and plan.stages[before - 1].merge_adapters:
        trained.clear()
    return trained


def stage_flops(plan: p.Plan, stage: p.Stage) -> StageFlops:
    """A stage's training FLOPs (see the module docstring)."""
    m, t = plan.model, plan.data.seq_len
    d = m.d_model
    trained = _trained_adapters(plan, stage.number)
    cost = Cost()
    grad = input_grad(m, stage)
    if m.embed_dim != d and m.embedding is None:
        # the projection reads the embedding, which needs a gradient when it trains
        cost = cost + linear(t, m.embed_dim, d, stage.train_input, stage.train_input)
    elif m.embed_dim != d:  # a frozen pretrained embedding's adapter: Linear, GELU, Linear
        first = linear(t, m.embed_dim, d, False, stage.train_input)
        cost = cost + first + linear(t, d, d, first.grad, stage.train_input)
    if _reads_time(stage):
        cost = cost + _time(m, 1, stage.train_input)
    cached = 0.0
    for i, part in enumerate(stage.parts):
        layers = _Layers(trains=part.trains is p.Trains.FULL,
                         lora=_loras(plan, stage, part, trained))  # fmt: skip
        for b in plan.stacks[part.position].blocks:
            one = block(b, d, t, grad, layers)
            cost, grad = cost + one, one.grad
            if stage.cache is not Cache.OFF and i < len(stage.parts) - 1:
                cached += one.forward
    head_trains = stage.train_head or (m.head is Head.TIED and stage.train_input)
    head_trains = head_trains and not (m.head is Head.TIED and m.embedding is not None)
    head = linear(1, d, m.vocab, grad, head_trains)
    return StageFlops(
        sequence=cost.forward + cost.backward,
        cached=cached,
        head=head.forward + head.backward,
        predicted=t * _predicted_share(stage),
        sequences=plan.data.batch * plan.optimizer.accumulate,
    )


def input_grad(m: p.Model, stage: p.Stage) -> bool:
    """Whether the hidden states entering the first stack need a gradient: something on the
    input side trains (not a frozen pretrained embedding alone)."""
    if not stage.train_input:
        return False
    learned = isinstance(m.position, p.LearnedPosition) or m.time is not None
    return m.embedding is None or m.embed_dim != m.d_model or learned


def _reads_time(stage: p.Stage) -> bool:
    if isinstance(stage.objective, p.MaskedDiffusion):
        return isinstance(stage.objective.time, p.InputTime)
    return False


def _predicted_share(stage: p.Stage) -> float:
    """The expected share of positions a step predicts (PREDICTED): all for CLM, the mask
    ratio for masked objectives (its mean over the parts' ratios in a fuse stage with time as
    depth, its mean over t for time as input)."""
    return pick(PREDICTED, noise_key(stage.objective), "objective")(stage)


def _every_position(stage: p.Stage) -> float:
    return 1.0


def _mlm_share(stage: p.Stage) -> float:
    return stage.objective.ratio  # an Mlm


def _depth_share(stage: p.Stage) -> float:
    if stage.mask_ratio is not None:
        return stage.mask_ratio
    ratios = [part.mask_ratio for part in stage.parts]
    return sum(ratios) / len(ratios)


def _input_share(stage: p.Stage) -> float:
    points = 1000
    mask = stage.objective.mask
    return sum(ratio_at(mask, 1.0 - (j + 0.5) / points) for j in range(points)) / points


PREDICTED = {
    "clm": _every_position,
    "mlm": _mlm_share,
    "masked_diffusion/depth": _depth_share,
    "masked_diffusion/input": _input_share,
}


__all__ = ["Cost", "StageFlops", "stage_flops"]
