"""What the editor asks of a document's syntax tree: its outline (blocks, stacks, lets, the
growth and its stages, sections), the word under the cursor, and where a name is defined
(here, or in a file it includes or extends) or which file an `include`/`extends` names."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import attrs

from stackwise_dsl.ir.walk import all_nodes
from stackwise_dsl.syntax import tree as t
from stackwise_dsl.syntax.format import inline_expr
from stackwise_dsl.syntax.parser import parse


@attrs.frozen
class Symbol:
    """One entry of the outline: a name, what it is, its whole span and its name's span, and
    the entries inside it (a growth's stages)."""

    name: str
    kind: str  # "block", "stack", "let", "grow", "stage", "section", "include", "extends"
    detail: str
    span: Any
    name_span: Any
    children: tuple[Symbol, ...] = ()


def outline(doc: t.Document) -> list[Symbol]:
    out = []
    for it in doc.items:
        if isinstance(it, t.BlockDef):
            out.append(Symbol(it.name.name, "block", "block", it.span, it.name.span))
        elif isinstance(it, t.StackDef):
            out.append(Symbol(it.name.name, "stack", inline_expr(it.value), it.span, it.name.span))
        elif isinstance(it, t.Let):
            out.append(Symbol(it.name.name, "let", inline_expr(it.value), it.span, it.name.span))
        elif isinstance(it, t.Grow):
            stages = tuple(
                Symbol(_stage_name(s), "stage", "stage", s.span, s.first.span)
                for s in it.body.items
                if isinstance(s, t.Stage)
            )
            detail = it.direction.name + (f" {inline_expr(it.stacks)}" if it.stacks else "")
            out.append(Symbol("grow", "grow", detail, it.span, it.direction.span, stages))
        elif isinstance(it, t.Section):
            out.append(Symbol(it.name.name, "section", "", it.span, it.name.span))
        elif isinstance(it, t.Assign):
            out.append(Symbol(it.name.name, "section", inline_expr(it.value), it.span,
                              it.name.span))  # fmt: skip
        elif isinstance(it, t.Include | t.Extends):
            kind = "include" if isinstance(it, t.Include) else "extends"
            out.append(Symbol(it.path.value, kind, kind, it.span, it.path.span))
    return out


def _stage_name(s: t.Stage) -> str:
    first = inline_expr(s.first)
    return f"stage {first}" + (f"..{inline_expr(s.last)}" if s.last is not None else "")


def at(doc: t.Document, offset: int) -> list[Any]:
    """The nodes whose span holds `offset`, outermost first."""
    return [x for x in all_nodes(doc.items) if getattr(x, "span", None) is not None
            and x.span.start <= offset <= x.span.end]  # fmt: skip


def word_at(doc: t.Document, offset: int) -> t.Name | t.String | None:
    """The name or string literal under the cursor, if any."""
    inner = [x for x in at(doc, offset) if isinstance(x, t.Name | t.String)]
    return inner[-1] if inner else None


_DEFINES = (t.Let, t.BlockDef, t.StackDef)


def definition(doc: t.Document, path: str, offset: int) -> tuple[str, Any] | None:
    """(file, span) of what the word under the cursor refers to: the `let`, block or stack it
    names (in this file, else in the files it includes or extends, nearest first), or the file
    an `include` or `extends` names (span None: its start)."""
    word = word_at(doc, offset)
    if word is None:
        return None
    for x in at(doc, offset):
        if isinstance(x, t.Include | t.Extends) and x.path is word:
            target = os.path.join(os.path.dirname(path), word.value)
            return (os.path.normpath(target), None) if os.path.isfile(target) else None
    if not isinstance(word, t.Name):
        return None
    for file, found in _defining(doc, path, set()):
        for it in found.items:
            if isinstance(it, _DEFINES) and it.name.name == word.name and it.name is not word:
                return file, it.name.span
    return None


def definitions(doc: t.Document, path: str) -> dict[str, Any]:
    """name -> the `let`, block or stack it names, here or in the files this one includes or
    extends (the nearest definition of a name wins, as for go to definition)."""
    out: dict[str, Any] = {}
    for _, found in _defining(doc, path, set()):
        for it in found.items:
            if isinstance(it, _DEFINES):
                out.setdefault(it.name.name, it)
    return out


def _defining(doc: t.Document, path: str, seen: set[str]) -> Iterator[tuple[str, t.Document]]:
    """This document, then the documents it includes or extends (read from disk as `sw check`
    reads them: regular files up to 1 MiB)."""
    from pathlib import Path

    from stackwise_dsl.elaborate.load import read_text

    seen.add(os.path.abspath(path))
    yield path, doc
    for it in doc.items:
        if isinstance(it, t.Include | t.Extends):
            target = os.path.normpath(os.path.join(os.path.dirname(path), it.path.value))
            if os.path.abspath(target) in seen:
                continue
            try:
                text = read_text(Path(target))
            except (OSError, UnicodeDecodeError, ValueError):
                continue
            parsed = parse(text, target).document
            if parsed is not None:
                yield from _defining(parsed, target, seen)


def in_comment_or_string(text: str, offset: int) -> bool:
    """Whether `offset` lies in a `#` comment or inside a string literal (on its line)."""
    start = text.rfind("\n", 0, offset) + 1
    quoted = escaped = False
    for ch in text[start:offset]:
        if quoted:
            quoted = escaped or ch != '"'
            escaped = not escaped and ch == "\\"
        elif ch == '"':
            quoted = True
        elif ch == "#":
            return True
    return quoted
