"""Objectives against attention modes, and noise schedules against the rack."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import pairwise

from stackwise_dsl import diagnostics as diag
from stackwise_dsl.ir import nodes as n
from stackwise_dsl.ir.enums import Direction, Mode, TimeEmbedding
from stackwise_dsl.ir.facts import Facts


def check_objective_mode(facts: Facts) -> Iterator[diag.Diagnostic]:
    """CLM needs causal attention everywhere; masked objectives want bidirectional."""
    for objective, count in _objective_reach(facts):
        for block in facts.unique_blocks(facts.order[:count]):
            mode = block.attention.mode
            if isinstance(objective, n.Clm) and mode is Mode.BIDIRECTIONAL:
                yield diag.error(
                    "SW501",
                    f"clm predicts the next token, but block `{block.name}` attends "
                    "bidirectionally: it would see the token it must predict",
                    n.at(block.attention, "mode"),
                    hint="set `mode = causal` in this block's attention",
                    notes=(diag.Note(message="the objective is set here", span=objective.span),),
                )
            elif not isinstance(objective, n.Clm) and mode is Mode.CAUSAL:
                yield diag.warning(
                    "SW502",
                    f"{objective.sw_name} fills in masked tokens from both sides, but block "
                    f"`{block.name}` is causal and sees only the left",
                    n.at(block.attention, "mode"),
                    hint="use `mode = bidirectional` for masked objectives",
                )


def _objective_reach(facts: Facts) -> list[tuple[n.Objective, int]]:
    """Each distinct objective with the most stacks (a prefix of the growth order) it trains."""
    reach: dict[int, tuple[n.Objective, int]] = {}
    for view in facts.stages:
        objective = facts.objective_of(view)
        count = view.existing + len(view.new)
        if count > reach.get(id(objective), (objective, -1))[1]:
            reach[id(objective)] = (objective, count)
    return list(reach.values())


def _diffusions(facts: Facts) -> Iterator[n.MaskedDiffusion]:
    for objective, _ in _objective_reach(facts):
        if isinstance(objective, n.MaskedDiffusion):
            yield objective


def check_depth_schedule(facts: Facts) -> Iterator[diag.Diagnostic]:
    """Time as depth: one ratio per stack, noisiest at the input side."""
    spec = facts.spec
    count = len(spec.grow.stacks)
    for objective in _diffusions(facts):
        if not isinstance(objective.time, n.DepthTime):
            continue
        mask = objective.mask
        if spec.grow.direction is Direction.END_TO_END:
            yield diag.error(
                "SW507",
                "time as depth gives each stack its own noise level, which needs stage-wise "
                "growth; end_to_end trains every stack at once",
                n.at(objective, "time"),
                hint="grow with prepend (or append), or use `time = input`",
            )
        values = mask.values if isinstance(mask, n.ExplicitSchedule) else mask.range
        if isinstance(mask, n.ExplicitSchedule) and len(values) != count:
            yield diag.warning(
                "SW503",
                f"the mask schedule lists {len(values)} ratios for {count} stacks",
                n.at(objective, "mask"),
                hint="list one ratio per stack, input side first",
            )
        rises = any(b > a for a, b in pairwise(values))
        if len(values) > 1 and (rises or values[0] == values[-1]):
            yield diag.warning(
                "SW504",
                "the noise does not decrease toward the head: "
                + " -> ".join(f"{v:g}" for v in values),
                n.at(objective, "mask"),
                hint="start noisiest at the input side, e.g. `linear(0.9 -> 0.15)`",
            )


def check_time_input(facts: Facts) -> Iterator[diag.Diagnostic]:
    """Time as input needs a time embedding, and a listed schedule fixes the time steps."""
    for objective in _diffusions(facts):
        time = objective.time
        if not isinstance(time, n.InputTime):
            continue
        if time.embedding is TimeEmbedding.NONE:
            yield diag.error(
                "SW505",
                "time as input needs a time embedding: without one the network cannot tell "
                "the noise level it is denoising",
                n.at(time, "embedding"),
                hint="use `input(embedding = sinusoidal)` or `learned`",
            )
        mask = objective.mask
        steps = time.num_time_steps
        if isinstance(mask, n.ExplicitSchedule) and steps is not None and steps != len(mask.values):
            yield diag.error(
                "SW506",
                f"num_time_steps ({steps}) differs from the {len(mask.values)} listed ratios",
                n.at(time, "num_time_steps"),
                hint="leave num_time_steps out: a listed schedule has one step per ratio",
            )
