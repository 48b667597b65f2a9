"""A stage's peak training memory per process, from the plan alone (no torch).

What one process holds while a stage trains, in bytes:

- `weights`: the stage's model, every weight in its precision (`Precision.bits`, block scales
  included); adapters and the shared parts (embedding, positions, final norm, head) in fp32.
- `masters`: the weight store's fp32 masters beside the model (runtime/weights.py), in host
  memory: the shared parts, the adapters, and every stack whose master is not left on disk,
  which after the first stage-end checkpoint means the stacks that train in full this stage
  (and the new ones). On CUDA they are not part of the device's peak.
- `gradients`: one fp32 gradient per weight that trains.
- `optimizer`: AdamW's two fp32 moments per weight that trains; adamw8bit's two 8-bit
  moments (a 256-value block per fp32 scale, bitsandbytes' layout, for tensors of 4,096
  values or more; fp32 below that); SGD's momentum buffer where momentum is set.
- `activations`: what autograd keeps for the backward pass of one micro-batch, counted
  tensor by tensor as the runtime's modules save them (see `_Block`): a layer whose output
  needs no gradient keeps nothing, a linear layer keeps its input only when its weight (or
  an adapter over it) trains, a norm keeps its input, attention keeps its query, key, value
  and output (torch's flash kernel: no T x T scores), an activation function its input,
  dropout a one-byte mask. With `recompute`, each block keeps only its input and the
  backward pass holds one block's activations at a time.
- `cache`: the activation cache's trunk outputs (`cache = memory`: one per window the stage
  sees, fp32, on the device; `cache = disk`: the shard not yet written, at most 512 windows
  or 256 MiB, in host memory).
- `backward`: the gradients the backward pass holds at once beyond the activations: at its
  start the logits' (log-softmax's output's and the logits', two fp32 values per predicted
  position and vocabulary entry; log-softmax's output itself is an activation), or, when
  larger, the top block's feed-forward gradients once the head's are gone.

`peak` is when they are largest together: weights, masters, optimizer state and cache live
throughout; the activations and the backward pass's gradients are alive together,
with the gradients of earlier micro-batches when gradients accumulate; at the optimizer step
every gradient is alive and the activations are gone. The tokens of the data set are not
counted (they stay in host memory; batches move to the device one at a time).

On several processes (`nproc`): each holds its share of the micro-batch, so activations,
logits and the cache divide by the process count. Under DDP every process holds the whole
model, its gradients, optimizer state, and DDP's gradient `buckets` (a second copy of the
gradients it exchanges, made when DDP wraps the model). Under FSDP every stack is sharded
with its gradients and optimizer state (1/N each) but what FSDP keeps whole (`sharding` in
`sw plan`: quantized weights, a cached frozen trunk); a process holds the root's weights
(embeddings, head, norms) gathered from forward to backward, and one stack's at a time (two,
with the next one prefetched), and in the backward pass a stack's whole gradients until they
are reduce-scattered (two at a time).
"""

from __future__ import annotations

import math

import attrs

from stackwise_dsl.estimate import (
    _adapters,
    shapes,
    shared_params,
    stack_params,
    trainable_shared,
)
from stackwise_dsl.estimate.flops import (
    _Layers,
    _loras,
    _predicted_share,
    _trained_adapters,
    input_grad,
)
from stackwise_dsl.ir.enums import Cache, Distributed, Head, KernelKind, Mode, Norm, Precision
from stackwise_dsl.lower import plan as p

FP32 = 4
# a disk cache writes its trunk outputs after this many windows or bytes (runtime/cache.py)
CACHE_SHARD, CACHE_SHARD_BYTES = 512, 256 * 2**20
ADAM8_BLOCK = 256  # values per fp32 scale in bitsandbytes' blockwise 8-bit state
ADAM8_MIN = 4096  # bitsandbytes keeps 32-bit state for tensors smaller than this


