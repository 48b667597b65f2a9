"""Syntax → values: substitute `let`s, do arithmetic, expand `n x name`, gather items.

Lets are evaluated lazily in the final environment (a child spec or `--set` may override a
base's `let`), once each, with cycles reported. A name that is not a `let` stays a `Sym` for
the schema to interpret (an enum value, a constructor, a block or stack name).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import attrs

from stackwise_dsl import diagnostics as diag
from stackwise_dsl.elaborate import registry
from stackwise_dsl.elaborate.suggest import suggestion
from stackwise_dsl.elaborate.values import (
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
from stackwise_dsl.source import SET_SOURCE
from stackwise_dsl.syntax import tree as t
from stackwise_dsl.syntax.lexing import MAX_INT  # the same for written and computed integers

MAX_REPEAT = 100_000  # names in a sequence (`n x name`, `a + b`)
MAX_LET_DEPTH = 100  # lets whose values use lets whose values use lets...
MAX_STRING = 65_536  # characters in a computed string
_LEFT_ASSOC = ("+", "-", "*", "/", "//")
Report = Callable[[diag.Diagnostic], None]


@attrs.define
class Lets:
    """The `let`s in force: definitions, values computed so far, and which were used."""

    defs: dict[str, t.Let] = attrs.field(factory=dict)
    values: dict[str, Value] = attrs.field(factory=dict)
    active: list[str] = attrs.field(factory=list)
    used: set[str] = attrs.field(factory=set)


class Evaluator:
    """Evaluates expressions and item lists of one or more documents under one set of lets."""

    def __init__(self, lets: Lets, report: Report) -> None:
        self.lets = lets
        self.report = report

    # --- expressions ---

    def expr(self, e: t.Expr) -> Value:
        if isinstance(e, t.Number):
            return Num(value=e.value, span=e.span)
        if isinstance(e, t.String):
            return Str(value=e.value, span=e.span)
        if isinstance(e, t.Name):
            return self._name(e)
        if isinstance(e, t.Call):
            return self.call(e)
        if isinstance(e, t.ListExpr):
            return Lst(items=tuple(self.expr(i) for i in e.items), span=e.span)
        if isinstance(e, t.Neg):
            return self._negate(e)
        return self._binary(e)

    def _name(self, e: t.Name) -> Value:
        let = self.lets.defs.get(e.name)
        if let is None:
            return Sym(name=e.name, span=e.span)
        self.lets.used.add(e.name)
        if e.name not in self.lets.values:
            self.lets.values[e.name] = self._evaluate_let(let)
        value = self.lets.values[e.name]
        if value.span is not None and value.span.source.startswith(f"<{SET_SOURCE} "):
            return value  # given by `--set NAME=...`: it says so where it is used
        return attrs.evolve(value, span=e.span)

    def _evaluate_let(self, let: t.Let) -> Value:
        name = let.name.name
        if name in self.lets.active:
            cycle = " -> ".join([*self.lets.active[self.lets.active.index(name) :], name])
            self.report(diag.error("SW108", f"let cycle: {cycle}", let.name.span))
            return Invalid(span=let.span)
        if len(self.lets.active) >= MAX_LET_DEPTH:
            self.report(diag.error(
                "SW007", f"`{name}` is reached through more than {MAX_LET_DEPTH} nested lets",
                let.name.span, hint="compute it from fewer intermediate lets",
            ))  # fmt: skip
            return Invalid(span=let.span)
        self.lets.active.append(name)
        try:
            return self.expr(let.value)
        finally:
            self.lets.active.pop()

    def _negate(self, e: t.Neg) -> Value:
        v = self.expr(e.operand)
        if isinstance(v, Num):
            return Num(value=-v.value, span=e.span)
        return self._arith_error("negate", v, e.span)

    def _binary(self, e: t.Binary) -> Value:
        """Left-associative chains (`s0 + s1 + ... + s999`) are walked iteratively."""
        if e.op not in _LEFT_ASSOC:
            return self._combine(e.op, self.expr(e.left), self.expr(e.right), e.span)
        spine = []
        node: t.Expr = e
        while isinstance(node, t.Binary) and node.op in _LEFT_ASSOC:
            spine.append(node)
            node = node.left
        acc = self.expr(node)
        for b in reversed(spine):
            acc = self._combine(b.op, acc, self.expr(b.right), b.span)
        return acc

    def _combine(self, op: str, left: Value, right: Value, span) -> Value:
        if isinstance(left, Invalid) or isinstance(right, Invalid):
            return Invalid(span=span)
        if op == "->":
            return Arrow(start=left, end=right, span=span)
        if op == "x":
            return self._repeat(left, right, span)
        if op == "+" and _is_names(left) and _is_names(right):
            if not self._sequence(len(_refs(left)) + len(_refs(right)), span):
                return Invalid(span=span)
            return Seq(refs=_refs(left) + _refs(right), span=span)
        if op == "+" and isinstance(left, Str) and isinstance(right, Str):
            if len(left.value) + len(right.value) > MAX_STRING:
                length = len(left.value) + len(right.value)
                self.report(diag.error(
                    "SW007", f"a string of {length:,} characters is longer than {MAX_STRING:,}",
                    span,
                ))  # fmt: skip
                return Invalid(span=span)
            return Str(value=left.value + right.value, span=span)
        return self._arithmetic(op, left, right, span)

    def _repeat(self, count: Value, item: Value, span) -> Value:
        if isinstance(count, Num) and isinstance(count.value, float) and count.value.is_integer():
            whole = int(count.value)  # `1e3 x b`, `2.0 x b`: a whole number, not written as one
            said = f"`n x name` repeats a name a whole number of times, written as one: `{whole}`"
            self.report(diag.error("SW109", said, count.span, hint=f"write `{whole} x ...`"))
            return Invalid(span=span)
        if not (isinstance(count, Num) and isinstance(count.value, int) and count.value >= 0):
            self.report(
                diag.error(
                    "SW109",
                    f"`n x name` repeats a name a whole number of times; got {describe(count)}",
                    count.span,
                )
            )
            return Invalid(span=span)
        if not _is_names(item):
            return self._arith_error("repeat", item, span, hint="write `2 x denoiser`")
        if not self._sequence(len(_refs(item)) * count.value, span):  # before building it
            return Invalid(span=span)
        return Seq(refs=_refs(item) * count.value, span=span)

    def _sequence(self, length: int, span) -> bool:
        """A sequence of `length` names is within MAX_REPEAT, or SW109 says it is not."""
        if length <= MAX_REPEAT:
            return True
        self.report(diag.error("SW109", f"{length} repeated names is more than {MAX_REPEAT}", span))
        return False

    def _arithmetic(self, op: str, left: Value, right: Value, span) -> Value:
        for v in (left, right):
            if not isinstance(v, Num):
                return self._arith_error(op, v, span)
        a, b = left.value, right.value
        if op in ("/", "//") and b == 0:
            self.report(diag.error("SW109", "division by zero", right.span))
            return Invalid(span=span)
        result = _OPS[op](a, b)
        if isinstance(result, float) and not math.isfinite(result):
            self.report(diag.error("SW109", f"{a} {op} {b} is not a finite number", span))
            return Invalid(span=span)
        if isinstance(result, int) and abs(result) > MAX_INT:
            self.report(diag.error("SW007", f"{a} {op} {b} is larger than 10^18", span))
            return Invalid(span=span)
        return Num(value=result, span=span)

    def _arith_error(self, op: str, v: Value, span, hint: str | None = None) -> Value:
        if isinstance(v, Sym):
            self.report(self.undefined(v, arithmetic=op))
        else:
            self.report(
                diag.error("SW109", f"cannot {_VERBS.get(op, op)} {describe(v)}", v.span, hint=hint)
            )
        return Invalid(span=span)

    def undefined(self, v: Sym, arithmetic: str | None = None) -> diag.Diagnostic:
        """SW106 for a name used where a value was needed."""
        repeat = f"to repeat a block or stack, write `2 x {v.name}`"
        otherwise = repeat if arithmetic == "*" else None
        fix = suggestion(v.name, self.lets.defs, otherwise=otherwise)
        return diag.error("SW106", f"`{v.name}` is not defined by any `let`", v.span, **fix)

    # --- calls and item lists ---

    def call(self, c: t.Call) -> Record:
        name = c.name.name
        positional = registry.POSITIONAL.get(name)
        entries: list[Entry] = []
        seen_positional = False
        for arg in c.args:
            if isinstance(arg, t.Kwarg):
                entries.append(
                    Entry(key=arg.name.name, value=self.expr(arg.value), key_span=arg.name.span)
                )
            elif positional is None or seen_positional:
                self._positional_error(name, positional, arg)
            else:
                seen_positional = True
                entries.append(Entry(key=positional, value=self.expr(arg), key_span=arg.span))
        return Record(name=name, entries=self._dedupe(entries, name), span=c.span)

    def _positional_error(self, name: str, positional: str | None, arg: t.Expr) -> None:
        if positional is None:
            message = f"`{name}(...)` takes only named arguments"
            hint = f"name it: `{name}(field = ...)`"
        else:
            message = f"`{name}(...)` takes one unnamed argument ({positional})"
            hint = f"name the others, or give a list: `{name}([...])`"
        self.report(diag.error("SW111", message, arg.span, hint=hint))

    def record(self, name: str, items, span) -> Record:
        """The entries of a document or a `{ ... }` body, in order, duplicates reported."""
        entries = [e for it in items for e in self._entries(it, name)]
        return Record(name=name, entries=self._dedupe(entries, name), span=span)

    def _entries(self, it: t.Item, parent: str) -> list[Entry]:
        if isinstance(it, t.Let | t.Include | t.Extends):
            return []
        if isinstance(it, t.Assign):
            return [Entry(key=it.name.name, value=self.expr(it.value), key_span=it.name.span)]
        if isinstance(it, t.Section):
            body = self.record(it.name.name, it.body.items, it.name.span)
            return [Entry(key=it.name.name, value=body, key_span=it.name.span)]
        if isinstance(it, t.Cadence):
            key = f"{it.name.name}_every"
            return [Entry(key=key, value=self.expr(it.every), cadence=True, key_span=it.name.span)]
        if isinstance(it, t.Flag):
            return [self._flag(it, parent)]
        return self._definition(it, parent)

    def _flag(self, it: t.Flag, parent: str) -> Entry:
        if isinstance(it.value, t.Call):
            return Entry(key=it.value.name.name, value=self.call(it.value), key_span=it.span)
        word = it.value.name
        key = registry.flag_words(parent).get(word, word)
        return Entry(key=key, value=Sym(name=word, span=it.span), key_span=it.span)

    def _definition(self, it, parent: str) -> list[Entry]:
        if isinstance(it, t.BlockDef):
            body = self.record("block", it.body.items, it.name.span)
            return [Entry(key="block", label=it.name.name, value=body, key_span=it.name.span)]
        if isinstance(it, t.StackDef):
            value = self.expr(it.value)
            return [Entry(key="stack", label=it.name.name, value=value, key_span=it.name.span)]
        if isinstance(it, t.Grow):
            return [Entry(key="grow", value=self._grow(it), key_span=it.direction.span)]
        return self._stage(it, parent)

    def _grow(self, it: t.Grow) -> Record:
        body = self.record("grow", it.body.items, it.direction.span)
        head = [Entry(key="direction", value=Sym(name=it.direction.name, span=it.direction.span))]
        if it.stacks is not None:
            head.append(Entry(key="stacks", value=self.expr(it.stacks), key_span=it.stacks.span))
        return attrs.evolve(body, entries=self._dedupe([*head, *body.entries], "grow"))

    def _stage(self, it: t.Stage, parent: str) -> list[Entry]:
        where = it.first.span.cover(it.last.span) if it.last is not None else it.first.span
        if parent != "grow":
            self.report(diag.error("SW110", "`stage` belongs inside `grow { ... }`", where))
            return []
        first = self._stage_number(it.first)
        last = self._stage_number(it.last) if it.last is not None else first
        if first is None or last is None:
            return []
        if last < first:
            message = f"stage range {first}..{last} runs backwards"
            self.report(diag.error("SW109", message, where, hint=f"write `{last}..{first}`"))
            return []
        label = str(first) if first == last else f"{first}..{last}"
        body = self.record("stage", it.body.items, where)
        return [Entry(key="stage", label=label, value=body, key_span=where)]

    def _stage_number(self, e: t.Expr) -> int | None:
        v = self.expr(e)
        if isinstance(v, Num) and isinstance(v.value, int) and v.value >= 1:
            return v.value
        if not isinstance(v, Invalid):
            self.report(
                diag.error(
                    "SW104",
                    f"a stage number is an integer from 1; got {describe(v)}",
                    e.span,
                    hint="stages are numbered from 1, the first stack grown",
                )
            )
        return None

    def _dedupe(self, entries: list[Entry], where: str) -> tuple[Entry, ...]:
        first: dict[tuple, Entry] = {}
        for e in entries:
            if e.ident in first:
                self.report(_duplicate(e, first[e.ident], where))
            else:
                first[e.ident] = e
        return tuple(first.values())


def _duplicate(e: Entry, original: Entry, where: str) -> diag.Diagnostic:
    what = f"{e.key} {e.label}" if e.label else e.key
    return diag.error(
        "SW102",
        f"`{what}` is given twice in {where}",
        e.key_span,
        hint="keep one of them",
        notes=(diag.Note(message="first given here", span=original.key_span),),
    )


def _is_names(v: Value) -> bool:
    return isinstance(v, Sym | Seq)


def _refs(v: Sym | Seq) -> tuple[Sym, ...]:
    return (v,) if isinstance(v, Sym) else v.refs


def _divide(a, b):
    if isinstance(a, int) and isinstance(b, int) and a % b == 0:
        return a // b
    return a / b


_OPS = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": _divide,
    "//": lambda a, b: a // b,
}
_VERBS = {
    "+": "add",
    "-": "subtract",
    "*": "multiply",
    "/": "divide",
    "//": "divide",
    "negate": "negate",
    "repeat": "repeat",
}
