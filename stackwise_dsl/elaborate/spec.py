"""The top-level record → `ir.Spec`: sections, definitions, growth and its stage overrides."""

from __future__ import annotations

from typing import Any

from stackwise_dsl import diagnostics as diag
from stackwise_dsl.elaborate.combine import override
from stackwise_dsl.elaborate.schema import INVALID, Converter
from stackwise_dsl.elaborate.suggest import one_of, suggestion
from stackwise_dsl.elaborate.values import Entry, Record, Sym, Value
from stackwise_dsl.ir import nodes as n
from stackwise_dsl.ir.enums import Direction

# Top-level items: the field of `ir.Spec` each fills and the type it holds.
_PARTS: dict[str, Any] = {
    "model": n.Model,
    "objective": n.Objective,
    "grow": n.Growth,
    "fuse": n.Fuse,
    "data": n.Data,
    "optimizer": n.Optimizer,
    "run": n.Run,
}
_SECTIONS = ("model", "fuse", "data", "run")
_REQUIRED = ("model", "objective", "grow")
_WORDS = (*_PARTS, "block", "stack", "let", "include", "extends")


def build_spec(root: Record, conv: Converter) -> n.Spec | None:
    """The spec, or None when a required part is missing or cannot be built."""
    parts: dict[str, Any] = {}
    blocks: list[n.Block] = []
    stacks: list[n.Stack] = []
    for e in root.entries:
        if e.key == "block":
            blocks.append(_block(e, conv))
        elif e.key == "stack":
            stacks.append(_stack(e, conv))
        elif e.key == "fuse":
            parts["fuse"] = _part(_inherit_trunk(e, root.get("grow")), conv)
        elif e.key in _PARTS:
            parts[e.key] = _part(e, conv)
        elif e.key != "stage":  # a misplaced stage was reported while evaluating
            conv.report(_unknown_item(e))
    missing = [key for key in _REQUIRED if key not in parts]
    if missing:
        conv.complete = False
        conv.report(_missing_parts(missing, root))
    if not conv.complete or any(p is INVALID for p in parts.values()):
        conv.complete = False
        return None
    parts = {k: v for k, v in parts.items() if v is not None}
    return n.Spec(
        blocks=tuple(b for b in blocks if b is not INVALID),
        stacks=tuple(s for s in stacks if s is not INVALID),
        span=root.span,
        **parts,
    )


def _part(e: Entry, conv: Converter) -> Any:
    if e.key == "fuse" and isinstance(e.value, Sym) and e.value.name == "none":
        return None  # `fuse = none`: a spec that extends another drops its fuse stage
    if e.key in _SECTIONS and not (isinstance(e.value, Record) and e.value.name == e.key):
        conv.report(
            diag.error("SW104", f"`{e.key}` is a section: write `{e.key} {{ ... }}`", e.key_span)
        )
        return INVALID if e.key == "model" else None
    if e.key == "grow":
        return build_growth(e.value, conv)
    result = conv.value(e.value, _PARTS[e.key], e.key)
    return None if result is INVALID and e.key not in _REQUIRED else result


def _inherit_trunk(fuse: Entry, grow: Entry | None) -> Entry:
    """The fuse stage keeps the growth trunk's precision and adapters unless it says otherwise;
    its strategy is `full` unless it says otherwise (never growth's)."""
    if not isinstance(fuse.value, Record):
        return fuse
    kept: tuple[Entry, ...] = ()
    trunk = grow.value.get("trunk") if grow is not None and isinstance(grow.value, Record) else None
    if trunk is not None and isinstance(trunk.value, Record):
        kept = tuple(e for e in trunk.value.entries if e.key != "strategy")
    full = Entry(key="strategy", value=Sym(name="full"))
    inherited = Record(name="trunk", entries=(full, *kept), span=fuse.value.span)
    base = Record(name="fuse", entries=(Entry(key="trunk", value=inherited),), span=fuse.value.span)
    return Entry(key="fuse", value=override(base, fuse.value), key_span=fuse.key_span)


def _block(e: Entry, conv: Converter) -> Any:
    return conv.build(n.Block, e.value, f"block {e.label}", fixed={"name": e.label})


def _stack(e: Entry, conv: Converter) -> Any:
    refs = conv.value(e.value, tuple[n.Ref, ...], f"stack {e.label}")
    if refs is INVALID:  # reported; its name is no "undefined stack" and its blocks no "unused"
        conv.complete = False
        return INVALID
    if not refs:  # `0 x b`: a stack of nothing
        said = f"stack `{e.label}` holds no block; a stack is one or more blocks"
        conv.report(diag.error("SW109", said, e.value.span, hint=f"write `1 x ...` (or drop "
                               f"stack `{e.label}`)"))  # fmt: skip
        conv.complete = False  # defined, so not "undefined" where it is grown; never built
    return n.Stack(name=e.label, blocks=refs, span=e.key_span, spans={"blocks": e.value.span})


def build_growth(v: Value, conv: Converter) -> Any:
    """`grow DIRECTION STACKS { settings; stage N { ... } }` → `ir.Growth`."""
    if not isinstance(v, Record) or v.name != "grow":
        return conv._type_error(v, "`grow DIRECTION STACKS { ... }`", "grow")
    head = {e.key: e for e in v.entries if e.key in ("direction", "stacks")}
    if "stacks" not in head:
        conv.complete = False
        conv.report(
            diag.error(
                "SW103",
                "`grow` needs the stacks it grows",
                v.span,
                hint="write them after the direction: `grow prepend 6 x s { ... }`",
            )
        )
        return INVALID
    direction = conv.value(head["direction"].value, Direction, "grow direction")
    stacks = conv.value(head["stacks"].value, tuple[n.Ref, ...], "grow stacks")
    base = Record(
        name="grow",
        entries=tuple(e for e in v.entries if e.key not in ("direction", "stacks", "stage")),
        span=v.span,
    )
    settings = conv.build(n.StageSettings, base, "grow")
    overrides = tuple(_override(e, base, conv) for e in v.all("stage"))
    if INVALID in (direction, stacks, settings) or INVALID in overrides:
        conv.complete = False
        return INVALID
    return n.Growth(
        direction=direction,
        stacks=stacks,
        settings=settings,
        overrides=overrides,
        span=v.span,
        spans={"direction": head["direction"].value.span, "stacks": head["stacks"].value.span},
    )


def _override(e: Entry, base: Record, conv: Converter) -> Any:
    first, _, last = e.label.partition("..")
    combined = override(base, e.value)
    settings = conv.build(n.StageSettings, combined, f"stage {e.label}")
    if settings is INVALID:
        return INVALID
    return n.StageOverride(
        first=int(first), last=int(last or first), settings=settings, span=e.key_span
    )


def _unknown_item(e: Entry) -> diag.Diagnostic:
    fix = suggestion(e.key, _WORDS, otherwise=f"a spec holds {one_of(_WORDS)}")
    return diag.error("SW101", f"unknown item `{e.key}`", e.key_span, **fix)


_EXAMPLES = {
    "model": "model { d_model = 256, context = 128 }",
    "objective": "objective = clm",
    "grow": "grow append 4 x s { steps = 100 }",
}


def _missing_parts(missing: list[str], root: Record) -> diag.Diagnostic:
    """One diagnostic for every required part that is absent (they share no location)."""
    hint = "add " + " and ".join(f"`{_EXAMPLES[k]}`" for k in missing)
    return diag.error("SW103", f"the spec has no {one_of(missing)}", root.span, hint=hint)