@attrs.frozen(kw_only=True)
class StageMemory:
    """One stage's memory on one process, in bytes (see the module docstring)."""

    weights: int
    masters: int
    gradients: int
    optimizer: int
    buckets: int
    activations: int
    cache: int
    backward: int
    peak: int
    at_peak: tuple[str, ...]  # the parts the peak is the sum of

    def parts(self) -> dict[str, int]:
        return {k: v for k, v in attrs.asdict(self).items() if k not in ("peak", "at_peak")}


@attrs.define
class _Saved:
    """What autograd keeps, per token of a sequence: fp32 values, 16-bit values (autocast's)
    and one-byte values (CUDA's dropout masks)."""

    values: float = 0.0
    half: float = 0.0
    byte: float = 0.0

    def add(self, other: _Saved) -> None:
        self.values += other.values
        self.half += other.half
        self.byte += other.byte

    def size(self) -> float:
        return FP32 * self.values + 2 * self.half + self.byte

    def bytes(self, tokens: float) -> int:
        return int(tokens * self.size())


def _block(b: p.Block, m: p.Model, t: int, x_grad: bool, layers: _Layers, dropout: bool,
           low: bool, cuda: bool) -> tuple[_Saved, bool]:  # fmt: skip
    """What one block keeps per token, and whether its output needs a gradient. `low`: the
    block runs under 16-bit autocast (its matmuls and what follows them in 16 bits, its norms
    and the residual stream in fp32, each linear layer keeping its own 16-bit copy of an fp32
    input)."""
    a = b.attention
    d = m.d_model
    inner = a.heads * a.head_dim
    own = layers.trains
    saved = _Saved()

    def act(n: float) -> None:  # a value computed by or after a matmul
        if low:
            saved.half += n
        else:
            saved.values += n

    def mask(n: float) -> None:  # dropout's: a bool mask on CUDA, a noise tensor on the CPU
        if cuda:
            saved.byte += n
        else:
            act(n)

    def lin(name: str, x_saved: bool, trains: bool = own) -> tuple[bool, bool]:
        """(keeps its input, output needs a gradient): a linear layer whose input needs a
        gradient or not, with its adapter."""
        lora = layers.lora.get(name)
        keeps = trains or (lora is not None and lora[1])
        if lora is not None and lora[1]:
            act(lora[0])  # A's output, kept by B
        return keeps, x_saved or keeps

    def reads_norm(keeps: list[bool]) -> None:  # linear layers reading a norm's fp32 output
        if low:
            saved.half += d * sum(keeps)
        elif any(keeps):
            saved.values += d

    def norm(x_grad: bool) -> bool:
        grad = x_grad or own
        if grad:
            saved.values += _norm(m, own)
        return grad

    normed = norm(x_grad)
    if a.latent is not None:
        keep_qd, q_grad = lin("q_down", normed)
        keep_kvd, kv_grad = lin("kv_down", normed)
        reads_norm([keep_qd, keep_kvd])
        keep_q, q_grad = lin("q", q_grad)
        keep_k, k_grad = lin("k", kv_grad)
        keep_v, v_grad = lin("v", kv_grad)
        act(a.latent.q_rank * keep_q + a.latent.kv_rank * (keep_k or keep_v))
    else:
        keeps = [lin(name, normed) for name in ("q", "k", "v")]
        (keep_q, q_grad), (keep_k, k_grad), (keep_v, v_grad) = keeps
        reads_norm([keep_q, keep_k, keep_v])
    mix = q_grad or k_grad or v_grad
    if mix:
        act(_mix(a, t))
        if a.kernel is None:
            saved.values += a.heads  # flash attention's logsumexp, in fp32
    keep_o, o_grad = lin("o", mix)
    if keep_o and a.kernel is not None:  # flash attention's output is already laid out
        act(inner)  # as `o` reads it; the kernel average's is copied
    h_grad = x_grad or o_grad
    if dropout and o_grad:
        mask(d)
    normed = norm(h_grad)
    hidden = b.ffn.hidden
    keep_up, up_grad = lin("up", normed, own and not b.freeze_up_proj)
    if isinstance(b.ffn, p.SwiGlu):
        keep_gate, gate_grad = lin("gate", normed)
        reads_norm([keep_up, keep_gate])
        # silu keeps the gate's output; the product keeps silu's output and up's output
        if gate_grad:
            act(hidden)
        if gate_grad or up_grad:
            act(2 * hidden)
        inner_grad = gate_grad or up_grad
    else:
        reads_norm([keep_up])
        if up_grad:
            act(hidden)  # gelu keeps its input
        inner_grad = up_grad
    keep_down, down_grad = lin("down", inner_grad)
    if keep_down:
        act(hidden)
    if dropout and down_grad:
        mask(d)
    return saved, h_grad or down_grad


