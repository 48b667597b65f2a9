"""Attention constructors: mha, gqa, mla, kernel, and the original framework's presets.

Every constructor builds the same `ir.Attention` node along its independent axes (head
sharing, latent, kernel, mode), so `bert_style(heads = 8)` and `mha(heads = 8)` are the same
IR, and `mlgka` is MLA + GQA + a laplacian kernel at once.
"""

from __future__ import annotations

from typing import Any

import attrs

from stackwise_dsl import diagnostics as diag
from stackwise_dsl.elaborate.suggest import closest, one_of, suggestion
from stackwise_dsl.elaborate.values import INVALID, Record, Sym, Value
from stackwise_dsl.ir import nodes as n
from stackwise_dsl.ir.enums import KernelKind, Mode


@attrs.frozen
class Constructor:
    """A way to write attention: the arguments it takes, requires, and fixes."""

    name: str
    summary: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ("mode",)
    fixed: dict[str, Any] = attrs.field(factory=dict)

    @property
    def params(self) -> tuple[str, ...]:
        return self.required + self.optional


_LATENT = ("q_rank", "kv_rank")
_KERNEL = ("kernel", "kernel_dim")

CONSTRUCTORS = {
    c.name: c
    for c in (
        Constructor(name="mha", summary="multi-head attention", required=("heads",)),
        Constructor(name="gqa", summary="grouped-query attention", required=("heads", "kv_heads")),
        Constructor(
            name="mla",
            summary="low-rank latent attention (DeepSeek-V2)",
            required=("heads", *_LATENT),
            optional=("kv_heads", *_KERNEL, "mode"),
        ),
        Constructor(
            name="kernel",
            summary="random-feature kernel attention, linear time",
            required=("heads", *_KERNEL),
            optional=("kv_heads", "mode"),
        ),
        Constructor(
            name="bert_style",
            summary="preset: mha, bidirectional",
            required=("heads",),
            optional=(),
            fixed={"mode": Mode.BIDIRECTIONAL},
        ),
        Constructor(
            name="gpt_style",
            summary="preset: mha, causal",
            required=("heads",),
            optional=(),
            fixed={"mode": Mode.CAUSAL},
        ),
        Constructor(name="efficient_gqa", summary="preset: gqa", required=("heads", "kv_heads")),
        Constructor(name="mla_attention", summary="preset: mla", required=("heads", *_LATENT)),
        Constructor(
            name="kernel_attention",
            summary="preset: kernel attention, gaussian unless told otherwise",
            required=("heads", "kernel_dim"),
            optional=("kernel", "mode"),
            fixed={"kernel": KernelKind.GAUSSIAN},
        ),
        Constructor(
            name="mlgka",
            summary="preset: mla + gqa + laplacian kernel",
            required=("heads", "kv_heads", *_LATENT, "kernel_dim"),
            fixed={"kernel": KernelKind.LAPLACIAN},
        ),
    )
}

_TYPES = {
    "heads": int,
    "kv_heads": int,
    "q_rank": int,
    "kv_rank": int,
    "kernel_dim": int,
    "kernel": KernelKind,
    "mode": Mode,
}


def build_attention(v: Value, conv, where: str) -> Any:
    """An `ir.Attention` from a constructor call, or INVALID (reported)."""
    if not isinstance(v, Record | Sym):
        return conv._type_error(
            v, f"an attention such as {one_of(['mha(...)', 'gqa(...)'])}", where
        )
    ctor = CONSTRUCTORS.get(v.name)
    if ctor is None:
        message = f"`{v.name}` is not an attention kind; expected {one_of(CONSTRUCTORS)}"
        conv.report(diag.error("SW105", message, v.span, **suggestion(v.name, CONSTRUCTORS)))
        return INVALID
    entries = v.entries if isinstance(v, Record) else ()
    values, spans = {}, {}
    for e in entries:
        if e.key not in ctor.params:
            conv.report(_unknown(e, ctor))
            continue
        converted = conv.value(e.value, _TYPES[e.key], f"{v.name}.{e.key}")
        if converted is not INVALID:
            values[e.key], spans[e.key] = converted, e.value.span
        else:  # reported; no default may stand in for it in the semantic checks
            conv.complete = False
    missing = [p for p in ctor.required if p not in values]
    if missing:
        given = {e.key for e in entries} | {closest(e.key, ctor.params) for e in entries}
        unexplained = [p for p in missing if p not in given]
        if unexplained:
            record = v if isinstance(v, Record) else Record(name=v.name, entries=(), span=v.span)
            conv._missing(unexplained, record, v.name)
        conv.complete = False
        return INVALID
    return _assemble(ctor, {**ctor.fixed, **values}, spans, v.span)


def _assemble(ctor: Constructor, values: dict, spans: dict, span) -> n.Attention:
    latent = kernel = None
    if "q_rank" in values:
        latent = n.Latent(
            q_rank=values["q_rank"],
            kv_rank=values["kv_rank"],
            span=span,
            spans={k: spans[k] for k in _LATENT if k in spans},
        )
    if "kernel_dim" in values:
        kernel = n.KernelFeatures(
            kernel=values.get("kernel", KernelKind.GAUSSIAN),
            kernel_dim=values["kernel_dim"],
            span=span,
            spans={k: spans[k] for k in _KERNEL if k in spans},
        )
    heads = values["heads"]
    return n.Attention(
        heads=heads,
        kv_heads=values.get("kv_heads", heads),
        mode=values.get("mode", Mode.BIDIRECTIONAL),
        latent=latent,
        kernel=kernel,
        span=span,
        spans={k: s for k, s in spans.items() if k in ("heads", "kv_heads", "mode")},
    )


def _unknown(e, ctor: Constructor) -> diag.Diagnostic:
    owners = [c.name for c in CONSTRUCTORS.values() if e.key in c.params and c.name != ctor.name]
    if owners:
        hint = f"`{e.key}` belongs to {one_of(owners[:3])}"
    else:
        fix = suggestion(e.key, ctor.params, otherwise=f"`{ctor.name}` takes {one_of(ctor.params)}")
        return diag.error("SW101", f"`{ctor.name}` has no argument `{e.key}`", e.key_span, **fix)
    return diag.error("SW101", f"`{ctor.name}` has no argument `{e.key}`", e.key_span, hint=hint)
