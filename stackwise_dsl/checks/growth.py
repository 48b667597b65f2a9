"""The growth schedule: stages exist, say how long they run, and mean what they say."""

from __future__ import annotations

from collections.abc import Iterator

from stackwise_dsl import diagnostics as diag
from stackwise_dsl.checks.host import Host
from stackwise_dsl.ir import nodes as n
from stackwise_dsl.ir.enums import Cache, Direction, Embeddings, Init, Strategy
from stackwise_dsl.ir.walk import blocks_at, growth_order, stages


def check_growth_stacks(spec: n.Spec, host: Host) -> Iterator[diag.Diagnostic]:
    """A growth adds at least one stack."""
    if not spec.grow.stacks:
        yield diag.error(
            "SW413",
            "the growth adds no stacks",
            n.at(spec.grow, "stacks"),
            hint="name the stacks: `grow append 4 x s { ... }`",
        )


def check_stage_overrides(spec: n.Spec, host: Host) -> Iterator[diag.Diagnostic]:
    """`stage N` overrides address existing stages, and no stage is overridden twice."""
    count = spec.grow.stage_count
    claimed: dict[int, n.StageOverride] = {}
    for o in spec.grow.overrides:
        if o.last > count:
            what = (
                "stage" if spec.grow.direction is Direction.END_TO_END else "stages (one per stack)"
            )
            yield diag.error(
                "SW404",
                f"stage {o.last} is beyond this growth's {count} {what}",
                o.span,
                hint=f"stages run from 1 to {count}",
                notes=(
                    diag.Note(message="the stacks are listed here", span=n.at(spec.grow, "stacks")),
                ),
            )
        for k in range(o.first, min(o.last, count) + 1):
            if k in claimed:
                yield diag.error(
                    "SW408",
                    f"stage {k} is overridden twice",
                    o.span,
                    hint="merge the two `stage` blocks, or make their ranges disjoint",
                    notes=(diag.Note(message="also overridden here", span=claimed[k].span),),
                )
                break
            claimed[k] = o


def check_steps_or_tokens(spec: n.Spec, host: Host) -> Iterator[diag.Diagnostic]:
    """Every stage states its length: steps or tokens, exactly one."""
    for view in stages(spec):
        s = view.settings
        where = "the fuse stage" if view.fuse else f"stage {view.number}"
        if s.steps is None and s.tokens is None:
            yield diag.error(
                "SW407",
                f"{where} states neither `steps` nor `tokens`",
                s.span,
                hint="add `steps = 1k` (or `tokens = 10M`)",
            )
        elif s.steps is not None and s.tokens is not None:
            yield diag.error(
                "SW407",
                f"{where} states both `steps` and `tokens`",
                n.at(s, "tokens"),
                hint="keep one of them",
            )


def check_end_to_end_settings(spec: n.Spec, host: Host) -> Iterator[diag.Diagnostic]:
    """In end-to-end growth every stack is new: trunk, cache and init settings do nothing."""
    if spec.grow.direction is not Direction.END_TO_END:
        return
    defaults = n.StageSettings()
    for view in stages(spec):
        s = view.settings
        if view.fuse:
            continue
        for field, default in (
            ("trunk", defaults.trunk),
            ("cache", Cache.OFF),
            ("init", Init.RANDOM),
        ):
            if getattr(s, field) != default:
                yield diag.warning(
                    "SW410",
                    f"`{field}` has no effect in end_to_end growth: every stack is new",
                    n.at(s, field),
                    hint=f"remove `{field}`, or grow with append or prepend",
                )


def check_copy_init(spec: n.Spec, host: Host) -> Iterator[diag.Diagnostic]:
    """`init = copy` copies the neighbouring trunk stack, which must have the same blocks."""
    grow = spec.grow
    if grow.direction is Direction.END_TO_END:
        return
    order = growth_order(grow)
    for view in stages(spec):
        if view.fuse or view.number == 1 or view.settings.init is not Init.COPY:
            continue
        new = view.new[0]
        neighbour = new + 1 if grow.direction is Direction.PREPEND else new - 1
        shape = _shape(blocks_at(spec, new))
        if neighbour in order[: view.number - 1] and shape != _shape(blocks_at(spec, neighbour)):
            yield diag.error(
                "SW411",
                f"stage {view.number} copies `{grow.stacks[neighbour].name}` into "
                f"`{grow.stacks[new].name}`, but their blocks differ",
                n.at(view.settings, "init"),
                hint="use `init = random` or `init = identity` for this stage",
            )


def _shape(blocks: tuple[n.Block, ...]) -> tuple:
    """Blocks compared by what they compute, not by name."""
    return tuple(
        (b.attention, b.ffn, b.residual_gain, b.spectral_norm, b.freeze_up_proj) for b in blocks
    )


def check_something_trains(spec: n.Spec, host: Host) -> Iterator[diag.Diagnostic]:
    """A fuse stage trains something; an `adapters` trunk has adapters to train."""
    for view in stages(spec):
        s = view.settings
        if view.fuse and s.trunk.strategy is Strategy.FROZEN and s.embeddings is Embeddings.FROZEN:
            yield diag.error(
                "SW412",
                "the fuse stage freezes the trunk and the embeddings: nothing would train",
                n.at(s.trunk, "strategy"),
                hint="fuse with `trunk { full }` or `trunk { adapters }`",
            )
        has_adapters = s.trunk.lora is not None or _stack_lora(spec) is not None
        if view.trunk and s.trunk.strategy is Strategy.ADAPTERS and not has_adapters:
            where = "the fuse stage" if view.fuse else f"stage {view.number}"
            yield diag.error(
                "SW412",
                f"{where} trains the trunk's adapters, but the trunk has none",
                n.at(s.trunk, "strategy"),
                hint="add `lora(rank = 8)` to `trunk { ... }` or to `new { ... }`",
            )


def _stack_lora(spec: n.Spec) -> n.Lora | None:
    """The stack LoRA of the first stage that has one."""
    for view in stages(spec):
        if not view.fuse and view.settings.new.lora is not None:
            return view.settings.new.lora
    return None
