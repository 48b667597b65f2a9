"""IR → canonical `.sw` text, such that elaborating the text gives the same IR back.

Only what differs from a default is printed; a stage override prints only what differs from
the growth's base settings, and the fuse trunk only what differs from what it inherits (the
growth trunk, with strategy `full`). Layout is left to the formatter, so the printer's output
is also what `sw fmt` would write.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

from stackwise_dsl.ir import nodes as n
from stackwise_dsl.ir.enums import Strategy
from stackwise_dsl.syntax.format import format_document, format_string

_SECTIONS = (n.Model, n.Block, n.NewPolicy, n.TrunkPolicy, n.Fuse, n.Data, n.Run)
_CADENCES = ("log_every", "eval_every", "checkpoint_every")
_NOT_PRINTED = ("span", "spans", "name")


def print_spec(spec: n.Spec) -> str:
    """The canonical text of a spec (formatted)."""
    from stackwise_dsl.syntax.parser import parse

    text = "\n".join(_spec_lines(spec)) + "\n"
    result = parse(text, "<printed>")
    if result.document is None:  # cannot happen for a well-formed IR; keep the raw text
        return text
    return format_document(result.document)


def _spec_lines(spec: n.Spec) -> list[str]:
    lines = [_section("model", spec.model, None)]
    lines += [_section(f"block {b.name}", b, None) for b in spec.blocks]
    lines += [f"stack {s.name} = {refs(s.blocks)}" for s in spec.stacks]
    lines.append(f"objective = {value(spec.objective)}")
    lines.append(_growth(spec.grow))
    if spec.fuse is not None:
        trunk = attrs.evolve(spec.grow.settings.trunk, strategy=Strategy.FULL)
        inherited = attrs.evolve(n.Fuse(), trunk=trunk)
        lines.append(_section("fuse", spec.fuse, inherited))
    if spec.data != n.Data():
        lines.append(_section("data", spec.data, None))
    if spec.optimizer != n.AdamW():
        lines.append(f"optimizer = {value(spec.optimizer)}")
    if spec.run != n.Run():
        lines.append(_section("run", spec.run, None))
    return lines


def _growth(g: n.Growth) -> str:
    body = _items(g.settings, None)
    for o in g.overrides:
        label = str(o.first) if o.first == o.last else f"{o.first}..{o.last}"
        body.append(f"stage {label} {{ {', '.join(_items(o.settings, g.settings))} }}")
    return f"grow {g.direction.value} {refs(g.stacks)} {{\n" + "\n".join(body) + "\n}"


def _section(head: str, node: Any, base: Any) -> str:
    items = _items(node, base)
    return f"{head} {{ {', '.join(items)} }}" if items else f"{head} {{}}"


def _items(node: Any, base: Any) -> list[str]:
    """The items of a section body: fields that differ from `base` (or from the defaults)."""
    out = []
    for f in attrs.fields(type(node)):
        if f.name in _NOT_PRINTED:
            continue
        v = getattr(node, f.name)
        ref = getattr(base, f.name) if base is not None else f.default
        if ref is not attrs.NOTHING and v == ref:
            continue
        out.append(_item(f.name, v, ref))
    return out


def _item(field: str, v: Any, ref: Any) -> str:
    if field == "strategy":
        return v.value
    if field in _CADENCES and v is not None:
        return f"{field.removesuffix('_every')} every {v} steps"
    if isinstance(v, _SECTIONS):
        inner = _items(v, ref if type(ref) is type(v) else None)
        return f"{field} {{ {', '.join(inner)} }}" if inner else f"{field} {{}}"
    if isinstance(v, n.Lora):
        return _call("lora", v, ref if isinstance(ref, n.Lora) else None)
    return f"{field} = {value(v)}"


def value(v: Any) -> str:
    """One value as an expression: numbers, words, strings, lists, calls."""
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return format_string(v)
    if isinstance(v, enum.Enum):
        return v.value
    if isinstance(v, tuple):
        if v and isinstance(v[0], n.Ref):
            return refs(v)
        return "[" + ", ".join(value(x) for x in v) + "]"
    if isinstance(v, n.Attention):
        return _attention(v)
    if isinstance(v, n.ExplicitSchedule):
        return value(v.values)
    return _call(v.sw_name, v, None)


def _call(name: str, node: Any, base: Any) -> str:
    positional = getattr(node, "sw_positional", None)
    args = []
    for f in attrs.fields(type(node)):
        if f.name in _NOT_PRINTED:
            continue
        v = getattr(node, f.name)
        ref = getattr(base, f.name) if base is not None else f.default
        if ref is not attrs.NOTHING and v == ref:
            continue
        if f.name == positional and f.name == "range":
            args.append(f"{value(v[0])} -> {value(v[1])}")
        else:
            args.append(f"{f.name} = {value(v)}")
    return f"{name}({', '.join(args)})" if args else name


def _attention(a: n.Attention) -> str:
    args = [f"heads = {a.heads}"]
    if a.latent is not None:
        name = "mla"
        args += [f"q_rank = {a.latent.q_rank}", f"kv_rank = {a.latent.kv_rank}"]
    elif a.kernel is not None:
        name = "kernel"
    else:
        name = "gqa" if a.kv_heads != a.heads else "mha"
    if a.kv_heads != a.heads:
        args.append(f"kv_heads = {a.kv_heads}")
    if a.kernel is not None:
        args += [f"kernel = {a.kernel.kernel.value}", f"kernel_dim = {a.kernel.kernel_dim}"]
    args.append(f"mode = {a.mode.value}")
    return f"{name}({', '.join(args)})"


def refs(rs: tuple[n.Ref, ...]) -> str:
    """Names with runs collapsed: (a, a, b) → `2 x a + b`."""
    runs: list[list] = []
    for r in rs:
        if runs and runs[-1][0] == r.name:
            runs[-1][1] += 1
        else:
            runs.append([r.name, 1])
    if not runs:
        return "[]"
    return " + ".join(name if k == 1 else f"{k} x {name}" for name, k in runs)