def _norm(m: p.Model, trains: bool) -> float:
    """A norm keeps its input and statistics (rstd, and the mean for LayerNorm); RMSNorm,
    which torch composes of element-wise steps, also its normalized input when its weight
    trains."""
    if m.norm is Norm.RMSNORM:
        return m.d_model + 1 + (m.d_model if trains else 0)
    return m.d_model + 2


def _mix(a: p.Attention, t: int) -> float:
    """The values attention keeps between the projections, per token of a sequence of t
    (beside flash attention's logsumexp)."""
    heads, kv, hd = a.heads, a.kv_heads, a.head_dim
    if a.kernel is None:  # flash attention: q, k, v (GQA's unexpanded), output
        return (2 * heads + 2 * kv) * hd
    linear = a.kernel.kernel is KernelKind.LINEAR
    features = hd if linear else a.kernel.kernel_dim
    saved = 2 * heads * features + heads * hd  # φ(q), φ(k), v (repeated to every head)
    if not linear:
        saved += 2 * heads * features  # the inputs of the cosines
    if a.mode is Mode.CAUSAL:
        saved += heads * features * hd  # the running sums of φ(k_j) v_jᵀ
    else:
        saved += heads * features * hd / t  # their one sum per sequence
    return saved


def _head_grad(stage: p.Stage, m: p.Model) -> bool:
    """Whether the head's weight trains (a tied head is the embedding, frozen when it is a
    pretrained one)."""
    if m.head is Head.TIED:
        return (stage.train_head or stage.train_input) and m.embedding is None
    return stage.train_head


@attrs.frozen
class _Micro:
    """A micro-batch's activations, per sequence position: kept through the stacks
    (`saved`), kept per predicted position by the final norm and head (`head`), and what the
    backward pass holds at once while it differentiates each block (`blocks`): what the
    blocks below keep, its own activations (run again under recompute) and its gradients,
    once the head's are gone, beside the weight gradients of the blocks above it."""

    saved: _Saved
    head: float
    blocks: list[tuple[float, int]]  # per block: (bytes per token, weights trained above it)
    casts: float  # bytes of autocast's 16-bit weight copies, kept for the backward pass


