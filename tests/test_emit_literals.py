"""Spec values reach emitted code only as literals: hostile strings stay data."""

from __future__ import annotations

import ast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stackwise_dsl.emit.literals import EmitError, identifier, literal

HOSTILE = [
    "'", '"', "'''", '"""', "\\", "\\'", "a\nb", "a\rb", "\x00", "__import__('os').system('x')",
    "'); __import__('os'); ('", '"""; import os; """', "\u2028", "\u2029", "\x85", "\ufeff",
    "\u202e", "é", "\U0001f600", "{x}", "%s", "#", "\t", "\\N{BULLET}", "\\u2028",
]  # fmt: skip


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_strings_are_one_ascii_string_constant(text):
    source = literal(text)
    assert source.isascii() and "\n" not in source and "\r" not in source
    tree = ast.parse(f"x = {source}\n")
    assert len(tree.body) == 1
    value = tree.body[0].value
    assert isinstance(value, ast.Constant) and value.value == text


@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
))  # fmt: skip
def test_every_plain_value_round_trips(value):
    source = literal(value)
    assert source.isascii()
    assert ast.literal_eval(source) == value
    assert type(ast.literal_eval(source)) is type(value)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), {1, 2}, object(), b"bytes"])
def test_values_without_a_plain_literal_are_refused(bad):
    with pytest.raises(EmitError):
        literal(bad)


@pytest.mark.parametrize("name", ["stack", "s_1", "_x", "denoiser2"])
def test_identifiers(name):
    assert identifier(name) == name


@pytest.mark.parametrize("name", ["", "1a", "a-b", "a b", "class", "None", "é", "a\n", "x;y",
                                  "__import__('os')", "a.b"])  # fmt: skip
def test_non_identifiers_are_refused(name):
    with pytest.raises(EmitError):
        identifier(name)


def _ruff_format_keeps(text: str, tmp_path) -> bool:
    import subprocess
    import sys

    path = tmp_path / "emitted.py"
    path.write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "--line-length", "100", str(path)],
        capture_output=True,
        text=True,
    )
    return result.returncode == 0


@pytest.mark.parametrize("spec", ["diffusion", "attention", "gpt"])
def test_pretty_plans_are_already_ruff_formatted(spec, tmp_path):
    from stackwise_dsl.emit.literals import pretty
    from stackwise_dsl.frontend import check_file
    from stackwise_dsl.lower import to_plan
    from stackwise_dsl.lower.serialize import to_json
    from tests.conftest import ROOT

    plan = to_json(to_plan(check_file(ROOT / "specs" / f"{spec}.sw", []).spec, name=spec))
    text = "PLAN = " + pretty(plan, used=len("PLAN = ")) + "\n"
    assert ast.literal_eval(text.split("=", 1)[1].strip()) == plan
    assert len(text.splitlines()) > 100  # laid out, one field per line where needed
    assert _ruff_format_keeps(text, tmp_path)


def test_pretty_hostile_strings_are_ruff_formatted_and_stay_data(tmp_path):
    from stackwise_dsl.emit.literals import pretty

    value = {"files": HOSTILE, "long": "x" * 150, "mixed": "'\"'", "nested": [[HOSTILE[:3]]]}
    text = "CONFIG = " + pretty(value, used=len("CONFIG = ")) + "\n"
    tree = ast.parse(text)
    assert len(tree.body) == 1 and ast.literal_eval(tree.body[0].value) == value
    assert text.isascii() and _ruff_format_keeps(text, tmp_path)


def test_text_blocks_keep_every_line_within_the_width_and_the_text_exact(tmp_path):
    from stackwise_dsl.emit.literals import text_block

    text = "short\n" + "x" * 250 + "\n" + "".join(HOSTILE) + "\n\nlast line without newline"
    source = "SPEC_TEXT = " + text_block(text, used=len("SPEC_TEXT = ")) + "\n"
    assert max(len(line) for line in source.splitlines()) <= 100
    assert ast.literal_eval(source.split("=", 1)[1].strip()) == text
    assert _ruff_format_keeps(source, tmp_path)
    assert text_block("one line", used=12) == '"one line"'
