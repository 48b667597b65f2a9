"""Paths as a spec wrote them, resolved the way a run resolves them."""

from __future__ import annotations

import os


def resolve(path: str, node, field: str) -> str:
    """`path`, written in `node.field`, as an absolute path: relative to the spec file that
    wrote it (or to the working directory, for a `--set` or text given in memory)."""
    path = os.path.expanduser(path)
    if os.path.isabs(path):
        return os.path.normpath(path)
    span = node.spans.get(field) or node.span
    written_in = span.source if span is not None else "<unknown>"
    base = (
        os.getcwd() if written_in.startswith("<") else os.path.dirname(os.path.abspath(written_in))
    )
    return os.path.normpath(os.path.join(base, path))
