"""Values → IR nodes, directed by the IR's own type annotations.

The IR classes are the schema: their fields are the only names a section or call accepts,
their annotations say what each field holds, their defaults fill what is left out. An unknown
field, a wrong type or an unknown word is reported (with a did-you-mean) and the field keeps
its default, so one pass reports every such mistake. A node missing a required field cannot
be built; the converter then marks the spec incomplete.
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Callable, Collection
from typing import Any

import attrs

from stackwise_dsl import diagnostics as diag
from stackwise_dsl.elaborate import registry
from stackwise_dsl.elaborate.attention import build_attention
from stackwise_dsl.elaborate.suggest import one_of, suggestion
from stackwise_dsl.elaborate.values import (
    INVALID,
    Arrow,
    Entry,
    Invalid,
    Lst,
    Num,
    Record,
    Seq,
    Str,
    Sym,
    Value,
    describe,
)
from stackwise_dsl.ir import nodes as n

Report = Callable[[diag.Diagnostic], None]

_TYPE_WORDS = {int: "a whole number", float: "a number", bool: "true or false", str: "a string"}


class Converter:
    """Converts one spec's values; `complete` turns False when a node cannot be built."""

    def __init__(self, report: Report, let_names: Collection[str] = ()) -> None:
        self.report = report
        self.let_names = let_names
        self.complete = True

    # --- dispatch on the annotation ---

    def value(self, v: Value, hint: Any, where: str) -> Any:
        if isinstance(v, Invalid):
            return INVALID
        if hint in _TYPE_WORDS:
            return self._scalar(v, hint, where)
        if isinstance(hint, type) and issubclass(hint, enum.Enum):
            return self._enum(v, hint, where)
        if hint is n.Attention:
            return build_attention(v, self, where)
        if hint is n.Ref:
            return self._ref(v, where)
        origin = typing.get_origin(hint)
        if origin in (typing.Union, types.UnionType):
            return self._union(v, typing.get_args(hint), where)
        if origin is tuple:
            return self._tuple(v, typing.get_args(hint), where)
        return self._nodes(v, (hint,), where)

    def _scalar(self, v: Value, hint: type, where: str) -> Any:
        if hint is bool and isinstance(v, Sym) and v.name in ("true", "false"):
            return v.name == "true"
        if hint is str and isinstance(v, Str):
            return v.value
        if hint in (int, float) and isinstance(v, Num):
            if hint is float:
                return float(v.value)
            if isinstance(v.value, int) or float(v.value).is_integer():
                return int(v.value)
        return self._type_error(v, _TYPE_WORDS[hint], where)

    def _type_error(self, v: Value, expected: str, where: str) -> Any:
        if (
            isinstance(v, Sym)
            and v.name not in ("true", "false")
            and expected in ("a whole number", "a number", "a string")
        ):
            message = f"`{v.name}` is not defined by any `let` (`{where}` needs {expected})"
            self.report(diag.error("SW106", message, v.span, **suggestion(v.name, self.let_names)))
            return INVALID
        hint = (
            "divide with `//` for a whole number"
            if expected == "a whole number" and isinstance(v, Num)
            else None
        )
        self.report(
            diag.error(
                "SW104", f"`{where}` must be {expected}; got {describe(v)}", v.span, hint=hint
            )
        )
        return INVALID

    def _enum(self, v: Value, hint: type[enum.Enum], where: str) -> Any:
        words = [m.value for m in hint]
        if not isinstance(v, Sym):
            return self._type_error(v, f"one of {one_of(words)}", where)
        for member in hint:
            if member.value == v.name:
                return member
        message = f"`{v.name}` is not a valid `{where}`; expected {one_of(words)}"
        self.report(diag.error("SW105", message, v.span, **suggestion(v.name, words)))
        return INVALID

    def _ref(self, v: Value, where: str) -> Any:
        if isinstance(v, Sym):
            return n.Ref(name=v.name, span=v.span)
        return self._type_error(v, "a name", where)

    def _tuple(self, v: Value, args: tuple, where: str) -> Any:
        if len(args) == 2 and args[1] is Ellipsis:
            items = v.refs if isinstance(v, Seq) else v.items if isinstance(v, Lst) else (v,)
            out = tuple(self.value(i, args[0], where) for i in items)
            return INVALID if any(x is INVALID for x in out) else out
        items = (
            (v.start, v.end) if isinstance(v, Arrow) else v.items if isinstance(v, Lst) else None
        )
        if items is None or len(items) != len(args):
            shape = "a range `a -> b`" if len(args) == 2 else f"a list of {len(args)}"
            return self._type_error(v, shape, where)
        out = tuple(self.value(i, a, where) for i, a in zip(items, args, strict=True))
        return INVALID if any(x is INVALID for x in out) else out

    def _union(self, v: Value, options: tuple, where: str) -> Any:
        nodes = tuple(o for o in options if attrs.has(o))
        others = tuple(o for o in options if not attrs.has(o) and o is not type(None))
        none_word = not any(getattr(c, "sw_name", None) == "none" for c in nodes)
        if type(None) in options and isinstance(v, Sym) and v.name == "none" and none_word:
            return None
        if isinstance(v, Lst):
            listed = [c for c in nodes if c is n.ExplicitSchedule]
            tuples = [o for o in others if typing.get_origin(o) is tuple]
            if listed:
                return self.build(
                    listed[0],
                    Record(name="list", entries=(Entry(key="values", value=v),), span=v.span),
                    where,
                )
            if tuples:
                return self.value(v, tuples[0], where)
        for o in others:
            if o in _TYPE_WORDS and _fits_scalar(v, o):
                return self.value(v, o, where)
            if isinstance(o, type) and issubclass(o, enum.Enum) and isinstance(v, Sym):
                return self._enum(v, o, where)
        if nodes and isinstance(v, Record | Sym):
            return self._nodes(v, nodes, where)
        expected = [c.sw_name for c in nodes if hasattr(c, "sw_name")]
        expected += [_word_for(o) for o in others]
        return self._type_error(v, one_of(expected) if nodes else " or ".join(expected), where)

    # --- nodes ---

    def _nodes(self, v: Value, classes: tuple[type, ...], where: str) -> Any:
        names = {getattr(c, "sw_name", None): c for c in classes}
        if not isinstance(v, Record | Sym):
            return self._type_error(v, one_of(k for k in names if k), where)
        cls = names.get(v.name)
        if cls is None:
            choices = [k for k in names if k]
            message = f"`{v.name}` is not a valid `{where}`; expected {one_of(choices)}"
            self.report(diag.error("SW105", message, v.span, **suggestion(v.name, choices)))
            return INVALID
        record = v if isinstance(v, Record) else Record(name=v.name, entries=(), span=v.span)
        return self.build(cls, record, where)

    def build(self, cls: type, record: Record, where: str, fixed: dict | None = None) -> Any:
        """A node of `cls` from a record's entries; `fixed` fields are set by the caller."""
        fields = registry.hints(cls)
        settable = {k: h for k, h in fields.items() if k not in (fixed or {})}
        kwargs: dict[str, Any] = dict(fixed or {})
        spans: dict[str, Any] = {}
        explained: set[str] = set()  # required fields whose absence is already reported
        for e in record.entries:
            if e.key not in settable:
                explained.add(self._unknown_field(e, cls, settable, where))
                continue
            explained.add(e.key)
            given = _named_after_default(cls, e)
            value = self.value(given, settable[e.key], f"{where}.{e.key}" if where else e.key)
            if value is not INVALID:
                kwargs[e.key] = value
                spans[e.key] = e.value.span or e.key_span
            else:  # reported; no default may stand in for it in the semantic checks
                self.complete = False
        required = [f.name for f in attrs.fields(cls) if f.default is attrs.NOTHING]
        missing = [m for m in required if m not in kwargs]
        if missing:
            self.complete = False
            unexplained = [m for m in missing if m not in explained]
            if unexplained:
                self._missing(unexplained, record, where)
            return INVALID
        return cls(**kwargs, span=record.span, spans=spans)

    def _unknown_field(self, e: Entry, cls: type, settable: dict, where: str) -> str | None:
        """Report an unknown field; return the field it most likely meant."""
        choices = list(settable) + list(registry.flag_words(getattr(cls, "sw_name", "")))
        name = where or "the spec"
        if e.cadence:  # `lg every 25 steps`: the span is `lg`, the field `lg_every`
            word = e.key.removesuffix("_every")
            words = [c.removesuffix("_every") for c in choices if c.endswith("_every")]
            takes = one_of(f"{w} every" for w in words) if words else "no cadence"
            message = f"unknown cadence `{word} every` in `{name}`"
            fix = suggestion(word, words, otherwise=f"`{name}` takes {takes}")
            if "replacement" in fix:
                fix["hint"] = f"did you mean `{fix['replacement']} every`?"
            self.report(diag.error("SW101", message, e.key_span, **fix))
            return f"{fix['replacement']}_every" if "replacement" in fix else None
        message = f"unknown field `{e.key}` in `{name}`"
        takes = f"takes {one_of(choices)}" if choices else "takes no fields"
        fix = suggestion(e.key, choices, otherwise=f"`{name}` {takes}")
        self.report(diag.error("SW101", message, e.key_span, **fix))
        return fix.get("replacement")

    def _missing(self, missing: list[str], record: Record, where: str) -> None:
        name = where or record.name
        fields = one_of(missing)
        self.report(
            diag.error(
                "SW103",
                f"`{name}` needs {fields}",
                record.span,
                hint=f"add {' and '.join(f'`{m} = ...`' for m in missing)}",
            )
        )


def _fits_scalar(v: Value, hint: type) -> bool:
    """Whether `v` is the kind of value a scalar type is written as."""
    if hint is str:
        return isinstance(v, Str)
    if hint is bool:
        return isinstance(v, Sym) and v.name in ("true", "false")
    return isinstance(v, Num)


def _word_for(hint) -> str:
    if hint in _TYPE_WORDS:
        return _TYPE_WORDS[hint]
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return one_of(m.value for m in hint)
    return "a list"


def _named_after_default(cls: type, e: Entry) -> Value:
    """A record named after its field (`position { theta = 5e5 }`, or a section `--set`
    created) means the field's default constructor with those fields changed."""
    v = e.value
    if isinstance(v, Record) and v.name == e.key:
        default = registry.defaults(cls).get(e.key)
        name = getattr(type(default), "sw_name", None)
        if name is not None and name != v.name:
            return attrs.evolve(v, name=name)
    return v
