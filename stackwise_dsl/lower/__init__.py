"""IR → plan: every default resolved, one `Stage` per stage, one `Part` per existing stack.

`to_plan(spec, vocab=...)` is pure: the only fact it cannot know from the spec is the size of
a vocabulary that the data decides (chars, a tokenizer file); the caller passes it (see
`stackwise_dsl.data.vocab_size`). Paths are made absolute, relative to the file that named them.
"""

from __future__ import annotations

import math
import os

from stackwise_dsl.ir import nodes as n
from stackwise_dsl.ir.enums import Cache, Direction, Embeddings, Head, Init, Strategy
from stackwise_dsl.ir.facts import Facts, StageView
from stackwise_dsl.ir.paths import resolve
from stackwise_dsl.ir.walk import ffn_hidden, lora_alpha, lora_rank, tokenizer_vocab
from stackwise_dsl.lower import plan as p
from stackwise_dsl.lower.schedule import ratio_at, schedule_of


class LoweringError(ValueError):
    """The spec cannot be lowered as asked (e.g. a vocabulary the data must decide)."""


def to_plan(spec: n.Spec, *, vocab: int | None = None, name: str = "spec") -> p.Plan:
    """The plan of a spec that passed the checks; `vocab` when the data decides it."""
    facts = Facts.of(spec)
    data = data_of(spec)
    tokens_per_step = data.batch * data.seq_len * spec.optimizer.accumulate
    stacks = tuple(_stack(facts, position) for position in range(len(spec.grow.stacks)))
    trunk_loras = _trunk_loras(facts)
    stages = tuple(_stage(facts, view, trunk_loras, tokens_per_step) for view in facts.stages)
    return p.Plan(
        name=name,
        model=_model(spec, vocab),
        stacks=stacks,
        stages=stages,
        data=data,
        optimizer=_optimizer(spec.optimizer),
        run=_run(spec.run, name),
    )


# --- the model ---------------------------------------------------------------------------------


def _model(spec: n.Spec, vocab: int | None) -> p.Model:
    m = spec.model
    resolved = m.vocab or tokenizer_vocab(spec.data.tokenizer) or vocab
    if resolved is None:
        raise LoweringError(
            f"the {spec.data.tokenizer.sw_name} tokenizer's vocabulary comes from the data; "
            "build the tokenizer first (stackwise_dsl.data.vocab_size) or set `model.vocab`"
        )
    return p.Model(
        vocab=resolved,
        d_model=m.d_model,
        context=m.context,
        embed_dim=m.embed_dim or m.d_model,
        norm=m.norm,
        position=_position(m.position),
        head=m.head,
        dropout=m.dropout,
        time=_input_time(spec),
    )


def _position(position: n.Position) -> p.Rope | p.LearnedPosition | p.NoPosition:
    if isinstance(position, n.Rope):
        return p.Rope(theta=position.theta)
    if isinstance(position, n.LearnedPosition):
        return p.LearnedPosition()
    return p.NoPosition()


def _input_time(spec: n.Spec) -> p.InputTime | None:
    """The model's time input: that of the first objective with time as input (the checks
    make every such objective agree), its levels those of a listed schedule when not given."""
    time = _time_input(spec)
    if time is None:
        return None
    return p.InputTime(
        embedding=time.embedding, num_time_steps=time.num_time_steps or _listed_steps(spec)
    )


def _time_input(spec: n.Spec) -> n.InputTime | None:
    """The time-as-input setting of the first objective that has one."""
    for objective in _objectives(spec):
        if isinstance(objective, n.MaskedDiffusion) and isinstance(objective.time, n.InputTime):
            return objective.time
    return None


def _listed_steps(spec: n.Spec) -> int | None:
    for objective in _objectives(spec):
        if isinstance(objective, n.MaskedDiffusion) and isinstance(
            objective.mask, n.ExplicitSchedule
        ):
            return len(objective.mask.values)
    return None


def _objectives(spec: n.Spec):
    yield spec.objective
    for s in (spec.grow.settings, *(o.settings for o in spec.grow.overrides), spec.fuse):
        if s is not None and s.objective is not None:
            yield s.objective


def _stack(facts: Facts, position: int) -> p.Stack:
    spec = facts.spec
    lora = _stack_lora_of(facts, position)
    return p.Stack(
        position=position,
        name=spec.grow.stacks[position].name,
        blocks=tuple(_block(b, spec.model.d_model) for b in facts.blocks[position]),
        created_in=_created_in(facts, position),
        stack_lora=_lora(lora, facts.created[position]) if lora is not None else None,
    )


def _created_in(facts: Facts, position: int) -> int:
    """The stage that creates a stack: its creation index, or 1 in end-to-end growth."""
    if facts.spec.grow.direction is Direction.END_TO_END:
        return 1
    return facts.created[position]