def _activations(plan: p.Plan, stage: p.Stage, cuda: bool) -> _Micro:
    m = plan.model
    trained = _trained_adapters(plan, stage.number)
    total = _Saved()
    grad = input_grad(m, stage)
    if stage.train_input and m.embedding is not None and m.embed_dim != m.d_model:
        total.add(_Saved(values=m.embed_dim + 2 * m.d_model))  # the adapter's three inputs
    if grad and m.dropout > 0:
        total.add(_Saved(byte=m.d_model) if cuda else _Saved(values=m.d_model))  # embeddings'
    cut = len(stage.parts) - 1 if stage.cache is not Cache.OFF else 0
    casts = 0.0
    moments: list[tuple[float, int]] = []  # (bytes per token, weights trained below)
    below = 0  # weights that train in the blocks so far
    for i, part in enumerate(stage.parts):
        layers = _Layers(trains=part.trains is p.Trains.FULL,
                         lora=_loras(plan, stage, part, trained))  # fmt: skip
        dropout = m.dropout > 0 and part.trains is not p.Trains.NOTHING
        low = _low(part, cuda)
        stack = plan.stacks[part.position]
        if low and part.trains is p.Trains.FULL:  # autocast's 16-bit copies of the weights
            casts += 2 * (stack_params(stack, m.d_model) - 2 * m.d_model * len(stack.blocks))
        for b in stack.blocks:
            grad_in = grad if i >= cut else False
            one, grad = _block(b, m, plan.data.seq_len, grad_in, layers, dropout, low, cuda)
            if not one.size():
                continue
            below += _trained(b, m.d_model, layers)
            if grad:  # its backward pass: what the blocks below keep, its own, its gradients
                top = FP32 * _top(b, m, layers.trains, low)
                moments.append((total.size() + one.size() + top, below))
            if stage.recompute:
                total.values += m.d_model  # the block's input, to run it again
            else:
                total.add(one)
    head = 0.0
    trains = _head_grad(stage, m)
    if grad or trains:
        head += _norm(m, stage.train_head)  # the final norm
        head += m.vocab  # log-softmax's output
    if trains:
        head += m.d_model  # the head's input
    return _Micro(saved=total, head=head, casts=casts,
                  blocks=[(n, below - under) for n, under in moments])  # fmt: skip


def _low(part: p.Part, cuda: bool) -> bool:
    """Whether a stack computes in 16 bits: one that trains in bf16 (or fp16 on CUDA) runs
    under autocast; a frozen bf16 or fp16 stack computes in its storage dtype on CUDA (in
    fp32 on the CPU: core/precision.py)."""
    if part.precision is Precision.BF16 or (part.precision is Precision.FP16 and cuda):
        return part.trains is p.Trains.FULL or cuda
    return False


def _top(b: p.Block, m: p.Model, trains: bool, low: bool) -> float:
    """The gradients a block's backward pass holds at once, per token, beyond what it keeps:
    the residual stream's and its input's, and the larger of its feed-forward layer's (one
    hidden-wide gradient where GELU's output is kept, two otherwise) and its attention's
    (the running sums' gradients, three, for causal kernel attention; q, k, v and the
    output's otherwise)."""
    a = b.attention
    half = 0.5 if low else 1.0
    wide = 2 if isinstance(b.ffn, p.SwiGlu) or not trains else 1
    ffn = wide * b.ffn.hidden
    if a.kernel is not None and a.mode is Mode.CAUSAL:
        features = a.head_dim if a.kernel.kernel is KernelKind.LINEAR else a.kernel.kernel_dim
        attention = 3 * a.heads * features * a.head_dim
    else:
        attention = (2 * a.heads + 2 * a.kv_heads) * a.head_dim
    return 2 * m.d_model + half * max(ffn, attention)


def _trained(b: p.Block, d: int, layers: _Layers) -> int:
    """The weights of a block that train: all of it, or the adapters over it that train."""
    total = 0
    for name, (i, o) in shapes(b, d).items():
        if layers.trains and not (name == "up" and b.freeze_up_proj):
            total += i * o
        rank, trains = layers.lora.get(name, (0, False))
        total += rank * (i + o) if trains else 0
    return total + (2 * d if layers.trains else 0)


