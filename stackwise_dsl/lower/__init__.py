"""IR → plan: every default resolved, one `Stage` per stage, one `Part` per existing stack.

`to_plan(spec, vocab=...)` is pure: the only fact it cannot know from the spec is the size of
a vocabulary that the data decides (chars, a tokenizer file); the caller passes it (see
`stackwise_dsl.data.vocab_size`). Paths are made absolute, relative to the file that named them.
`lower(...)` gives the plan with where each of its values came from (lower/origins.py),
recorded as it is built.
"""

from __future__ import annotations

import math
import os

import attrs

from stackwise_dsl.ir import nodes as n
from stackwise_dsl.ir.enums import Cache, Direction, Embeddings, Head, Init, Strategy
from stackwise_dsl.ir.facts import Facts, StageView, copy_source
from stackwise_dsl.ir.paths import resolve
from stackwise_dsl.ir.walk import (
    ffn_hidden,
    lora_alpha,
    lora_rank,
    objectives,
    specials,
    tokenizer_vocab,
)
from stackwise_dsl.lower import plan as p
from stackwise_dsl.lower.origins import DEFAULT, Origin, Origins, derived
from stackwise_dsl.lower.schedule import ratio_at, schedule_of


class LoweringError(ValueError):
    """The spec cannot be lowered as asked (e.g. a vocabulary the data must decide)."""


@attrs.frozen
class Lowered:
    plan: p.Plan
    origins: dict  # path into the plan's JSON → Origin


def to_plan(spec: n.Spec, *, vocab: int | None = None, name: str = "spec") -> p.Plan:
    """The plan of a spec that passed the checks; `vocab` when the data decides it."""
    return lower(spec, vocab=vocab, name=name).plan


def lower(spec: n.Spec, *, vocab: int | None = None, name: str = "spec") -> Lowered:
    """The plan of a spec that passed the checks, and where each of its values came from."""
    o = Origins()
    facts = Facts.of(spec)
    data = _data(spec, o)
    tokens_per_step = data.batch * data.seq_len * spec.optimizer.accumulate
    stacks = tuple(_stack(facts, position, o) for position in range(len(spec.grow.stacks)))
    trunk_loras = _trunk_loras(facts)
    stages = tuple(_stage(facts, view, trunk_loras, tokens_per_step, o) for view in facts.stages)
    plan = p.Plan(
        name=name,
        model=_model(spec, vocab, o),
        stacks=stacks,
        stages=stages,
        data=data,
        optimizer=_optimizer(spec.optimizer, o),
        run=_run(spec.run, name, o),
    )
    o.set(("name",), derived("the spec's file name"))
    o.set(("stacks",), derived())
    o.set(("stages",), derived())
    return Lowered(plan=plan, origins=o.table)


# --- the model ---------------------------------------------------------------------------------


def _directory(node: n.Hf | None) -> str | None:
    """A Hugging Face directory, as an absolute path (relative to the spec that names it)."""
    return None if node is None else resolve(node.path, node, "path")


def _model(spec: n.Spec, vocab: int | None, o: Origins) -> p.Model:
    m = spec.model
    resolved = m.vocab or tokenizer_vocab(spec) or vocab
    if resolved is None:
        raise LoweringError(
            f"the {spec.data.tokenizer.sw_name} tokenizer's vocabulary comes from the data; "
            "build the tokenizer first (stackwise_dsl.data.vocab_size) or set `model.vocab`"
        )
    model = p.Model(
        vocab=resolved,
        d_model=m.d_model,
        context=m.context,
        embed_dim=m.embed_dim or m.d_model,
        norm=m.norm,
        position=_position(m, o),
        head=m.head,
        dropout=m.dropout,
        time=_input_time(spec, o, ("model", "time")),
        pretrained=_directory(m.pretrained),
        embedding=_directory(m.embedding),
    )
    vocab = Origin.at(m.spans.get("vocab"), None if m.vocab else derived("the tokenizer's"))
    fields = {"vocab": vocab, "time": derived("the objective's time"),
              "embed_dim": Origin.at(m.spans.get("embed_dim"), derived("= d_model"))}  # fmt: skip
    return o.record(("model",), model, m, fields=fields)