def _block(b: n.Block, d_model: int) -> p.Block:
    a = b.attention
    ffn = p.SwiGlu if isinstance(b.ffn, n.SwiGlu) else p.Gelu
    return p.Block(
        name=b.name,
        attention=p.Attention(
            heads=a.heads,
            kv_heads=a.kv_heads,
            head_dim=d_model // a.heads,
            mode=a.mode,
            latent=p.Latent(q_rank=a.latent.q_rank, kv_rank=a.latent.kv_rank) if a.latent else None,
            kernel=_kernel(a.kernel),
        ),
        ffn=ffn(hidden=ffn_hidden(b.ffn, d_model)),
        residual_gain=1.0 if b.residual_gain is None else b.residual_gain,
        spectral_norm=b.spectral_norm,
        freeze_up_proj=b.freeze_up_proj,
    )


def _kernel(k: n.KernelFeatures | None) -> p.KernelFeatures | None:
    return None if k is None else p.KernelFeatures(kernel=k.kernel, kernel_dim=k.kernel_dim)


def _lora(lora: n.Lora, k: int) -> p.Lora:
    """The adapter of the k-th stack created."""
    return p.Lora(
        rank=lora_rank(lora, k),
        alpha=lora_alpha(lora, k),
        dropout=lora.dropout,
        targets=lora.targets,
    )


def _trunk_loras(facts: Facts) -> dict[int, tuple[int, n.Lora]]:
    """Rack position → (stage that attaches it, config): a stack's trunk LoRA is attached the
    first time it is trunk in a stage that asks for one, and stays."""
    attached: dict[int, tuple[int, n.Lora]] = {}
    for view in facts.stages:
        lora = view.settings.trunk.lora
        if lora is None:
            continue
        for position in view.trunk:
            attached.setdefault(position, (view.number, lora))
    return attached


# --- stages ------------------------------------------------------------------------------------


def _stage(facts: Facts, view: StageView, trunk_loras, tokens_per_step: int) -> p.Stage:
    spec = facts.spec
    s = view.settings
    objective = s.objective or spec.objective
    kind = _kind(spec, view)
    parts = tuple(
        _part(facts, view, position, trunk_loras, objective)
        for position in sorted((*view.trunk, *view.new))
    )
    init, init_from = _init(spec, view)
    lr = s.lr or spec.optimizer.lr
    cache = Cache.OFF if view.fuse or not view.existing else s.cache
    embeddings = _train_embeddings(spec, view)
    return p.Stage(
        number=view.number,
        kind=kind,
        steps=s.steps if s.steps is not None else math.ceil(s.tokens / tokens_per_step),
        tokens=s.tokens,
        objective=_objective(objective, spec),
        mask_ratio=_stage_ratio(facts, view, objective),
        parts=parts,
        init=init,
        init_from=init_from,
        cache=cache,
        lr=lr,
        adapter_lr=s.adapter_lr or spec.optimizer.adapter_lr or lr,
        embedding_lr=s.embedding_lr or spec.optimizer.embedding_lr or lr,
        train_input=embeddings and cache is Cache.OFF,
        train_head=embeddings and (cache is Cache.OFF or spec.model.head is Head.UNTIED),
        merge_adapters=view.fuse and s.merge,
    )


def _kind(spec: n.Spec, view: StageView) -> p.StageKind:
    if view.fuse:
        return p.StageKind.FUSE
    if spec.grow.direction is Direction.END_TO_END:
        return p.StageKind.END_TO_END
    return p.StageKind.GROW


def _part(facts: Facts, view: StageView, position: int, trunk_loras, objective) -> p.Part:
    s = view.settings
    new = position in view.new
    attached = trunk_loras.get(position)
    trunk_lora = None
    if attached is not None and attached[0] <= view.number:
        trunk_lora = _lora(attached[1], facts.created[position])
    return p.Part(
        position=position,
        role=p.Role.NEW if new else p.Role.TRUNK,
        trains=p.Trains.FULL
        if new
        else _trunk_trains(facts, s.trunk.strategy, position, trunk_lora),
        precision=s.new.precision if new else s.trunk.precision,
        trunk_lora=trunk_lora,
        mask_ratio=_position_ratio(facts, objective, position),
    )


def _trunk_trains(facts: Facts, strategy: Strategy, position: int, trunk_lora) -> p.Trains:
    if strategy is Strategy.FULL:
        return p.Trains.FULL
    has_adapters = trunk_lora is not None or _stack_lora_of(facts, position) is not None
    if strategy is Strategy.ADAPTERS and has_adapters:
        return p.Trains.ADAPTERS
    return p.Trains.NOTHING


def _stack_lora_of(facts: Facts, position: int) -> n.Lora | None:
    """The stack LoRA the creating stage asks for."""
    return facts.stages[_created_in(facts, position) - 1].settings.new.lora


