"""Syntax trees → IR: files and includes, lets, `extends`, `--set`, then the schema.

`elaborate_file` and `elaborate_text` are the entry points. They never raise for a mistake in a
spec: every problem becomes a diagnostic, and `spec` is None when the spec cannot be built.
`complete` says whether every part could be built, i.e. whether semantic checks may run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs

from stackwise_dsl import diagnostics as diag
from stackwise_dsl.elaborate.combine import (
    override,
    path_segments,
    resolve_set_path,
    set_path,
    union,
)
from stackwise_dsl.elaborate.evaluate import Evaluator, Lets
from stackwise_dsl.elaborate.load import Loader, Unit, own_file
from stackwise_dsl.elaborate.schema import Converter
from stackwise_dsl.elaborate.spec import build_spec
from stackwise_dsl.elaborate.values import Record
from stackwise_dsl.ir.nodes import Spec
from stackwise_dsl.source import SET_SOURCE, Source, Span
from stackwise_dsl.syntax import tree as t
from stackwise_dsl.syntax.parser import parse_expr


@attrs.frozen
class Elaborated:
    spec: Spec | None
    diagnostics: tuple[diag.Diagnostic, ...]
    sources: Mapping[str, Source]
    complete: bool
    files: tuple[str, ...] = ()  # every file read (or tried), absolute paths
    # a file's name -> the span of the `include` or `extends` path that read it
    via: Mapping[str, Span] = attrs.field(factory=dict)


@attrs.frozen
class SetOverride:
    """One `--set PATH=VALUE`: the path, the value as syntax, and its own source text."""

    path: str
    value: t.Expr
    source: Source


def override_source(text: str) -> Source:
    """The source a `--set` is reported against: `<--set model.d_model>`."""
    return Source(f"<{SET_SOURCE} {text.partition('=')[0].strip()}>", text)


def parse_override(text: str) -> SetOverride | diag.Diagnostic:
    """`model.d_model=512` → SetOverride; a value that is not an expression (or looks like a
    path, `runs/exp1`) is taken as a string."""
    source = override_source(text)
    name = source.name
    path, eq, raw = text.partition("=")
    path = path.strip()
    if not eq or not _valid_path(path):
        return diag.error(
            "SW006",
            f"`--set {text}` is not PATH=VALUE",
            source.span(0, len(text)),
            hint="write `--set model.d_model=512`, `--set d=512` (a let) "
            "or `--set grow.stage.2.steps=500`",
        )
    offset = len(text) - len(raw)
    expr, problems = parse_expr(" " * offset + raw, name)
    if expr is None or _looks_like_path(expr):
        start = offset + len(raw) - len(raw.lstrip())
        span = source.span(start, len(text.rstrip()))
        expr = t.String(value=raw.strip(), text=raw.strip(), span=span)
    elif problems:  # an expression with a problem of its own: an escape, a number past 10^18
        return problems[0]
    return SetOverride(path=path, value=expr, source=source)


_SEGMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+|\d+\.\.\d+")


def _valid_path(path: str) -> bool:
    parts = path_segments(path)
    return bool(parts) and ".".join(parts) == path and all(_SEGMENT.fullmatch(p) for p in parts)


def _looks_like_path(e: t.Expr) -> bool:
    """A division of a name (`runs/exp1`) anywhere in the value; walked with a list, not
    recursion, as a value may be a chain of thousands of terms."""
    todo = [e]
    while todo:
        node = todo.pop()
        if isinstance(node, t.Binary):
            if node.op in ("/", "//") and isinstance(node.left, t.Name | t.Binary):
                return True
            todo += [node.left, node.right]
    return False


def elaborate_file(path: str | Path, overrides: Sequence[str] = ()) -> Elaborated:
    """Read, include, evaluate and convert the spec at `path`."""
    name = str(path)
    return _elaborate(lambda loader: loader.load_file(Path(path), name), overrides)


def elaborate_text(text: str, name: str = "<spec>", overrides: Sequence[str] = (), *,
                   incremental: bool = False) -> Elaborated:  # fmt: skip
    """As `elaborate_file`, for text in memory; includes are relative to `name`'s directory.
    `incremental`: parse it reusing the items of its last parse (an editor's). A `name` that
    is a path is the file the text stands for (an editor's unsaved buffer): including it is
    a cycle, as it is for the saved file."""
    return _elaborate(lambda loader: loader.load_text(text, name, own_file(name)), overrides,
                      incremental)  # fmt: skip


def _elaborate(load, overrides: Sequence[str], incremental: bool = False) -> Elaborated:
    found: list[diag.Diagnostic] = []
    if incremental:
        from stackwise_dsl.syntax.incremental import reparse

        loader = Loader(found.append, reparse)
    else:
        loader = Loader(found.append)
    unit = load(loader)
    sets = [parse_override(o) for o in overrides]
    found += [s for s in sets if isinstance(s, diag.Diagnostic)]
    sets = [s for s in sets if isinstance(s, SetOverride)]
    sources = {**loader.sources, **{o.name: o for o in map(override_source, overrides)}}
    files, via = tuple(loader.attempted), dict(loader.via)
    if unit is None or diag.has_errors(found):
        return Elaborated(spec=None, diagnostics=diag.dedupe(found), sources=sources,
                          complete=False, files=files, via=via)  # fmt: skip
    lets = Lets(defs=_collect_lets(unit, found.append))
    record_sets = _apply_let_sets(sets, lets)
    ev = Evaluator(lets, found.append)
    root = _unit_record(unit, ev, found.append)
    for s in record_sets:
        root = _apply_set(root, s, ev, found.append)
    _check_lets(lets, ev, found.append)
    conv = Converter(found.append, let_names=lets.defs)
    spec = build_spec(root, conv)
    complete = conv.complete and spec is not None
    return Elaborated(spec=spec, diagnostics=diag.dedupe(found), sources=sources,
                      complete=complete, files=files, via=via)  # fmt: skip


def _collect_lets(unit: Unit, report) -> dict[str, t.Let]:
    """Lets in force: the base's, overridden by this file's and its includes' (never clashing)."""
    inherited = _collect_lets(unit.base, report) if unit.base else {}
    own: dict[str, t.Let] = {}
    for it in unit.document.items:
        if isinstance(it, t.Let):
            _add_let(own, it, report, "is already defined in this file")
    for inc in unit.includes:
        for let in _collect_lets(inc, report).values():
            _add_let(own, let, report, "is also defined by an included file")
    return {**inherited, **own}


def _add_let(lets: dict[str, t.Let], let: t.Let, report, why: str) -> None:
    name = let.name.name
    if name in lets:
        first = diag.Note(message="first defined here", span=lets[name].name.span)
        report(
            diag.error(
                "SW102",
                f"let `{name}` {why}",
                let.name.span,
                notes=(first,),
                hint="a let is defined once; `extends` or `--set` may override it",
            )
        )
    else:
        lets[name] = let


def _unit_record(unit: Unit, ev: Evaluator, report) -> Record:
    doc = unit.document
    start = doc.source.span(0, 0)
    own = ev.record("spec", doc.items, start)
    for inc in unit.includes:
        own = union(own, _unit_record(inc, ev, report), report)
    if unit.base is not None:
        own = override(_unit_record(unit.base, ev, report), own)
    return own


def _apply_let_sets(sets: list[SetOverride], lets: Lets) -> list[SetOverride]:
    """Install `--set NAME=VALUE` for lets; return the overrides that address the spec."""
    rest = []
    for s in sets:
        if "." not in s.path and s.path in lets.defs:
            name = t.Name(name=s.path, span=s.source.span(0, len(s.path)))
            lets.defs[s.path] = t.Let(name=name, value=s.value, span=s.value.span)
        else:
            rest.append(s)
    return rest


def _apply_set(root: Record, s: SetOverride, ev: Evaluator, report) -> Record:
    key_span = s.source.span(0, len(s.path))
    path = resolve_set_path(s.path, s.source.span)
    if isinstance(path, diag.Diagnostic):
        report(path)
        return root
    updated = set_path(root, path, ev.expr(s.value), key_span)
    if isinstance(updated, str):
        report(diag.error("SW006", f"cannot apply `--set {s.source.text}`: {updated}", key_span))
        return root
    return updated


def _check_lets(lets: Lets, ev: Evaluator, report) -> None:
    """Evaluate lets nobody used (their errors still count) and warn about them."""
    for name, let in list(lets.defs.items()):
        if name in lets.used:
            continue
        if name not in lets.values:
            lets.values[name] = ev._evaluate_let(let)
        report(
            diag.warning("SW107", f"let `{name}` is never used", let.name.span, hint="remove it")
        )
