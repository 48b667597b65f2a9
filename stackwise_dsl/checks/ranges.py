"""Numbers within their ranges: ratios in (0, 1], rates and steps positive, dropout in [0, 1).

The ranges are data on the IR fields (`knob(range=...)` in ir/nodes.py); this check walks
every node and compares.
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs

from stackwise_dsl import diagnostics as diag
from stackwise_dsl.elaborate.values import number_text
from stackwise_dsl.ir import nodes as n
from stackwise_dsl.ir.facts import Facts
from stackwise_dsl.ir.walk import all_nodes


def check_ranges(facts: Facts) -> Iterator[diag.Diagnostic]:
    """Every field with a declared range holds a value inside it."""
    seen: set[int] = set()
    for node in all_nodes(facts.spec):
        if id(node) in seen:  # stage overrides share nodes with the base settings
            continue
        seen.add(id(node))
        for f in attrs.fields(type(node)):
            bounds = f.metadata.get("range")
            if bounds is None:
                continue
            value = getattr(node, f.name)
            values = value if isinstance(value, tuple) else (value,)
            bad = [
                v
                for v in values
                if isinstance(v, int | float) and not isinstance(v, bool) and not bounds.contains(v)
            ]
            if bad:
                yield diag.error(
                    "SW301",
                    f"`{f.name}` is {number_text(bad[0])}; it must be in {bounds}",
                    n.at(node, f.name),
                    hint=_hint(f.name, bounds),
                )


def check_file_lists(facts: Facts) -> Iterator[diag.Diagnostic]:
    """A data source that reads files names at least one (`text([])` would have no data)."""
    d = facts.spec.data
    for source in (d.source, d.validation_data):
        if isinstance(source, n.TextFiles | n.Jsonl) and not source.files:
            name = type(source).sw_name
            yield diag.error(
                "SW301",
                f"`{name}()` names no files; it needs at least one",
                n.at(source, "files"),
                hint=f'name the data: {name}("input.{"txt" if name == "text" else "jsonl"}")',
            )


def _hint(name: str, bounds: n.Range) -> str | None:
    if bounds is n.RATIO:
        return "a ratio is a fraction above 0 and at most 1, such as 0.15"
    if bounds is n.FRACTION:
        return "a probability from 0 up to (not including) 1, such as 0.1"
    if bounds is n.POSITIVE:
        return f"`{name}` must be above zero"
    return None