def _position(m: n.Model, o: Origins) -> p.Rope | p.LearnedPosition | p.NoPosition:
    position = m.position
    if isinstance(position, n.Rope):
        made = p.Rope(theta=position.theta)
    elif isinstance(position, n.LearnedPosition):
        made = p.LearnedPosition()
    else:
        made = p.NoPosition()
    return o.record(("model", "position"), made, position, span=m.spans.get("position"))


def _input_time(spec: n.Spec, o: Origins, path: tuple) -> p.InputTime | None:
    """The model's time input: that of the first objective with time as input (the checks
    make every such objective agree), its levels those of a listed schedule when not given."""
    time = _time_input(spec)
    if time is None:
        return None
    steps = time.num_time_steps or _listed_steps(spec)
    made = p.InputTime(embedding=time.embedding, num_time_steps=steps)
    listed = time.num_time_steps is None and steps is not None
    fields = {"num_time_steps": derived("the listed ratios")} if listed else {}
    return o.record(path, made, time, fields=fields)


def _time_input(spec: n.Spec) -> n.InputTime | None:
    """The time-as-input setting of the first objective that has one."""
    for objective in objectives(spec):
        if isinstance(objective, n.MaskedDiffusion) and isinstance(objective.time, n.InputTime):
            return objective.time
    return None


def _listed_steps(spec: n.Spec) -> int | None:
    for objective in objectives(spec):
        if isinstance(objective, n.MaskedDiffusion) and isinstance(
            objective.mask, n.ExplicitSchedule
        ):
            return len(objective.mask.values)
    return None


def _stack(facts: Facts, position: int, o: Origins) -> p.Stack:
    spec = facts.spec
    lora = _stack_lora_of(facts, position)
    path = ("stacks", position)
    d = spec.model.d_model
    blocks = [_block(b, d, o, (*path, "blocks", i)) for i, b in enumerate(facts.blocks[position])]
    if lora is not None:
        lora = _lora(lora, facts.created[position], o, (*path, "stack_lora"))
    made = p.Stack(
        position=position,
        name=spec.grow.stacks[position].name,
        blocks=tuple(blocks),
        created_in=_created_in(facts, position),
        stack_lora=lora,
    )
    ref = spec.grow.stacks[position]
    o.set((*path, "blocks"), derived())
    return o.record(path, made, facts.stacks[position], fields={
        "name": Origin.at(ref.span, derived()), "position": derived(),
        "created_in": derived(), "stack_lora": DEFAULT})  # fmt: skip


def _created_in(facts: Facts, position: int) -> int:
    """The stage that creates a stack: its creation index, or 1 in end-to-end growth."""
    if facts.spec.grow.direction is Direction.END_TO_END:
        return 1
    return facts.created[position]


def _block(b: n.Block, d_model: int, o: Origins, path: tuple) -> p.Block:
    a = b.attention
    apath = (*path, "attention")
    latent = kernel = None
    if a.latent is not None:
        latent = p.Latent(q_rank=a.latent.q_rank, kv_rank=a.latent.kv_rank)
        o.record((*apath, "latent"), latent, a.latent)
    if a.kernel is not None:
        kernel = p.KernelFeatures(kernel=a.kernel.kernel, kernel_dim=a.kernel.kernel_dim)
        o.record((*apath, "kernel"), kernel, a.kernel)
    attention = p.Attention(heads=a.heads, kv_heads=a.kv_heads, head_dim=d_model // a.heads,
                            mode=a.mode, latent=latent, kernel=kernel)  # fmt: skip
    shared = derived("= heads") if a.kv_heads == a.heads else derived()
    kv_heads = Origin.at(a.spans.get("kv_heads"), shared)
    fields = {"head_dim": derived("d_model / heads"), "kv_heads": kv_heads}
    o.record(apath, attention, a, span=b.spans.get("attention"), fields=fields)
    ffn = (p.SwiGlu if isinstance(b.ffn, n.SwiGlu) else p.Gelu)(hidden=ffn_hidden(b.ffn, d_model))
    o.record((*path, "ffn"), ffn, b.ffn, span=b.spans.get("ffn"), container=DEFAULT)
    made = p.Block(
        name=b.name,
        attention=attention,
        ffn=ffn,
        residual_gain=1.0 if b.residual_gain is None else b.residual_gain,
        spectral_norm=b.spectral_norm,
        freeze_up_proj=b.freeze_up_proj,
    )
    gain = Origin.at(b.spans.get("residual_gain"))
    return o.record(path, made, b, fields={"residual_gain": gain, "name": Origin.at(b.span)})


