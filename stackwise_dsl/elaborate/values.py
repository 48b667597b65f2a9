"""Evaluated values: the syntax tree with `let`s substituted and arithmetic done.

A spec evaluates to a tree of `Record`s (sections, calls, definitions) holding `Entry`s. This
generic tree is what includes, `extends` and `--set` combine over; schema.py then turns it into
typed IR nodes. `Invalid` stands in for a value whose error was already reported, so that one
mistake yields one diagnostic.
"""

from __future__ import annotations

from typing import Any

import attrs

from stackwise_dsl.source import Span, span_field

value = attrs.frozen(kw_only=True)


@value
class Num:
    value: int | float
    span: Span | None = span_field()


@value
class Str:
    value: str
    span: Span | None = span_field()


@value
class Sym:
    """A bare word: an enum value, a constructor without arguments, or a block/stack name."""

    name: str
    span: Span | None = span_field()


@value
class Lst:
    items: tuple[Value, ...]
    span: Span | None = span_field()


@value
class Arrow:
    """`start -> end`: a range, as in `linear(0.9 -> 0.15)`."""

    start: Value
    end: Value
    span: Span | None = span_field()


@value
class Seq:
    """A sequence of names, `2 x enc + dec` → (enc, enc, dec)."""

    refs: tuple[Sym, ...]
    span: Span | None = span_field()


@value
class Invalid:
    span: Span | None = span_field()


# What elaboration returns for a value it has reported as wrong (elaboration goes on).
INVALID: Any = Invalid()


@value
class Entry:
    """One item of a record. `label` names definitions and stages (`block NAME`, `stage 2..3`);
    `cadence` marks `log every N steps`, whose key is `log_every` and whose key span is `log`."""

    key: str
    value: Value
    label: str | None = None
    cadence: bool = False
    key_span: Span | None = span_field()

    @property
    def ident(self) -> tuple[str, str | None]:
        return (self.key, self.label)


@value
class Record:
    """A section, a call or a definition: a name and its entries, in the order written."""

    name: str
    entries: tuple[Entry, ...]
    span: Span | None = span_field()

    def get(self, key: str) -> Entry | None:
        return next((e for e in self.entries if e.key == key), None)

    def all(self, key: str) -> tuple[Entry, ...]:
        return tuple(e for e in self.entries if e.key == key)


Value = Num | Str | Sym | Lst | Arrow | Seq | Record | Invalid


def describe(v: Value) -> str:
    """A value's kind in words, for type errors: `the number 12`, `the name rmsnorm`."""
    if isinstance(v, Num):
        return f"the number {number_text(v.value)}"
    if isinstance(v, Str):
        return f'the string "{v.value}"'
    if isinstance(v, Sym) and v.name in ("true", "false"):
        return f"the truth value {v.name}"
    if isinstance(v, Sym):
        return f"the name {v.name}"
    if isinstance(v, Lst):
        return "a list"
    if isinstance(v, Arrow):
        return "a range (a -> b)"
    if isinstance(v, Seq):
        return "a sequence of names"
    if isinstance(v, Record):
        return f"{v.name}(...)"
    return "an invalid value"


def number_text(x: int | float) -> str:
    """A number for a message: integers exactly, other floats to 6 significant digits."""
    if isinstance(x, int) or (float(x).is_integer() and abs(x) < 1e15):
        return str(int(x))
    return f"{x:.6g}"
