"""The syntax tree: what the user wrote, item by item, with spans and comments.

This layer keeps everything the formatter needs (number spellings, `let`s, includes, the
order of items, comments); elaboration turns it into the IR. Nodes are frozen attrs classes;
spans take no part in equality.
"""

from __future__ import annotations

import attrs

from stackwise_dsl.source import Source, Span, span_field

node = attrs.frozen(kw_only=True)


# --- expressions ---------------------------------------------------------------------------


@node
class Number:
    """A numeric literal as written (`300`, `3e-4`, `2k`) and its value."""

    text: str
    value: int | float
    span: Span | None = span_field()


@node
class String:
    """A double-quoted string literal; `value` is decoded, `text` is the source spelling."""

    value: str
    text: str
    span: Span | None = span_field()


@node
class Name:
    name: str
    span: Span | None = span_field()


@node
class Kwarg:
    """`name = value` inside a call."""

    name: Name
    value: Expr
    span: Span | None = span_field()


@node
class Call:
    """`name(args)`; args are expressions (positional) or `Kwarg`s."""

    name: Name
    args: tuple[Expr | Kwarg, ...]
    span: Span | None = span_field()


@node
class ListExpr:
    items: tuple[Expr, ...]
    span: Span | None = span_field()


@node
class Binary:
    """An infix operation: arithmetic (`+ - * / //`), repetition (`x`) or a range (`->`)."""

    op: str
    left: Expr
    right: Expr
    span: Span | None = span_field()


@node
class Neg:
    operand: Expr
    span: Span | None = span_field()


Expr = Number | String | Name | Call | ListExpr | Binary | Neg


# --- items -----------------------------------------------------------------------------------


@node
class Body:
    """The `{ ... }` of a section; `one_line` records whether it was written on one line."""

    items: tuple[Item, ...]
    one_line: bool
    span: Span | None = span_field()


@node
class Let:
    name: Name
    value: Expr
    span: Span | None = span_field()


@node
class Include:
    path: String
    span: Span | None = span_field()


@node
class Extends:
    path: String
    span: Span | None = span_field()


@node
class BlockDef:
    name: Name
    body: Body
    span: Span | None = span_field()


@node
class StackDef:
    name: Name
    value: Expr
    span: Span | None = span_field()


@node
class Grow:
    """`grow DIRECTION [STACKS] { ... }`."""

    direction: Name
    stacks: Expr | None
    body: Body
    span: Span | None = span_field()


@node
class Stage:
    """`stage N { ... }` or `stage A..B { ... }` inside `grow`."""

    first: Expr
    last: Expr | None
    body: Body
    span: Span | None = span_field()


@node
class Assign:
    name: Name
    value: Expr
    span: Span | None = span_field()


@node
class Section:
    name: Name
    body: Body
    span: Span | None = span_field()


@node
class Cadence:
    """`checkpoint every 100 steps`: sets the field `<name>_every`."""

    name: Name
    every: Expr
    span: Span | None = span_field()


@node
class Flag:
    """A bare word or call used as an item: `frozen`, `lora(rank = 8)`."""

    value: Name | Call
    span: Span | None = span_field()


Item = (
    Let | Include | Extends | BlockDef | StackDef | Grow | Stage | Assign | Section | Cadence | Flag
)


@node
class Comment:
    """A `#` comment; `text` includes the `#`."""

    text: str
    span: Span | None = span_field()


@node
class Document:
    """One parsed file: its items in order, its comments, and the source it came from."""

    items: tuple[Item, ...]
    comments: tuple[Comment, ...]
    source: Source = attrs.field(eq=False, repr=False)
