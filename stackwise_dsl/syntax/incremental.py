"""Parsing a file again after a small edit, reusing what did not change (for the language
server, which parses on every keystroke).

A spec is a sequence of items, each starting with a name or a keyword and closing its own
braces, so an edit leaves the items before it and after it as they were. `reparse` keeps the
items wholly before the edited region, parses only the region between them (with what comes
before it blanked to whitespace, so every span is the file's own), and moves the items wholly
after it by the edit's change in length and lines. An item after the edit is reused only
when it starts a line, so its columns stay right. Anything unusual (a syntax error, a problem
found while building the region's nodes, a file that did not parse before) is a full parse,
so the result is always the one `parse` gives: tests/syntax/test_incremental.py checks that
on random edits of every shipped spec.
"""

from __future__ import annotations

import re
import threading

import attrs
import lark

from stackwise_dsl.source import Source, Span
from stackwise_dsl.syntax import tree as t
from stackwise_dsl.syntax.lexing import scan_comments, without_bom
from stackwise_dsl.syntax.parser import ParseResult, _nesting_problem, _parser, parse

_LOCK = threading.Lock()
_LAST: dict[str, tuple[str, t.Document]] = {}  # file name -> its last clean parse
_KEEP = 16  # files remembered


def reparse(text: str, name: str) -> ParseResult:
    """`parse(text, name)`, reusing the items of the last clean parse of `name`."""
    text = without_bom(text)
    with _LOCK:
        last = _LAST.get(name)
    result = None
    if last is not None and last[0] != text:
        result = _reusing(text, name, *last)
    elif last is not None:
        result = ParseResult(last[1], ())
    if result is None:
        result = parse(text, name)
    if result.document is not None:
        with _LOCK:
            _LAST.pop(name, None)
            _LAST[name] = (text, result.document)
            while len(_LAST) > _KEEP:
                _LAST.pop(next(iter(_LAST)))
    return result


def forget(name: str) -> None:
    with _LOCK:
        _LAST.pop(name, None)


def _reusing(text: str, name: str, old: str, doc: t.Document) -> ParseResult | None:
    prefix = _common_prefix(old, text)
    suffix = _common_suffix(old, text, min(len(old), len(text)) - prefix)
    items = doc.items
    kept = 0  # the items wholly before the edit
    while kept < len(items) and items[kept].span.end < prefix:
        kept += 1
    moved = kept  # the first item wholly after it, starting a line (so later ones keep columns)
    while moved < len(items) and not _reusable(items[moved].span.start, old, suffix):
        moved += 1
    chars = len(text) - len(old)
    start = items[kept - 1].span.end if kept else 0
    end = items[moved].span.start + chars if moved < len(items) else len(text)
    if start > end:
        return None
    region = Source(name, text[start:end])
    if _nesting_problem(region) is not None:  # the items around it nest within the limit
        return None
    source = Source(name, text)
    parser, builder = _parser(source)
    try:  # spans are the file's: what comes before the region is blanked, lines kept
        middle = parser.parse(_BLANK.sub(" ", text[:start]) + text[start:end], start="start")
    except lark.exceptions.UnexpectedInput:
        return None
    if builder.problems:
        return None
    lines = text.count("\n") - old.count("\n")
    after = items[moved:]
    if chars or lines:
        after = tuple(_shift(it, chars, lines) for it in after)
    document = t.Document(items=(*items[:kept], *middle, *after), comments=scan_comments(source),
                          source=source)  # fmt: skip
    return ParseResult(document, ())


_BLANK = re.compile(r"[^\n]")


def _reusable(start: int, old: str, suffix: int) -> bool:
    """An item starting at `start` lies in the unchanged end of the text and starts a line."""
    return start > len(old) - suffix and (start == 0 or old[start - 1] == "\n")


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    lo, hi = 0, n
    while lo < hi:  # the longest common prefix, by halving (strings compare in C)
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _common_suffix(a: str, b: str, limit: int) -> int:
    lo, hi = 0, max(limit, 0)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[len(a) - mid :] == b[len(b) - mid :]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _shift(node, chars: int, lines: int):
    """`node` with every span moved by `chars` characters and `lines` lines."""
    if isinstance(node, tuple):
        return tuple(_shift(x, chars, lines) for x in node)
    if not attrs.has(type(node)):
        return node
    changes = {}
    for f in attrs.fields(type(node)):
        value = getattr(node, f.name)
        if isinstance(value, Span):
            changes[f.name] = attrs.evolve(value, start=value.start + chars, end=value.end + chars,
                                           line=value.line + lines,
                                           end_line=value.end_line + lines)  # fmt: skip
        elif isinstance(value, tuple) or attrs.has(type(value)):
            changes[f.name] = _shift(value, chars, lines)
    return attrs.evolve(node, **changes)
