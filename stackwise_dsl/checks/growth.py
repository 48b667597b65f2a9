"""The growth schedule: stages exist, say how long they run, and mean what they say."""

from __future__ import annotations

from collections.abc import Iterator

from stackwise_dsl import diagnostics as diag
from stackwise_dsl.ir import nodes as n
from stackwise_dsl.ir.enums import Direction, Embeddings, Init, Strategy
from stackwise_dsl.ir.facts import Facts, copy_source


def check_growth_stacks(facts: Facts) -> Iterator[diag.Diagnostic]:
    """A growth adds at least one stack."""
    grow = facts.spec.grow
    if not grow.stacks:
        yield diag.error(
            "SW413",
            "the growth adds no stacks",
            n.at(grow, "stacks"),
            hint="name the stacks: `grow append 4 x s { ... }`",
        )


def check_stage_overrides(facts: Facts) -> Iterator[diag.Diagnostic]:
    """`stage N` overrides address existing stages, and no stage is overridden twice."""
    grow = facts.spec.grow
    count = grow.stage_count
    claimed: list[tuple[int, int, n.StageOverride]] = []
    for o in grow.overrides:
        if o.last > count:
            what = "stage" if grow.direction is Direction.END_TO_END else "stages (one per stack)"
            yield diag.error(
                "SW404",
                f"stage {o.last} is beyond this growth's {count} {what}",
                o.span,
                hint=f"stages run from 1 to {count}",
                notes=(diag.Note(message="the stacks are listed here", span=n.at(grow, "stacks")),),
            )
        clash = next((c for c in claimed if c[0] <= o.last and o.first <= c[1]), None)
        if clash is not None:
            k = max(o.first, clash[0])
            yield diag.error(
                "SW408", f"stage {k} is overridden twice", o.span,
                hint="merge the two `stage` blocks, or make their ranges disjoint",
                notes=(diag.Note(message="also overridden here", span=clash[2].span),),
            )  # fmt: skip
        claimed.append((o.first, o.last, o))


def check_steps_or_tokens(facts: Facts) -> Iterator[diag.Diagnostic]:
    """Every stage states its length: steps or tokens (or, for the fuse stage, its share of
    all steps), exactly one."""
    for view in facts.stages:
        s = view.settings
        share = getattr(s, "share", None)
        given = [k for k, v in (("steps", s.steps), ("tokens", s.tokens), ("share", share))
                 if v is not None]  # fmt: skip
        if not given:
            extra = " (or `share = 0.1` of all steps)" if view.fuse else ""
            yield diag.error(
                "SW407",
                f"{view.name} states neither `steps` nor `tokens`",
                s.span,
                hint=f"add `steps = 1k` (or `tokens = 10M`){extra}",
            )
        elif len(given) > 1:
            yield diag.error(
                "SW407",
                f"{view.name} states both `{given[0]}` and `{given[1]}`",
                n.at(s, given[1]),
                hint="keep one of them",
            )
        elif share == 0:
            yield diag.error(
                "SW407",
                "the fuse stage's `share` of all steps is 0: it would not train",
                n.at(s, "share"),
                hint="give a share above 0 (0.1 is a tenth of all steps), or remove `fuse`",
            )


def check_end_to_end_settings(facts: Facts) -> Iterator[diag.Diagnostic]:
    """In end-to-end growth every stack is new: trunk, cache, init and top do nothing (but
    `init = pretrained`, which starts the stacks from a pretrained model's layers)."""
    if facts.spec.grow.direction is not Direction.END_TO_END:
        return
    defaults = n.StageSettings()
    for view in facts.stages:
        if view.fuse:
            continue
        for field in ("trunk", "cache", "init", "top"):
            if field == "init" and view.settings.init is Init.PRETRAINED:
                continue
            if getattr(view.settings, field) != getattr(defaults, field):
                yield diag.warning(
                    "SW410",
                    f"`{field}` has no effect in end_to_end growth: every stack is new",
                    n.at(view.settings, field),
                    hint=f"remove `{field}`, or grow with append or prepend",
                )


