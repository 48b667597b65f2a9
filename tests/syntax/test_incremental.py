"""Parsing again after an edit (syntax/incremental.py, for the language server) gives what a
full parse gives: the same items, comments and every span, on random edits of every shipped
spec; an edit that breaks the file is reported as a full parse reports it."""

from __future__ import annotations

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from stackwise_dsl.source import Span
from stackwise_dsl.syntax.incremental import forget, reparse
from stackwise_dsl.syntax.parser import parse
from tests.conftest import SPECS

TEXTS = [p.read_text(encoding="utf-8") for p in SPECS]
PIECES = ["1", "0", "x", " ", "\n", "steps = 5\n", "let q = 2\n", "#", "a", "{", "}", "(", ")",
          ",", "=", '"', "block c { ffn = gelu }\n", "stack t = 1 x c\n", "\n\n"]  # fmt: skip


def spans(node) -> list:
    """Every span in a syntax tree, in order (equality of nodes leaves spans out)."""
    out = []
    if isinstance(node, tuple):
        for x in node:
            out += spans(x)
    elif attrs.has(type(node)):
        for f in attrs.fields(type(node)):
            value = getattr(node, f.name)
            if isinstance(value, Span):
                out.append(attrs.astuple(value))
            else:
                out += spans(value)
    return out


def same(a, b) -> None:
    assert (a.document is None) == (b.document is None)
    if a.document is None:
        assert [d.message for d in a.diagnostics] == [d.message for d in b.diagnostics]
        return
    assert a.document == b.document
    assert spans(a.document.items) == spans(b.document.items)
    assert spans(a.document.comments) == spans(b.document.comments)


@st.composite
def edits(draw):
    text = draw(st.sampled_from(TEXTS))
    steps = []
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(text)))
        if draw(st.booleans()):
            text = text[:where] + draw(st.sampled_from(PIECES)) + text[where:]
        else:
            text = text[:where] + text[where + draw(st.integers(1, 12)) :]
        steps.append(text)
    return draw(st.sampled_from(TEXTS)), steps


@settings(max_examples=150, deadline=None)
@given(edits())
def test_a_reparse_is_a_parse(case):
    first, steps = case
    name = "edited.sw"
    forget(name)
    same(reparse(first, name), parse(first, name))
    for text in steps:  # each edit of the one before, as an editor sends them
        same(reparse(text, name), parse(text, name))


def test_an_edit_reuses_the_items_around_it():
    text = TEXTS[0]
    forget("reuse.sw")
    before = reparse(text, "reuse.sw").document
    i = text.index("}") + 1  # just after the first item that has braces
    edited = text[:i] + "\nlet extra = 3\n" + text[i:]
    after = reparse(edited, "reuse.sw").document
    assert after.items[0] is before.items[0]  # reused, not parsed again
    assert after == parse(edited, "reuse.sw").document
