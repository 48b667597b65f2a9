"""Data settings that contradict each other: a validation source beside a held-out fraction,
random training windows that would read the held-out text or miss a per-window cache."""

from __future__ import annotations

from collections.abc import Iterator

from stackwise_dsl import diagnostics as diag
from stackwise_dsl.ir import nodes as n
from stackwise_dsl.ir.enums import Cache, Direction, Split, Windows
from stackwise_dsl.ir.facts import Facts


def check_data_settings(facts: Facts) -> Iterator[diag.Diagnostic]:
    """`validation_data` replaces `validation` and `split`; random windows need a held-out
    text they cannot reach and no activation cache."""
    d = facts.spec.data
    if d.validation_data is not None:
        for field in ("validation", "split"):
            if field in d.spans:  # written (n.at falls back to the section's place)
                yield diag.error(
                    "SW605",
                    f"`{field}` holds out part of the training data, but `validation_data` "
                    "names the validation data: the two disagree",
                    n.at(d, field),
                    hint=f"remove `{field}` (every window of `source` then trains), or remove "
                    "`validation_data`",
                    notes=(
                        diag.Note(
                            message="validation_data is set here", span=n.at(d, "validation_data")
                        ),
                    ),
                )
    if d.windows is not Windows.RANDOM:
        return
    interleaved = d.split is Split.INTERLEAVED and d.validation > 0
    if d.validation_data is None and interleaved:
        yield diag.error(
            "SW605",
            "`windows = random` reads windows at any offset of the training text, but "
            "`split = interleaved` holds out windows all through it: training would read "
            "validation text",
            n.at(d, "windows"),
            hint="add `split = tail` (the last `validation` fraction is held out), or name "
            "`validation_data`",
        )
    if facts.spec.grow.direction is Direction.END_TO_END:
        return
    for view in facts.stages:
        # stage 1 has no trunk, so caches nothing
        if not view.fuse and view.existing and view.settings.cache is not Cache.OFF:
            yield diag.error(
                "SW605",
                f"stage {view.number} caches the trunk's output per window, but `windows = "
                "random` draws new windows every step: the cache would only grow",
                n.at(view.settings, "cache"),
                hint="set `cache = off`, or use `windows = fixed`",
                notes=(diag.Note(message="windows = random is set here", span=n.at(d, "windows")),),
            )
