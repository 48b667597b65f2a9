"""Where each value of a plan came from, for the comments of a script's configuration block.

`origins(spec, plan)` maps paths into `to_json(plan)` (("model", "d_model"), ("stages", 0,
"steps"), ...) to the spec line that set the value: `line 9` in the compiled file,
`base.sw:4` in an included one, `--set optimizer.lr` for a command-line override, or `default` where
the spec left a knob of the language unset. A value the lowering derives (head_dim, the
parts of a stage) gets no entry; a container's own entry is the line that declared it.
Torch-free; only spans, never values, reach the comments.
"""

from __future__ import annotations

from pathlib import PurePath

from stackwise_dsl.elaborate.registry import hints
from stackwise_dsl.ir import nodes as n
from stackwise_dsl.ir.facts import Facts
from stackwise_dsl.lower import _stack_lora_of, _time_input, _trunk_loras
from stackwise_dsl.source import SET_SOURCE

Path_ = tuple  # a path into the plan's JSON: keys and list indices


def origins(spec: n.Spec, plan, spec_file: str) -> dict[Path_, str]:
    out: dict[Path_, str] = {}

    def at(span) -> str | None:
        if span is None:
            return None
        if span.source.startswith(f"<{SET_SOURCE} ") and span.source.endswith(">"):
            return span.source[1:-1]  # "--set optimizer.lr"
        if span.source == spec_file:
            return f"line {span.line}"
        return f"{PurePath(span.source).name}:{span.line}"

    def fields(node, path: Path_, keys=None) -> None:
        """Each plan key that is a field of `node` (all its knobs when `keys` is None): where
        it was written, else `default`."""
        if node is None:
            return
        for key in hints(type(node)) if keys is None else keys:
            if key in node.spans:
                out[(*path, key)] = at(node.spans[key])
            elif hasattr(node, key):
                out[(*path, key)] = "default"

    def opening(path: Path_, node, field: str | None = None, owner=None) -> None:
        span = owner.spans.get(field) if owner is not None and field else None
        where = at(span or getattr(node, "span", None))
        if where is not None:
            out[path] = where

    facts = Facts.of(spec)
    # the model
    m = spec.model
    opening(("model",), m)
    fields(m, ("model",), ["vocab", "d_model", "context", "embed_dim", "norm", "position",
                           "head", "dropout"])  # fmt: skip
    if "vocab" not in m.spans and plan.model.vocab is not None:
        out[("model", "vocab")] = "the tokenizer's"
    if isinstance(m.position, n.Rope):
        out[("model", "position", "theta")] = at(m.position.spans.get("theta")) or "default"
    time = _time_input(spec)
    if time is not None:
        fields(time, ("model", "time"), ["num_time_steps"])
        out[("model", "time", "embedding")] = at(time.spans.get("embedding")) or "default"
    # the stacks and their blocks
    for position in range(len(plan.stacks)):
        path = ("stacks", position)
        ref = spec.grow.stacks[position] if position < len(spec.grow.stacks) else None
        opening(path, facts.stacks[position])
        if ref is not None and ref.span is not None:
            out[(*path, "name")] = at(ref.span)
        for index, block in enumerate(facts.blocks[position]):
            bpath = (*path, "blocks", index)
            opening(bpath, block)
            fields(block, bpath, ["residual_gain", "spectral_norm", "freeze_up_proj"])
            opening((*bpath, "attention"), block.attention, "attention", block)
            a = block.attention
            fields(a, (*bpath, "attention"), ["heads", "kv_heads", "mode"])
            fields(a.latent, (*bpath, "attention", "latent"), ["q_rank", "kv_rank"])
            fields(a.kernel, (*bpath, "attention", "kernel"), ["kernel", "kernel_dim"])
            out[(*bpath, "ffn")] = at(block.spans.get("ffn")) or "default"
            out[(*bpath, "ffn", "hidden")] = at(block.ffn.spans.get("hidden")) or "default"
        lora = _stack_lora_of(facts, position)
        if lora is not None:
            out[(*path, "stack_lora")] = at(lora.span)
    # the stages
    optimizer = spec.optimizer
    trunk_loras = _trunk_loras(facts)
    for index, (view, stage) in enumerate(zip(facts.stages, plan.stages, strict=True)):
        path = ("stages", index)
        s = view.settings
        opening(path, spec.fuse if view.fuse else spec.grow)
        fields(s, path, ["steps", "tokens"])
        for key in ("init", "cache"):  # unless the lowering overrules it (stage 1, fuse)
            if getattr(s, key, None) == getattr(stage, key):
                fields(s, path, [key])
        lr = s.spans.get("lr") or optimizer.spans.get("lr")
        out[(*path, "lr")] = at(lr) or "default"
        for key in ("adapter_lr", "embedding_lr"):
            own = s.spans.get(key) or optimizer.spans.get(key) or lr
            out[(*path, key)] = at(own) or "default"
        if view.fuse:
            out[(*path, "merge_adapters")] = at(s.spans.get("merge")) or "default"
        objective = s.objective if s.objective is not None else spec.objective
        where = at(s.spans.get("objective")) or at(getattr(objective, "span", None))
        if where is not None:
            out[(*path, "objective")] = where
        for k, part in enumerate(stage.parts):
            ppath = (*path, "parts", k)
            policy = s.new if part.position in view.new else s.trunk
            out[(*ppath, "precision")] = at(policy.spans.get("precision")) or "default"
            if part.position not in view.new:
                out[(*ppath, "trains")] = at(policy.spans.get("strategy")) or "default"
            if part.trunk_lora is not None and part.position in trunk_loras:
                out[(*ppath, "trunk_lora")] = at(trunk_loras[part.position][1].span)
    # data, optimizer, run
    d = spec.data
    opening(("data",), d)
    fields(d, ("data",), ["batch", "seq_len", "validation"])
    for key in ("source", "tokenizer"):
        node = getattr(d, key)
        opening(("data", key), node, key, d)
        fields(node, ("data", key))
    opening(("optimizer",), optimizer)
    fields(optimizer, ("optimizer",))
    fields(optimizer, ("optimizer", "method"), ["betas", "eps", "momentum", "nesterov"])
    opening(("run",), spec.run)
    fields(spec.run, ("run",))
    return {k: v for k, v in out.items() if v is not None}
