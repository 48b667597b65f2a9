"""Paths the run opens or writes are file names: the data files, the tokenizer, the run folder.

A NUL character ends a file name for the operating system, so no file can have one; a path
holding one would only fail once the run starts (Python refuses it with a ValueError).
"""

from __future__ import annotations

from collections.abc import Iterator

from stackwise_dsl import diagnostics as diag
from stackwise_dsl.ir import nodes as n
from stackwise_dsl.ir.facts import Facts
from stackwise_dsl.machine.host import data_paths
from stackwise_dsl.syntax.format import format_string


def check_path_characters(facts: Facts) -> Iterator[diag.Diagnostic]:
    """No path the run opens or writes holds a NUL character."""
    run = facts.spec.run
    paths = list(data_paths(facts.spec))
    if run.dir is not None:
        paths.append((run, "dir", run.dir))
    for node, field, written in paths:
        if "\0" in written:
            yield diag.error(
                "SW104",
                f"the path {format_string(written)} holds a NUL character (\\0), which no "
                "file name can",
                n.at(node, field),
                hint="remove the \\0 from the path",
            )
