"""Names: every block and stack used is defined, and every one defined is used."""

from __future__ import annotations

from collections.abc import Iterator

from stackwise_dsl import diagnostics as diag
from stackwise_dsl.elaborate.suggest import suggestion
from stackwise_dsl.ir import nodes as n
from stackwise_dsl.ir.facts import Facts


def check_references(facts: Facts) -> Iterator[diag.Diagnostic]:
    """Stacks name defined blocks; the growth names defined stacks."""
    spec = facts.spec
    blocks = {b.name for b in spec.blocks}
    stacks = {s.name for s in spec.stacks}
    for s in spec.stacks:
        for ref in s.blocks:
            if ref.name not in blocks:
                yield _undefined(ref, "block", blocks, other=stacks)
    reported: set[str] = set()
    for ref in spec.grow.stacks:
        if ref.name not in stacks and ref.name not in reported:
            reported.add(ref.name)
            yield _undefined(ref, "stack", stacks, other=blocks)


def _undefined(ref: n.Ref, kind: str, names: set[str], other: set[str]) -> diag.Diagnostic:
    if ref.name in other:
        hint = (
            f"`{ref.name}` is a stack; a stack is made of blocks"
            if kind == "block"
            else f"`{ref.name}` is a block; grow stacks of it: `stack s = 1 x {ref.name}`"
        )
    else:
        fix = suggestion(ref.name, names, otherwise=f"define it: `{kind} {ref.name} ...`")
        return diag.error("SW106", f"no {kind} is named `{ref.name}`", ref.span, **fix)
    return diag.error("SW106", f"no {kind} is named `{ref.name}`", ref.span, hint=hint)


def check_unused_definitions(facts: Facts) -> Iterator[diag.Diagnostic]:
    """A block no stack uses, or a stack the growth never adds, is probably a mistake."""
    spec = facts.spec
    used_stacks = {r.name for r in spec.grow.stacks}
    used_blocks = {r.name for s in spec.stacks for r in s.blocks}
    for b in spec.blocks:
        if b.name not in used_blocks:
            yield diag.warning(
                "SW107",
                f"block `{b.name}` is never used by a stack",
                b.span,
                hint="use it in a stack, or remove it",
            )
    for s in spec.stacks:
        if s.name not in used_stacks:
            yield diag.warning(
                "SW107",
                f"stack `{s.name}` is never grown",
                s.span,
                hint="add it to `grow`, or remove it",
            )
