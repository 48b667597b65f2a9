"""Facts derived from a spec once, for every check (and the plan) to read in O(1).

`Facts.of(spec, host)` indexes the rack (the stack and blocks at each position), the order
in which stacks are created, and one `StageView` per stage. Views slice the growth order
lazily, so building them is linear in the number of stages however large the trunk grows.
"""

from __future__ import annotations

from typing import Any

import attrs

from stackwise_dsl.ir import nodes as n
from stackwise_dsl.ir.enums import Direction, Init
from stackwise_dsl.machine.host import CPU_ONLY, Host


@attrs.frozen(kw_only=True)
class StageView:
    """One stage: the rack positions it creates (`new`) and those that exist (`trunk`)."""

    number: int  # 1-based; the fuse stage is number stage_count + 1
    settings: Any  # StageSettings, or Fuse for the fuse stage
    new: tuple[int, ...]
    order: tuple[int, ...] = attrs.field(repr=False)  # positions in creation order
    existing: int  # how many of `order` exist when the stage starts
    fuse: bool = False

    @property
    def trunk(self) -> tuple[int, ...]:
        return self.order[: self.existing]

    @property
    def name(self) -> str:
        return "the fuse stage" if self.fuse else f"stage {self.number}"


@attrs.frozen(kw_only=True)
class Facts:
    """A spec with its lookups precomputed; build with `Facts.of`."""

    spec: n.Spec
    host: Host
    order: tuple[int, ...]  # rack positions (0 = input side) in creation order
    created: tuple[
        int, ...
    ]  # per position: its 1-based index in creation order (end_to_end: rack order)
    stacks: tuple[n.Stack | None, ...]  # per position; None where the name is undefined
    blocks: tuple[tuple[n.Block, ...], ...]  # per position: its defined blocks, in order
    stages: tuple[StageView, ...]

    @classmethod
    def of(cls, spec: n.Spec, host: Host = CPU_ONLY) -> Facts:
        blocks_by_name = {b.name: b for b in spec.blocks}
        stacks_by_name = {s.name: s for s in spec.stacks}
        stacks = tuple(stacks_by_name.get(r.name) for r in spec.grow.stacks)
        blocks = tuple(
            tuple(blocks_by_name[r.name] for r in s.blocks if r.name in blocks_by_name)
            if s is not None
            else ()
            for s in stacks
        )
        order = _growth_order(spec.grow)
        created = [0] * len(order)
        for k, position in enumerate(order, start=1):
            created[position] = k
        return cls(
            spec=spec,
            host=host,
            order=order,
            created=tuple(created),
            stacks=stacks,
            blocks=blocks,
            stages=_stage_views(spec, order),
        )

    def objective_of(self, view: StageView) -> n.Objective:
        return view.settings.objective or self.spec.objective

    def unique_blocks(self, positions) -> list[n.Block]:
        """The distinct blocks (by name) at the given positions, in first-seen order."""
        seen: dict[str, n.Block] = {}
        for p in positions:
            for b in self.blocks[p]:
                seen.setdefault(b.name, b)
        return list(seen.values())


def _growth_order(grow: n.Growth) -> tuple[int, ...]:
    count = len(grow.stacks)
    if grow.direction is Direction.PREPEND:
        return tuple(range(count - 1, -1, -1))
    return tuple(range(count))


def stage_settings(grow: n.Growth) -> list[n.StageSettings]:
    """Settings of stages 1..N: each stage's first override, or the base settings (overlaps
    are reported by SW408); linear in the number of stages."""
    count = grow.stage_count
    settings: list[n.StageSettings | None] = [None] * count
    for o in grow.overrides:
        for k in range(max(o.first, 1), min(o.last, count) + 1):
            if settings[k - 1] is None:
                settings[k - 1] = o.settings
    return [s if s is not None else grow.settings for s in settings]


def _stage_views(spec: n.Spec, order: tuple[int, ...]) -> tuple[StageView, ...]:
    grow = spec.grow
    settings = stage_settings(grow)
    if grow.direction is Direction.END_TO_END:
        views = [StageView(number=1, settings=settings[0], new=order, order=order, existing=0)]
    else:
        views = [
            StageView(
                number=k, settings=settings[k - 1], new=(order[k - 1],), order=order, existing=k - 1
            )
            for k in range(1, grow.stage_count + 1)
        ]
    if spec.fuse is not None:
        views.append(
            StageView(
                number=grow.stage_count + 1,
                settings=spec.fuse,
                new=(),
                order=order,
                existing=len(order),
                fuse=True,
            )
        )
    return tuple(views)


def copy_source(direction: Direction, view: StageView) -> int:
    """The rack position a `copy` or `middle` stage copies into its new stack: the new
    stack's trunk neighbour, or the trunk's middle stack (the upper of two middles)."""
    if view.settings.init is Init.MIDDLE:
        trunk = sorted(view.trunk)
        return trunk[len(trunk) // 2]
    return view.new[0] + (1 if direction is Direction.PREPEND else -1)