def _lora(lora: n.Lora, k: int, o: Origins, path: tuple) -> p.Lora:
    """The adapter of the k-th stack created."""
    made = p.Lora(
        rank=lora_rank(lora, k),
        alpha=lora_alpha(lora, k),
        dropout=lora.dropout,
        targets=lora.targets,
    )
    pattern = derived("the rank pattern")
    by_pattern = {} if made.rank == lora.rank else {"rank": pattern, "alpha": pattern}
    o.record(path, made, lora, fields=by_pattern)
    return made


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


def _stage(facts: Facts, view: StageView, trunk_loras, tokens_per_step: int,
           o: Origins) -> p.Stage:  # fmt: skip
    spec = facts.spec
    s = view.settings
    path = ("stages", view.number - 1)
    objective = s.objective or spec.objective
    kind = _kind(spec, view)
    parts = tuple(
        _part(facts, view, position, trunk_loras, objective, o, (*path, "parts", k))
        for k, position in enumerate(sorted((*view.trunk, *view.new)))
    )
    init, init_from = _init(spec, view)
    lr = s.lr or spec.optimizer.lr
    cache = Cache.OFF if view.fuse or not view.existing else s.cache
    embeddings = _train_embeddings(spec, view)
    where = s.spans.get("objective") or objective.span
    made = p.Stage(
        number=view.number,
        kind=kind,
        steps=_steps(facts, view, tokens_per_step),
        tokens=s.tokens,
        objective=_objective(objective, spec, o, (*path, "objective"), where),
        mask_ratio=_stage_ratio(facts, view, objective),
        parts=parts,
        init=init,
        init_from=init_from,
        cache=cache,
        lr=lr,
        adapter_lr=s.adapter_lr or spec.optimizer.adapter_lr or lr,
        embedding_lr=s.embedding_lr or spec.optimizer.embedding_lr or lr,
        train_input=embeddings and cache is Cache.OFF,
        train_head=(embeddings or bool(_top(view)))
        and (cache is Cache.OFF or spec.model.head is Head.UNTIED),
        merge_adapters=view.fuse and s.merge,
        recompute=s.recompute,
    )
    opt = spec.optimizer.spans
    lr_at = Origin.at(s.spans.get("lr") or opt.get("lr"))
    chosen = Origin.at(s.spans.get("embeddings"), derived("the stage's kind and cache"))
    fields = {
        "number": derived(), "kind": derived(), "mask_ratio": derived("the mask schedule"),
        "steps": Origin.at(s.spans.get("steps"), derived(
            "the share of all steps" if getattr(s, "share", None) else "tokens / tokens per step")),
        "init": _overruled(s, "init", made.init), "init_from": derived(),
        "cache": _overruled(s, "cache", made.cache), "lr": lr_at,
        "adapter_lr": Origin.at(s.spans.get("adapter_lr") or opt.get("adapter_lr"), lr_at),
        "embedding_lr": Origin.at(s.spans.get("embedding_lr") or opt.get("embedding_lr"), lr_at),
        "train_input": chosen, "train_head": chosen,
        "merge_adapters": Origin.at(s.spans.get("merge")) if view.fuse else derived(),
    }  # fmt: skip
    o.set((*path, "parts"), derived())
    return o.record(path, made, s, span=(spec.fuse if view.fuse else spec.grow).span,
                    fields=fields)  # fmt: skip


