"""Activation caching is valid only while the cached part cannot change."""

from __future__ import annotations

from collections.abc import Iterator

from stackwise_dsl import diagnostics as diag
from stackwise_dsl.ir import nodes as n
from stackwise_dsl.ir.enums import Cache, Direction, Embeddings, Strategy
from stackwise_dsl.ir.facts import Facts


def check_activation_cache(facts: Facts) -> Iterator[diag.Diagnostic]:
    """Caching the trunk's output needs append growth and a frozen trunk."""
    direction = facts.spec.grow.direction
    for view in facts.stages:
        s = view.settings
        if view.fuse or s.cache is Cache.OFF or direction is Direction.END_TO_END:
            continue
        if direction is Direction.PREPEND:
            yield diag.error(
                "SW403",
                f"stage {view.number} caches activations, but prepend growth trains the new "
                "stack through the frozen suffix: the suffix's input changes every step",
                n.at(s, "cache"),
                hint="remove `cache`; hold the suffix in low precision and set `recompute = true`",
            )
        elif _random_noise(facts.objective_of(view)):
            yield diag.error(
                "SW403",
                f"stage {view.number} caches the trunk's output, but time as input corrupts "
                "each batch at a random noise level: the trunk's input changes every step",
                n.at(s, "cache"),
                hint="use `time = depth`, or set `cache = off`",
            )
        elif s.embeddings is Embeddings.TRAIN and view.existing:
            yield diag.error(
                "SW403",
                f"stage {view.number} caches the trunk's output, which includes the embedding, "
                "but asks for `embeddings = train`: the cache would be stale",
                n.at(s, "embeddings"),
                hint="leave `embeddings` out (the cache keeps the input side frozen), or set "
                "`cache = off`",
            )
        elif s.top and view.existing:
            yield diag.error(
                "SW403",
                f"stage {view.number} caches the trunk's output, but `top = {s.top}` keeps the "
                "trunk's top training: the cache would be stale",
                n.at(s, "cache"),
                hint="set `cache = off`, or `top = 0`",
                notes=(diag.Note(message="top is set here", span=n.at(s, "top")),),
            )
        elif s.trunk.strategy is not Strategy.FROZEN and view.existing:
            yield diag.error(
                "SW403",
                f"stage {view.number} caches the trunk's output, but the trunk trains "
                f"(`{s.trunk.strategy}`): the cache would be stale",
                n.at(s, "cache"),
                hint="freeze the trunk (`trunk { frozen }`) or set `cache = off`",
                notes=(
                    diag.Note(
                        message="the trunk strategy is set here", span=n.at(s.trunk, "strategy")
                    ),
                ),
            )


def _random_noise(objective: n.Objective) -> bool:
    return isinstance(objective, n.MaskedDiffusion) and isinstance(objective.time, n.InputTime)