def stage_memory(plan: p.Plan, stage: p.Stage, nproc: int = 1, *, cuda: bool = False,
                 windows: int | None = None) -> StageMemory:  # fmt: skip
    """The stage's memory on each of `nproc` processes (see the module docstring), on CUDA
    devices or on the CPU; `windows`: the training windows of the data set, when known
    (they bound the activation cache)."""
    m, d = plan.model, plan.model.d_model
    fsdp = nproc > 1 and plan.run.distributed is Distributed.FSDP
    sequences = plan.data.batch // nproc  # one micro-batch's share
    t = plan.data.seq_len
    shared = sum(shared_params(m).values())

    shards = nproc if fsdp else 1
    weights = masters = gathered = 0.0
    units = 0  # stacks FSDP shards
    gathered_grads = 0.0
    trains: list[int] = []  # sizes of what trains, stack by stack (then the shared parts)
    offloaded = stage.number > 1  # a stage-end checkpoint exists to leave masters in
    for part in stage.parts:
        stack = plan.stacks[part.position]
        base = stack_params(stack, d)
        own = _adapters(stack, part, d)
        # a stack that trains in bf16 or fp16 keeps fp32 weights (autocast computes in 16 bits)
        held = base * (32 if part.trains is p.Trains.FULL else part.precision.bits) / 8
        if fsdp and not _whole(stage, part):  # sharded, gathered whole one stack at a time
            weights += (held + FP32 * own) / nproc
            gathered = max(gathered, held + FP32 * own)
            units += 1
            gathered_grads = max(gathered_grads, FP32 * _trains(part, base, own))
        else:  # FSDP keeps a quantized stack's weights and a cached frozen stack whole
            weights += held + FP32 * own / shards
            if fsdp and own:  # the adapters over quantized weights are sharded and gathered
                gathered = max(gathered, FP32 * own)
                units += 1
                gathered_grads = max(gathered_grads, FP32 * _trains(part, 0, own))
        masters += FP32 * own
        if not offloaded or part.trains is p.Trains.FULL or part.role is p.Role.NEW:
            masters += FP32 * base
        if part.trains is p.Trains.FULL:
            trains.append(base)
        if part.role is p.Role.TRUNK and part.trains is not p.Trains.NOTHING and own:
            trains.append(own)
    trains.append(trainable_shared(m, stage))
    weights += FP32 * shared / shards
    if fsdp:  # the root's weights stay gathered from forward to backward; a stack's while it
        # computes, with the next one's prefetched
        weights += FP32 * shared + min(units, 2) * gathered
    masters += FP32 * shared
    gradients = FP32 * sum(trains) / shards
    optimizer = _optimizer(plan.optimizer.method, trains, shards)
    # DDP's buckets: a second copy of the gradients it exchanges, made when it wraps the model
    buckets = gradients if nproc > 1 and not fsdp else 0.0

    accumulate = plan.optimizer.accumulate
    micro = _activations(plan, stage, cuda)
    predicted = sequences * t * _predicted_share(stage)
    activations = micro.saved.bytes(sequences * t) + int(FP32 * micro.head * predicted)
    activations += int(micro.casts)
    activations += 8 * int(predicted)  # the targets (int64)
    if stage.train_input and m.embedding is None:
        activations += 8 * sequences * t  # the token ids the embedding's gradient reads
    # the head's gradients at the start of the backward pass, or a block's later on, with
    # the weight gradients made by then (all of them already, when gradients accumulate)
    kept = micro.saved.bytes(sequences * t) + FP32 * micro.head * predicted
    per_weight = 0 if accumulate > 1 or not sum(trains) else gradients / sum(trains)
    # FSDP: a stack's whole gradients before they are reduce-scattered, two at a time
    unsharded = min(units, 2) * gathered_grads if fsdp else 0.0
    backward = int(max([FP32 * 2 * m.vocab * predicted]
                       + [n * sequences * t - kept + unsharded + per_weight * (above + trains[-1])
                          for n, above in micro.blocks]))  # fmt: skip
    cache = _cache(plan, stage, nproc, windows)

    parts = {"weights": int(weights), "masters": int(masters), "gradients": int(gradients),
             "optimizer": int(optimizer), "buckets": int(buckets), "activations": activations,
             "cache": int(cache), "backward": backward}  # fmt: skip
    held = ["weights", "optimizer", "buckets"]
    if not cuda:  # on CUDA the masters and a disk cache's pending shard are in host memory
        held += ["masters", "cache"]
    elif stage.cache is Cache.MEMORY:
        held += ["cache"]
    during = ["activations", "backward"] + (["gradients"] if accumulate > 1 else [])
    if sum(parts[k] for k in during) < gradients:  # the optimizer step's
        during = ["gradients"]
    at_peak = tuple(k for k in parts if k in held + during)
    return StageMemory(**parts, peak=sum(parts[k] for k in at_peak), at_peak=at_peak)