def _init(spec: n.Spec, view: StageView) -> tuple[Init, int | None]:
    """`copy` copies the trunk neighbour; with nothing to copy (stage 1) a stack starts random."""
    if view.fuse or spec.grow.direction is Direction.END_TO_END:
        return Init.RANDOM, None
    init = view.settings.init
    if init is not Init.COPY:
        return init, None
    if view.number == 1:
        return Init.RANDOM, None
    step = 1 if spec.grow.direction is Direction.PREPEND else -1
    return Init.COPY, view.new[0] + step


def _train_embeddings(spec: n.Spec, view: StageView) -> bool:
    """Explicit `embeddings`, else: fuse trains them when it trains the trunk fully; a growth
    trains them in stage 1 and in append; prepend freezes them after stage 1 (with the frozen
    suffix they are the fixed anchor the new stacks learn to feed). A stage that caches its
    trunk's output keeps the input side (part of what is cached) and a tied head frozen."""
    chosen = view.settings.embeddings
    if chosen is not None:
        return chosen is Embeddings.TRAIN
    if view.fuse:
        return view.settings.trunk.strategy is Strategy.FULL
    return view.number == 1 or spec.grow.direction is not Direction.PREPEND


# --- objectives and noise levels --------------------------------------------------------------


def _objective(o: n.Objective, spec: n.Spec) -> p.Clm | p.Mlm | p.MaskedDiffusion:
    if isinstance(o, n.Mlm):
        return p.Mlm(ratio=o.ratio, bert_mix=o.bert_mix)
    if isinstance(o, n.Clm):
        return p.Clm()
    time = p.DepthTime() if isinstance(o.time, n.DepthTime) else _input_time(spec)
    return p.MaskedDiffusion(time=time, mask=schedule_of(o.mask))


def _depth(objective: n.Objective) -> bool:
    return isinstance(objective, n.MaskedDiffusion) and isinstance(objective.time, n.DepthTime)


def _position_ratio(facts: Facts, objective: n.Objective, position: int) -> float | None:
    """Time as depth: the noise level of the stack at `position`, input side noisiest."""
    if not _depth(objective):
        return None
    count = len(facts.spec.grow.stacks)
    where = position / (count - 1) if count > 1 else 1.0
    return ratio_at(schedule_of(objective.mask), where)


def _stage_ratio(facts: Facts, view: StageView, objective: n.Objective) -> float | None:
    """Time as depth: a growth stage trains at its new stack's ratio; the fuse stage draws one
    stack's ratio per batch (None here)."""
    if not _depth(objective) or view.fuse or len(view.new) != 1:
        return None
    return _position_ratio(facts, objective, view.new[0])


# --- data, optimizer, run ----------------------------------------------------------------------


def data_of(spec: n.Spec) -> p.Data:
    """The plan of a spec's data section."""
    d = spec.data
    return p.Data(
        source=_source(d.source),
        tokenizer=_tokenizer(d.tokenizer),
        batch=d.batch,
        seq_len=d.seq_len or spec.model.context,
        validation=d.validation,
    )


def _source(s: n.DataSource):
    if isinstance(s, n.Stdlib):
        return p.Stdlib()
    if isinstance(s, n.Synthetic):
        return p.Synthetic(task=s.task, symbols=s.symbols, samples=s.samples)
    files = tuple(resolve(f, s, "files") for f in s.files)
    if isinstance(s, n.TextFiles):
        return p.TextFiles(files=files)
    return p.Jsonl(files=files, field=s.field)


def _tokenizer(t: n.Tokenizer):
    if isinstance(t, n.Bytes):
        return p.Bytes()
    if isinstance(t, n.Chars):
        return p.Chars()
    if isinstance(t, n.Bpe):
        return p.Bpe(vocab=t.vocab)
    return p.TokenizerFile(path=resolve(t.path, t, "path"))


def _optimizer(o: n.Optimizer) -> p.Optimizer:
    if isinstance(o, n.Sgd):
        method = p.Sgd(momentum=o.momentum, nesterov=o.nesterov)
    else:
        method = (p.AdamW if isinstance(o, n.AdamW) else p.AdamW8bit)(betas=o.betas, eps=o.eps)
    return p.Optimizer(
        method=method,
        weight_decay=o.weight_decay,
        warmup=o.warmup,
        schedule=o.schedule,
        min_lr=o.min_lr,
        clip=o.clip,
        accumulate=o.accumulate,
    )


def _run(r: n.Run, name: str) -> p.Run:
    return p.Run(
        seed=r.seed,
        device=r.device,
        dir=os.path.abspath(r.dir if r.dir is not None else os.path.join("runs", name)),
        log_every=r.log_every,
        eval_every=r.eval_every,
        eval_batches=r.eval_batches,
        checkpoint_every=r.checkpoint_every,
    )
