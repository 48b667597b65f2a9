"""Hypothesis strategies for specs: valid by construction, or deliberately wild.

`specs()` draws IR specs that pass every check with no diagnostics at all; `spec_texts()`
prints them. The pieces (`attentions`, `blocks`, `loras`, `objectives`, precisions) are public
so users can vary their own specs (see `variants` in stackwise_dsl.testing). `raw_specs()`
draws arbitrary, mostly invalid IR, for properties such as "checks never raise".
"""

from __future__ import annotations

import enum
import types
import typing

import attrs
from hypothesis import strategies as st

from stackwise_dsl.ir import nodes as n
from stackwise_dsl.ir.enums import (
    Cache,
    Device,
    Direction,
    Distributed,
    Embeddings,
    Head,
    Init,
    KernelKind,
    LrSchedule,
    Mode,
    Norm,
    Pattern,
    Precision,
    Split,
    Strategy,
    Target,
    Task,
    TimeEmbedding,
    Windows,
)
from stackwise_dsl.ir.walk import layer_shapes

RESERVED = frozenset({"let", "include", "extends", "block", "stack", "grow", "stage", "x", "every"})
names = st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True).filter(lambda s: s not in RESERVED)
ratios = st.floats(0.01, 1.0)
paths = st.text(alphabet=st.characters(exclude_characters="\x00"), min_size=1, max_size=12)
fractions = st.floats(0.0, 0.9)
rates = st.floats(1e-6, 0.1)

TRAINABLE = (Precision.FP32, Precision.BF16)
FROZEN_ON_CPU = tuple(p for p in Precision if p is not Precision.FP16)  # fp16 warns without CUDA


def frozen_precisions() -> st.SearchStrategy[Precision]:
    """Every precision a frozen trunk may be held in (fp16 draws warning SW402 without CUDA)."""
    return st.sampled_from(list(Precision))


def trainable_precisions(*, cuda: bool = False) -> st.SearchStrategy[Precision]:
    """Precisions for weights that train (fp16 only where a GPU is assumed)."""
    return st.sampled_from([*TRAINABLE, Precision.FP16] if cuda else list(TRAINABLE))