def _steps(facts: Facts, view: StageView, tokens_per_step: int) -> int:
    """A stage's steps: as stated, from its tokens, or (fuse `share`) its share of all the
    run's steps: share / (1 - share) x the growth stages' steps, at least 1."""
    s = view.settings
    if s.steps is not None:
        return s.steps
    if s.tokens is not None:
        return math.ceil(s.tokens / tokens_per_step)
    growth = sum(_steps(facts, v, tokens_per_step) for v in facts.stages if not v.fuse)
    return max(1, round(s.share / (1.0 - s.share) * growth))


def _overruled(s, key: str, value) -> Origin:
    """A stage setting the lowering may overrule (no copy in stage 1, no cache in fuse)."""
    if getattr(s, key, None) != value:
        return derived() if hasattr(s, key) else DEFAULT
    return Origin.at(s.spans.get(key))


def _kind(spec: n.Spec, view: StageView) -> p.StageKind:
    if view.fuse:
        return p.StageKind.FUSE
    if spec.grow.direction is Direction.END_TO_END:
        return p.StageKind.END_TO_END
    return p.StageKind.GROW


def _part(facts: Facts, view: StageView, position: int, trunk_loras, objective, o: Origins,
          path: tuple) -> p.Part:  # fmt: skip
    s = view.settings
    new = position in view.new
    top = not new and position in _top(view)
    attached = trunk_loras.get(position)
    trunk_lora = None
    if attached is not None and attached[0] <= view.number:
        trunk_lora = _lora(attached[1], facts.created[position], o, (*path, "trunk_lora"))
    policy = s.new if new or top else s.trunk
    trains = derived("new stacks train") if new else Origin.at(policy.spans.get("strategy"))
    if top:
        trains = Origin.at(s.spans.get("top"))
    made = p.Part(
        position=position,
        role=p.Role.NEW if new else p.Role.TRUNK,
        trains=p.Trains.FULL
        if new or top
        else _trunk_trains(facts, s.trunk.strategy, position, trunk_lora),
        precision=s.new.precision if new or top else s.trunk.precision,
        trunk_lora=trunk_lora,
        mask_ratio=_position_ratio(facts, objective, position),
    )
    return o.record(path, made, policy, container=derived(), fields={
        "position": derived(), "role": derived(), "trains": trains,
        "trunk_lora": DEFAULT, "mask_ratio": derived("the mask schedule")})  # fmt: skip


def _top(view: StageView) -> tuple[int, ...]:
    """The trunk stacks nearest the head that keep training (`top = N`: SegProp's global
    head), in a growth stage."""
    count = 0 if view.fuse else getattr(view.settings, "top", 0)
    return tuple(sorted(view.trunk)[::-1][:count])


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
    """`copy` copies the trunk neighbour, `middle` the trunk's middle stack; with nothing to
    copy (stage 1) a stack starts random."""
    if not view.fuse and view.settings.init is Init.PRETRAINED:
        return Init.PRETRAINED, None  # the model's pretrained layers, in any direction
    if view.fuse or spec.grow.direction is Direction.END_TO_END:
        return Init.RANDOM, None
    init = view.settings.init
    if init is not Init.COPY and init is not Init.MIDDLE:
        return init, None
    if view.number == 1:
        return Init.RANDOM, None
    return init, copy_source(spec.grow.direction, view)


