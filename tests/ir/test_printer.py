"""The canonical printer: elaborating printed IR gives the same IR back."""

from __future__ import annotations

import pytest
from hypothesis import given

from stackwise_dsl.elaborate import elaborate_file, elaborate_text
from stackwise_dsl.ir import nodes as n
from stackwise_dsl.ir.printer import print_spec, refs
from stackwise_dsl.syntax.format import format_document
from stackwise_dsl.syntax.parser import parse
from stackwise_dsl.testing import specs
from tests.conftest import SPECS


@given(specs())
def test_print_then_parse_is_the_identity(spec):
    text = print_spec(spec)
    result = elaborate_text(text)
    assert result.diagnostics == ()
    assert result.spec == spec


@given(specs())
def test_printed_text_is_already_formatted(spec):
    text = print_spec(spec)
    assert format_document(parse(text, "p").document) == text


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_shipped_specs_round_trip(path):
    spec = elaborate_file(path).spec
    again = elaborate_text(print_spec(spec))
    assert again.diagnostics == () and again.spec == spec


def test_runs_of_names_are_collapsed():
    names = [n.Ref(name=x) for x in ["a", "a", "b", "a", "a", "a"]]
    assert refs(tuple(names)) == "2 x a + b + 3 x a"
    assert refs(()) == "[]"


def test_defaults_are_left_out():
    text = print_spec(elaborate_file(SPECS[0].parent / "tiny.sw").spec)
    assert "norm =" not in text and "head =" not in text and "position =" not in text
    assert "grow append 2 x s {\n  steps = 150\n}" in text
