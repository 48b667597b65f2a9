"""Where each value of a plan came from, recorded by the lowering as it builds the plan.

A value was written in the spec (or a file it includes), given on the command line with
`--set`, left to the language's default, or derived by the lowering from other values. Paths
are those of the plan's JSON (`("model", "d_model")`, `("stages", 0, "steps")`, ...); a
container's own origin is where it was declared. `sw compile` writes them as comments.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from pathlib import PurePath

import attrs

from stackwise_dsl.source import SET_SOURCE, Span

Path = tuple  # keys and list indices into the plan's JSON


class Kind(enum.Enum):
    WRITTEN = "written"  # in the spec or a file it includes
    OVERRIDE = "override"  # by `--set`
    DEFAULT = "default"  # the language's default
    DERIVED = "derived"  # computed from other values


@attrs.frozen
class Origin:
    kind: Kind
    span: Span | None = None  # where it was written (WRITTEN, OVERRIDE)
    note: str = ""  # what a derived value follows from

    @staticmethod
    def at(span: Span | None, otherwise: Origin | None = None) -> Origin:
        """Written where `span` says (an override when it is a `--set`), else `otherwise`
        (the default)."""
        if span is None:
            return otherwise if otherwise is not None else DEFAULT
        if span.source.startswith(f"<{SET_SOURCE} ") and span.source.endswith(">"):
            return Origin(Kind.OVERRIDE, span)
        return Origin(Kind.WRITTEN, span)

    def describe(self, spec_file: str) -> str:
        """`line 9` in `spec_file`, `base.sw:4` elsewhere, `--set optimizer.lr`, `default`,
        or `derived` (with what from)."""
        if self.kind is Kind.OVERRIDE:
            return self.span.source[1:-1]
        if self.kind is Kind.WRITTEN:
            if self.span.source == spec_file:
                return f"line {self.span.line}"
            return f"{PurePath(self.span.source).name}:{self.span.line}"
        if self.kind is Kind.DERIVED and self.note:
            return f"derived: {self.note}"
        return self.kind.value


DEFAULT = Origin(Kind.DEFAULT)


def derived(note: str = "") -> Origin:
    return Origin(Kind.DERIVED, note=note)


class Origins:
    """The origins of one plan, filled in while it is built (`table`: path → Origin)."""

    def __init__(self) -> None:
        self.table: dict[Path, Origin] = {}

    def set(self, path: Path, origin: Origin) -> None:
        self.table[path] = origin

    def record(self, path: Path, value, node=None, *, span: Span | None = None,
               fields: Mapping[str, Origin] | None = None, spans: Mapping[str, str] | None = None,
               container: Origin | None = None):  # fmt: skip
        """`value`, a plan object built at `path` from the IR `node`: its own origin (`span`,
        else the node's, else `container`, else the default) and that of each plain field (not
        the plan objects under it, which their builders record). A field is given in `fields`,
        or has the node's field of the same name (of the name in `spans`): written where that
        was written, else the default when it holds the language's default, else derived (an
        elaboration or a preset set it). Fields the node does not have are derived."""
        own = span or getattr(node, "span", None)
        self.table[path] = Origin.at(own, container) if own is not None or container else DEFAULT
        fields, spans = fields or {}, spans or {}
        for f in attrs.fields(type(value)):
            v = getattr(value, f.name)
            if attrs.has(type(v)) or (isinstance(v, tuple) and v and attrs.has(type(v[0]))):
                continue
            name = spans.get(f.name, f.name)
            if f.name in fields:  # (a derived None names nothing it was derived from)
                origin = fields[f.name] if v is not None else attrs.evolve(fields[f.name], note="")
            elif node is not None and name in attrs.fields_dict(type(node)):
                origin = Origin.at(node.spans.get(name), _unwritten(node, name, v))
            else:
                origin = derived()
            self.table[(*path, f.name)] = origin
        return value


def _unwritten(node, name: str, value) -> Origin:
    """A field the spec did not write: the default if it holds the language's, else derived."""
    default = attrs.fields_dict(type(node))[name].default
    if isinstance(default, attrs.Factory):
        default = default.factory()
    ours = getattr(node, name)
    if default is attrs.NOTHING or ours != default or (ours is None and value is not None):
        return derived()
    return DEFAULT