def _train_embeddings(spec: n.Spec, view: StageView) -> bool:
    """Explicit `embeddings`, else: fuse trains them when it trains the trunk fully; a growth
    trains them in stage 1 and in append; prepend freezes them after stage 1 (with the frozen
    suffix they are the fixed anchor the new stacks learn to feed), unless the top keeps
    training (`top`: the head trains with it). A stage that caches its trunk's output keeps
    the input side (part of what is cached) and a tied head frozen."""
    chosen = view.settings.embeddings
    if chosen is not None:
        return chosen is Embeddings.TRAIN
    if _top(view):
        return True
    if view.fuse:
        return view.settings.trunk.strategy is Strategy.FULL
    return view.number == 1 or spec.grow.direction is not Direction.PREPEND


# --- objectives and noise levels --------------------------------------------------------------


def _objective(objective: n.Objective, spec: n.Spec, o: Origins, path: tuple,
               where) -> p.Objective:  # fmt: skip
    if isinstance(objective, n.Mlm):
        made = p.Mlm(ratio=objective.ratio, bert_mix=objective.bert_mix)
    elif isinstance(objective, n.Clm):
        made = p.Clm()
    else:
        if isinstance(objective.time, n.DepthTime):
            time = o.record((*path, "time"), p.DepthTime(), objective.time)
        else:
            time = _input_time(spec, o, (*path, "time"))
        mask = schedule_of(objective.mask)
        o.record((*path, "mask"), mask, objective.mask, spans={"start": "range", "end": "range"})
        made = p.MaskedDiffusion(time=time, mask=mask)
    return o.record(path, made, objective, span=where)


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
    return _data(spec, Origins())


def _data(spec: n.Spec, o: Origins) -> p.Data:
    d = spec.data
    source, tokenizer = _source(d.source), _tokenizer(d.tokenizer)
    o.record(("data", "source"), source, d.source, span=d.spans.get("source"))
    o.record(("data", "tokenizer"), tokenizer, d.tokenizer, span=d.spans.get("tokenizer"))
    made = p.Data(
        source=source,
        tokenizer=tokenizer,
        batch=d.batch,
        seq_len=d.seq_len or spec.model.context,
        validation=0.0 if d.validation_data is not None else d.validation,
        split=d.split,
        validation_data=_validation_data(d, o),
        windows=d.windows,
        specials=specials(spec),
    )
    seq_len = Origin.at(d.spans.get("seq_len"), derived("= context"))
    made_of = Origin.at(d.spans.get("eos"), derived("the objectives and `eos`"))
    return o.record(("data",), made, d, fields={"seq_len": seq_len, "specials": made_of})


def _validation_data(d: n.Data, o: Origins):
    if d.validation_data is None:
        return None
    made = _source(d.validation_data)
    span = d.spans.get("validation_data")
    return o.record(("data", "validation_data"), made, d.validation_data, span=span)


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


def _optimizer(opt: n.Optimizer, o: Origins) -> p.Optimizer:
    if isinstance(opt, n.Sgd):
        method = p.Sgd(momentum=opt.momentum, nesterov=opt.nesterov)
    else:
        method = (p.AdamW if isinstance(opt, n.AdamW) else p.AdamW8bit)(betas=opt.betas,
                                                                         eps=opt.eps)  # fmt: skip
    o.record(("optimizer", "method"), method, opt)
    made = p.Optimizer(
        method=method,
        weight_decay=opt.weight_decay,
        warmup=opt.warmup,
        schedule=opt.schedule,
        min_lr=opt.min_lr,
        clip=opt.clip,
        accumulate=opt.accumulate,
    )
    return o.record(("optimizer",), made, opt)


def _run(r: n.Run, name: str, o: Origins) -> p.Run:
    made = p.Run(
        seed=r.seed,
        device=r.device,
        dir=os.path.abspath(r.dir if r.dir is not None else os.path.join("runs", name)),
        log_every=r.log_every,
        eval_every=r.eval_every,
        eval_batches=r.eval_batches,
        checkpoint_every=r.checkpoint_every,
        tensorboard=r.tensorboard,
        distributed=r.distributed,
    )
    return o.record(("run",), made, r, fields={
        "dir": Origin.at(r.spans.get("dir"), derived("runs/ and the spec's name"))})  # fmt: skip