def step_traffic(plan: p.Plan, stage: p.Stage, nproc: int) -> int:
    """Bytes each of `nproc` processes sends in one training step, by the ring algorithms'
    count: DDP all-reduces the gradients of what trains once a step (2 (N-1)/N of their
    bytes); FSDP all-gathers each sharded stack's weights for the forward pass and again for
    the backward pass of every micro-batch, and reduce-scatters the gradients ((N-1)/N of the
    bytes each time). What FSDP keeps whole is never sent."""
    if nproc < 2:
        return 0
    d = plan.model.d_model
    share = (nproc - 1) / nproc
    trains = sharded = 0.0
    for part in stage.parts:
        stack = plan.stacks[part.position]
        base, own = stack_params(stack, d), _adapters(stack, part, d)
        trains += _trains(part, base, own)
        held = base * (32 if part.trains is p.Trains.FULL else part.precision.bits) / 8
        sharded += FP32 * own + (0 if _whole(stage, part) else held)
    trains += trainable_shared(plan.model, stage)
    sharded += FP32 * sum(shared_params(plan.model).values())
    if plan.run.distributed is Distributed.FSDP:
        micro = plan.optimizer.accumulate
        return int(share * (2 * micro * sharded + FP32 * trains))
    return int(2 * share * FP32 * trains)


def _trains(part: p.Part, base: int, own: int) -> int:
    """The weights of a stack that train: all of them, or its adapters."""
    full = base if part.trains is p.Trains.FULL else 0
    return full + (own if part.role is p.Role.TRUNK and part.trains is not p.Trains.NOTHING else 0)


def _whole(stage: p.Stage, part: p.Part) -> bool:
    """What FSDP keeps whole on every process (core/world.py, `sharding` in `sw plan`): a
    quantized stack's weights (buffers; its adapters are sharded) and a frozen stack under an
    activation cache."""
    cached = stage.cache is not Cache.OFF and part.trains is p.Trains.NOTHING
    return part.precision.quantized or cached


def _optimizer(method, sizes: list[int], shards: int) -> float:
    if isinstance(method, p.AdamW8bit):
        total = 0.0
        for n in sizes:
            if n >= ADAM8_MIN:
                total += 2 * (n + FP32 * math.ceil(n / ADAM8_BLOCK))
            else:
                total += 2 * FP32 * n
        return total / shards
    if isinstance(method, p.Sgd):
        return FP32 * sum(sizes) / shards if method.momentum else 0.0
    return 2 * FP32 * sum(sizes) / shards


def _cache(plan: p.Plan, stage: p.Stage, nproc: int, known: int | None) -> float:
    """The trunk outputs cached at the stage's end: one per window it draws (`known`: the
    training windows the data set holds, when the caller knows; every window drawn is
    distinct otherwise, an upper bound)."""
    if stage.cache is Cache.OFF:
        return 0.0
    windows = stage.steps * plan.data.batch * plan.optimizer.accumulate // nproc
    if known is not None:
        windows = min(windows, math.ceil(known / nproc))
    one = FP32 * plan.data.seq_len * plan.model.d_model
    if stage.cache is Cache.DISK:
        windows = min(windows, CACHE_SHARD, math.ceil(CACHE_SHARD_BYTES / one))
    return one * windows


__all__ = ["StageMemory", "stage_memory", "step_traffic"]