def check_top_size(facts: Facts) -> Iterator[diag.Diagnostic]:
    """`top = N` asks more of the trunk than it ever holds: the excess does nothing."""
    if facts.spec.grow.direction is Direction.END_TO_END:
        return
    # by where `top` is written (a stage override inherits the growth's): (settings, most
    # trunk stacks, in which stage)
    largest: dict = {}
    for view in facts.stages:
        if view.fuse:
            continue
        where = n.at(view.settings, "top")
        _, most, _ = largest.get(where, (None, -1, 0))
        if view.existing > most:
            largest[where] = (view.settings, view.existing, view.number)
    for settings, most, stage in largest.values():
        if settings.top > most:
            whole = f"{most} stack{'s' if most != 1 else ''}, in stage {stage}" if most else "none"
            yield diag.warning(
                "SW410",
                f"`top = {settings.top}` keeps more trunk stacks training than the trunk ever "
                f"holds ({whole}): the excess has no effect",
                n.at(settings, "top"),
                hint=f"write `top = {most}`, or `trunk {{ full }}` to train the whole trunk"
                if most
                else "remove `top`: no stage here has a trunk",
            )


def check_copy_init(facts: Facts) -> Iterator[diag.Diagnostic]:
    """`init = copy` (`middle`) copies the neighbouring (middle) trunk stack, which must have
    the same blocks."""
    grow = facts.spec.grow
    if grow.direction is Direction.END_TO_END:
        return
    for view in facts.stages:
        if view.fuse or view.number == 1:
            continue
        if view.settings.init is not Init.COPY and view.settings.init is not Init.MIDDLE:
            continue
        new = view.new[0]
        neighbour = copy_source(grow.direction, view)
        if _shape(facts.blocks[new]) != _shape(facts.blocks[neighbour]):
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


def check_something_trains(facts: Facts) -> Iterator[diag.Diagnostic]:
    """A fuse stage trains something; an `adapters` trunk has adapters to train."""
    has_stack_lora = any(not v.fuse and v.settings.new.lora is not None for v in facts.stages)
    for view in facts.stages:
        s = view.settings
        if view.fuse and s.trunk.strategy is Strategy.FROZEN and s.embeddings is Embeddings.FROZEN:
            yield diag.error(
                "SW412",
                "the fuse stage freezes the trunk and the embeddings: nothing would train",
                n.at(s.trunk, "strategy"),
                hint="fuse with `trunk { full }` or `trunk { adapters }`",
            )
        has_adapters = s.trunk.lora is not None or has_stack_lora
        if view.existing and s.trunk.strategy is Strategy.ADAPTERS and not has_adapters:
            yield diag.error(
                "SW412",
                f"{view.name} trains the trunk's adapters, but the trunk has none",
                n.at(s.trunk, "strategy"),
                hint="add `lora(rank = 8)` to `trunk { ... }` or to `new { ... }`",
            )


def check_recompute_spectral_norm(facts: Facts) -> Iterator[diag.Diagnostic]:
    """Recomputing a spectrally normalised block runs its power iteration a second time in
    the backward pass, so the numbers would change; refused (once per place it is set)."""
    said = set()
    for view in facts.stages:
        if not view.settings.recompute:
            continue
        where = n.at(view.settings, "recompute")
        normed = [b for position in (*view.trunk, *view.new) for b in facts.blocks[position]
                  if b.spectral_norm]  # fmt: skip
        if normed and where not in said:
            said.add(where)
            yield diag.error(
                "SW418",
                f"stage {view.number} recomputes its blocks in the backward pass, but block "
                f"`{normed[0].name}` is spectrally normalised: its power iteration would run "
                "twice a step and change the numbers",
                where,
                hint="drop `recompute`, or `spectral_norm` from the block",
            )


def check_identity_init(facts: Facts) -> Iterator[diag.Diagnostic]:
    """`init = identity` zeroes output projections, which spectral norm cannot normalise."""
    for view in facts.stages:
        if view.fuse or view.settings.init is not Init.IDENTITY:
            continue
        for position in view.new:
            for block in facts.blocks[position]:
                if block.spectral_norm:
                    yield diag.error(
                        "SW414",
                        f"stage {view.number} starts block `{block.name}` as the identity, but "
                        "its layers are spectrally normalised: a zero matrix has no spectral norm",
                        n.at(view.settings, "init"),
                        hint="use `init = random` or `init = copy`, or drop `spectral_norm`",
                    )