def _head_counts(d_model: int) -> list[int]:
    """Head counts that divide d_model with an even head dimension (rope-safe)."""
    return [
        h for h in range(1, min(d_model, 64) + 1) if d_model % h == 0 and (d_model // h) % 2 == 0
    ]


@st.composite
def attentions(
    draw,
    d_model: int,
    mode: Mode | None = None,
    kinds: tuple[str, ...] = ("mha", "gqa", "mla", "kernel", "mlgka"),
) -> n.Attention:
    """A valid attention for a model of width d_model, of one of the given kinds."""
    kind = draw(st.sampled_from(kinds))
    heads = draw(st.sampled_from(_head_counts(d_model)))
    shared = kind in ("gqa", "mlgka")
    kv_heads = (
        draw(st.sampled_from([k for k in range(1, heads + 1) if heads % k == 0]))
        if shared
        else heads
    )
    latent = kernel = None
    if kind in ("mla", "mlgka") and d_model > 1:
        latent = n.Latent(
            q_rank=draw(st.integers(1, d_model - 1)), kv_rank=draw(st.integers(1, d_model - 1))
        )
    if kind in ("kernel", "mlgka"):
        which = KernelKind.LAPLACIAN if kind == "mlgka" else draw(st.sampled_from(list(KernelKind)))
        kernel = n.KernelFeatures(kernel=which, kernel_dim=draw(st.integers(1, 256)))
    mode = mode or draw(st.sampled_from(list(Mode)))
    return n.Attention(heads=heads, kv_heads=kv_heads, mode=mode, latent=latent, kernel=kernel)


@st.composite
def blocks(draw, name: str, d_model: int, mode: Mode | None = None) -> n.Block:
    """A valid block named `name`."""
    hidden = draw(st.none() | st.integers(d_model, 4 * d_model))
    ffn = draw(st.sampled_from([n.SwiGlu, n.Gelu]))(hidden=hidden)
    return n.Block(
        name=name,
        attention=draw(attentions(d_model, mode)),
        ffn=ffn,
        residual_gain=draw(st.none() | st.floats(0.1, 1.0)),
        spectral_norm=draw(st.booleans()),
        freeze_up_proj=draw(st.booleans()),
    )


def _rank_limit(block_list: list[n.Block], d_model: int, targets: tuple[Target, ...]) -> int:
    limits = [
        min(s) for b in block_list for t, s in layer_shapes(b, d_model).items() if t in targets
    ]
    return min(limits) if limits else 1


@st.composite
def loras(draw, block_list: list[n.Block], d_model: int, stacks: int) -> n.Lora:
    """A LoRA whose ranks fit every layer it could wrap, for `stacks` stacks."""
    has_gelu = any(isinstance(b.ffn, n.Gelu) for b in block_list)
    allowed = [t for t in Target if not (has_gelu and t is Target.GATE)]
    targets = tuple(draw(st.lists(st.sampled_from(allowed), min_size=1, max_size=7, unique=True)))
    limit = min(_rank_limit(block_list, d_model, targets), 64)
    if draw(st.booleans()):
        rank = tuple(draw(st.lists(st.integers(1, limit), min_size=stacks, max_size=stacks)))
        pattern = Pattern.CONSTANT
    else:
        rank = draw(st.integers(1, limit))
        pattern = draw(st.sampled_from([Pattern.CONSTANT, Pattern.DECREASING]))
    alpha = draw(st.none() | st.floats(0.5, 64.0))
    return n.Lora(rank=rank, alpha=alpha, dropout=draw(fractions), targets=targets, pattern=pattern)


@st.composite
def schedules(draw, stacks: int, listed: bool | None = None) -> n.Schedule:
    """A mask schedule whose noise strictly falls from the input side to the head."""
    if listed if listed is not None else draw(st.booleans()):
        values = draw(st.lists(ratios, min_size=stacks, max_size=stacks, unique=True))
        return n.ExplicitSchedule(values=tuple(sorted(values, reverse=True)))
    start = draw(st.floats(0.05, 1.0))
    end = draw(st.floats(0.01, start * 0.99))
    shape = draw(st.sampled_from([n.LinearSchedule, n.CosineSchedule, n.ExponentialSchedule]))
    return shape(range=(start, end))


@st.composite
def objectives(draw, kind: str, stacks: int) -> n.Objective:
    """An objective of the given kind (mlm, clm, masked_diffusion, input_diffusion)."""
    if kind == "mlm":
        return n.Mlm(ratio=draw(ratios), bert_mix=draw(st.booleans()))
    if kind == "clm":
        return n.Clm()
    if kind == "masked_diffusion":
        return n.MaskedDiffusion(time=n.DepthTime(), mask=draw(schedules(stacks, listed=None)))
    mask = draw(schedules(stacks))
    steps = (
        len(mask.values)
        if isinstance(mask, n.ExplicitSchedule)
        else draw(st.none() | st.integers(1, 1000))
    )
    embedding = draw(st.sampled_from([TimeEmbedding.SINUSOIDAL, TimeEmbedding.LEARNED]))
    return n.MaskedDiffusion(time=n.InputTime(embedding=embedding, num_time_steps=steps), mask=mask)


def _length(draw) -> dict:
    """Exactly one of steps and tokens (the other explicitly None)."""
    if draw(st.booleans()):
        return {"steps": draw(st.integers(1, 10_000)), "tokens": None}
    return {"steps": None, "tokens": draw(st.integers(1, 10**9))}


@st.composite
def _stage_settings(
    draw, *, direction, block_list, d_model, stacks, homogeneous, random_noise
) -> n.StageSettings:
    lora = loras(block_list, d_model, stacks)
    stage_wise = direction is not Direction.END_TO_END
    strategy = draw(st.sampled_from(list(Strategy))) if stage_wise else Strategy.FROZEN
    trunk_lora = (
        draw(lora)
        if strategy is Strategy.ADAPTERS or (stage_wise and draw(st.booleans()))
        else None
    )
    precision = draw(st.sampled_from(TRAINABLE if strategy is Strategy.FULL else FROZEN_ON_CPU))
    trunk = (
        n.TrunkPolicy(strategy=strategy, precision=precision, lora=trunk_lora)
        if stage_wise
        else n.TrunkPolicy()
    )
    cacheable = direction is Direction.APPEND and strategy is Strategy.FROZEN and not random_noise
    identity_ok = not any(b.spectral_norm for b in block_list)  # SW414
    init_choices = (
        [Init.RANDOM] + [Init.IDENTITY] * identity_ok + [Init.COPY, Init.MIDDLE] * homogeneous
    )
    cache = draw(st.sampled_from(list(Cache))) if cacheable else Cache.OFF
    return n.StageSettings(
        **_length(draw),
        init=draw(st.sampled_from(init_choices)) if stage_wise else Init.RANDOM,
        cache=cache,
        # the top that keeps training would make a cache stale (SW403)
        # and no more than the trunk ever holds (SW410)
        top=draw(st.integers(0, min(2, stacks - 1))) if stage_wise and cache is Cache.OFF else 0,
        recompute=draw(st.booleans()) and identity_ok,  # not with spectral norm (SW418)
        lr=draw(st.none() | rates),
        adapter_lr=draw(st.none() | rates),
        embedding_lr=draw(st.none() | rates),
        embeddings=draw(st.none() | st.sampled_from(list(Embeddings)))
        if cacheable is False
        else None,
        new=n.NewPolicy(precision=draw(st.sampled_from(TRAINABLE)), lora=draw(st.none() | lora)),
        trunk=trunk,
    )


@st.composite
def _overrides(draw, base: n.StageSettings, count: int) -> tuple[n.StageOverride, ...]:
    """Up to two disjoint stage ranges that change steps and the learning rate."""
    cuts = sorted(draw(st.lists(st.integers(1, count), max_size=4, unique=True)))
    out = []
    for first, last in zip(cuts[::2], cuts[1::2], strict=False):
        settings = attrs.evolve(base, lr=draw(rates), **_length(draw))
        out.append(n.StageOverride(first=first, last=last, settings=settings))
    return tuple(out[:2])


@st.composite
def _fuse(draw, block_list, d_model, stacks) -> n.Fuse:
    strategy = draw(st.sampled_from([Strategy.FULL, Strategy.ADAPTERS]))
    precision = draw(st.sampled_from(TRAINABLE if strategy is Strategy.FULL else FROZEN_ON_CPU))
    lora = draw(loras(block_list, d_model, stacks)) if strategy is Strategy.ADAPTERS else None
    length = _length(draw)
    if draw(st.booleans()):
        length = {"steps": None, "tokens": None, "share": draw(st.floats(0.01, 0.9))}
    return n.Fuse(
        **length,
        lr=draw(st.none() | rates),
        objective=None,
        trunk=n.TrunkPolicy(strategy=strategy, precision=precision, lora=lora),
        # not with spectral norm (SW418)
        recompute=draw(st.booleans()) and not any(b.spectral_norm for b in block_list),
    )


@st.composite
def _data(draw, context: int) -> n.Data:
    files = st.lists(paths, min_size=1, max_size=3).map(tuple)
    source = draw(
        st.sampled_from([n.Stdlib()])
        | st.builds(
            n.Synthetic,
            task=st.sampled_from(list(Task)),
            symbols=st.integers(2, 64),
            samples=st.integers(1, 10**5),
        )
        | st.builds(n.TextFiles, files=files)
        | st.builds(n.Jsonl, files=files, field=st.text(min_size=1, max_size=8))
    )
    tokenizer = draw(
        st.sampled_from([n.Bytes(), n.Chars()])
        | st.builds(n.Bpe, vocab=st.integers(16, 65_536))
        | st.builds(n.TokenizerFile, path=paths)
    )
    held = draw(st.none() | st.builds(n.TextFiles, files=files))
    split = draw(st.sampled_from(Split)) if held is None else Split.INTERLEAVED
    validation = draw(fractions) if held is None else n.Data().validation
    interleaved = split is Split.INTERLEAVED and validation > 0 and held is None
    return n.Data(
        source=source,
        tokenizer=tokenizer,
        batch=draw(st.integers(1, 512)),
        seq_len=draw(st.none() | st.integers(1, context)),
        validation=validation,
        split=split,
        validation_data=held,
        # random windows need a held-out text they cannot reach (SW605)
        windows=Windows.FIXED if interleaved else draw(st.sampled_from(Windows)),
        eos=draw(st.none() | st.booleans()),
    )


@st.composite
def _optimizer(draw) -> n.Optimizer:
    common = {
        "lr": draw(rates),
        "adapter_lr": draw(st.none() | rates),
        "embedding_lr": draw(st.none() | rates),
        "weight_decay": draw(st.floats(0.0, 0.3)),
        "warmup": draw(st.integers(0, 1000)),
        "schedule": draw(st.sampled_from(list(LrSchedule))),
        "min_lr": draw(st.floats(0.0, 1e-5)),
        "clip": draw(st.none() | st.floats(0.1, 10.0)),
        "accumulate": draw(st.integers(1, 16)),
    }
    kind = draw(st.sampled_from([n.AdamW, n.AdamW8bit, n.Sgd]))
    if kind is n.Sgd:
        return n.Sgd(**common, momentum=draw(fractions), nesterov=draw(st.booleans()))
    betas = (draw(st.floats(0.0, 0.99)), draw(st.floats(0.0, 0.999)))
    return kind(**common, betas=betas, eps=draw(st.floats(1e-12, 1e-3)))


@st.composite
def _model(draw, d_model: int, context: int) -> n.Model:
    head = draw(st.sampled_from(list(Head)))
    return n.Model(
        d_model=d_model,
        context=context,
        vocab=draw(st.none() | st.integers(70_000, 100_000)),
        embed_dim=draw(st.none() | st.integers(8, 512)) if head is Head.UNTIED else None,
        norm=draw(st.sampled_from(list(Norm))),
        position=draw(
            st.sampled_from([n.LearnedPosition(), n.NoPosition()])
            | st.builds(n.Rope, theta=st.floats(1.0, 1e6))
        ),
        head=head,
        dropout=draw(fractions),
    )


@st.composite
def _definitions(draw, d_model: int, mode: Mode, max_stacks: int):
    """Blocks, stacks made of them (every block used) and a rack using every stack."""
    block_names = draw(st.lists(names, min_size=1, max_size=3, unique=True))
    block_list = [draw(blocks(b, d_model, mode)) for b in block_names]
    stack_names = draw(st.lists(names, min_size=1, max_size=3, unique=True))
    stacks = []
    for i, s in enumerate(stack_names):
        own = block_names[i :: len(stack_names)] or [block_names[0]]
        extra = draw(st.lists(st.sampled_from(block_names), max_size=2))
        stacks.append(n.Stack(name=s, blocks=tuple(n.Ref(name=b) for b in own + extra)))
    room = max(0, max_stacks - len(stack_names))
    rack = draw(
        st.permutations(stack_names + draw(st.lists(st.sampled_from(stack_names), max_size=room)))
    )
    return block_list, stacks, rack


@st.composite
def _growth(draw, kind: str, block_list: list[n.Block], d_model: int, rack: list[str]) -> n.Growth:
    stage_wise = [Direction.APPEND, Direction.PREPEND]
    whole = [] if kind == "masked_diffusion" else [Direction.END_TO_END]  # depth time needs stages
    direction = draw(st.sampled_from(stage_wise + whole))
    settings = draw(_stage_settings(
        direction=direction, block_list=block_list, d_model=d_model, stacks=len(rack),
        homogeneous=len(set(rack)) == 1, random_noise=kind == "input_diffusion",
    ))  # fmt: skip
    count = 1 if direction is Direction.END_TO_END else len(rack)
    return n.Growth(
        direction=direction,
        stacks=tuple(n.Ref(name=s) for s in rack),
        settings=settings,
        overrides=draw(_overrides(settings, count)),
    )


@st.composite
def _run(draw, eight_bit: bool = False) -> n.Run:
    return n.Run(
        seed=draw(st.integers(0, 2**31)),
        device=draw(st.sampled_from([Device.AUTO, Device.CPU])),  # cuda warns without a GPU
        dir=draw(
            st.none() | st.text(alphabet=st.characters(exclude_characters="\x00"), max_size=16)
        ),
        log_every=draw(st.integers(1, 1000)),
        eval_every=draw(st.none() | st.integers(1, 1000)),
        eval_batches=draw(st.integers(1, 64)),
        checkpoint_every=draw(st.none() | st.integers(1, 10_000)),
        tensorboard=draw(st.booleans()),
        # FSDP cannot shard 8-bit AdamW's state (SW417)
        distributed=Distributed.DDP if eight_bit else draw(st.sampled_from(list(Distributed))),
    )


@st.composite
def specs(
    draw,
    objective_kinds: tuple[str, ...] = ("mlm", "clm", "masked_diffusion", "input_diffusion"),
    max_stacks: int = 6,
) -> n.Spec:
    """A spec that passes every check with no diagnostics at all."""
    d_model = draw(st.sampled_from([16, 32, 48, 64, 96, 128, 256]))
    context = draw(st.integers(8, 1024))
    kind = draw(st.sampled_from(objective_kinds))
    mode = Mode.CAUSAL if kind == "clm" else Mode.BIDIRECTIONAL
    block_list, stacks, rack = draw(_definitions(d_model, mode, max_stacks))
    grow = draw(_growth(kind, block_list, d_model, rack))
    data = draw(_data(context))
    if any(s.cache is not Cache.OFF for s in _stage_settings_of(grow)):
        data = attrs.evolve(data, windows=Windows.FIXED)  # a cache needs fixed windows (SW605)
    return n.Spec(
        model=draw(_model(d_model, context)),
        blocks=tuple(block_list),
        stacks=tuple(stacks),
        objective=draw(objectives(kind, len(rack))),
        grow=grow,
        fuse=draw(st.none() | _fuse(block_list, d_model, len(rack))),
        data=data,
        optimizer=(optimizer := draw(_optimizer())),
        run=draw(_run(eight_bit=isinstance(optimizer, n.AdamW8bit))),
    )


def _stage_settings_of(grow: n.Growth) -> list[n.StageSettings]:
    return [grow.settings, *(o.settings for o in grow.overrides)]


def spec_texts(**kwargs) -> st.SearchStrategy[str]:
    """Valid specs as canonical text."""
    from stackwise_dsl.ir.printer import print_spec

    return specs(**kwargs).map(print_spec)


# --- wild IR, for robustness properties -----------------------------------------------------

_POOL = st.sampled_from(["a", "b", "c", "missing"])


def raw_specs() -> st.SearchStrategy[n.Spec]:
    """Arbitrary IR: any value of each field's type, mostly violating the checks."""
    return _wild(n.Spec, depth=0)


def _wild(hint, depth: int):
    if hint is int:
        return st.integers(-4, 1024) | st.sampled_from([0, 10**9, 2**40])
    if hint is float:
        return st.floats(-10.0, 1e6, allow_nan=False)
    if hint is bool:
        return st.booleans()
    if hint is str:
        return _POOL | st.text(max_size=6)
    if hint is n.Ref:
        return st.builds(n.Ref, name=_POOL)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return st.sampled_from(list(hint))
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(
            [_wild(a, depth) if a is not type(None) else st.none() for a in typing.get_args(hint)]
        )
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return st.lists(_wild(args[0], depth + 1), max_size=4 if depth < 3 else 1).map(tuple)
        return st.tuples(*(_wild(a, depth + 1) for a in args))
    from stackwise_dsl.elaborate.registry import hints

    fields = {k: _wild(h, depth + 1) for k, h in hints(hint).items()}
    if hint is n.Block or hint is n.Stack:
        fields["name"] = _POOL
    return st.builds(hint, **fields)
