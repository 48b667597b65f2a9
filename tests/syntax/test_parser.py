"""Parsing: the syntax tree, spans, literals, and syntax errors in words."""

from __future__ import annotations

import pytest

from stackwise_dsl.syntax import tree as t
from stackwise_dsl.syntax.lexing import decode_string, number_value
from stackwise_dsl.syntax.parser import parse, parse_expr


def _items(text):
    result = parse(text, "x.sw")
    assert result.diagnostics == ()
    return result.document.items


@pytest.mark.parametrize(
    ("text", "value"),
    [("300", 300), ("3e-4", 3e-4), ("2k", 2000), ("1.5M", 1_500_000), ("1.1k", 1100),
     ("2B", 2_000_000_000), ("0.5k", 500), ("1.0005k", 1000.5), ("10", 10)],
)  # fmt: skip
def test_number_values_and_suffixes(text, value):
    v = number_value(text)
    assert v == value
    assert type(v) is type(value)


@pytest.mark.parametrize("text", ["1000000000000000001", "9" * 5000, "1000000001B", "2e18k"])
def test_integers_past_10_to_the_18_have_no_value(text):
    assert number_value(text) is None


def test_integers_up_to_10_to_the_18_keep_their_value():
    assert number_value("1" + "0" * 18) == 10**18 == number_value("0" * 30 + "1" + "0" * 18)
    assert number_value("1000000000B") == 10**18


@pytest.mark.parametrize(
    ("text", "value"),
    [(r'"plain"', "plain"), (r'"a\"b"', 'a"b'), (r'"a\\b"', "a\\b"), (r'"t\tn\n"', "t\tn\n"),
     (r'"\u00e9\U0001F600"', "é\U0001f600"), ('"λ ☃"', "λ ☃")],
)  # fmt: skip
def test_string_escapes_decode(text, value):
    assert decode_string(text) == (value, None)


def test_invalid_escapes_are_reported():
    assert decode_string(r'"C:\data"')[1].message == "invalid escape \\d in a string"
    assert decode_string(r'"\uZZZZ"')[1].message == "invalid escape \\u in a string"
    assert "beyond the last Unicode code point" in decode_string(r'"\UFFFFFFFF"')[1].message
    assert "beyond the last Unicode code point" in decode_string(r'"\U00110000"')[1].message
    assert decode_string(r'"\U0010FFFF"') == ("\U0010ffff", None)


@pytest.mark.parametrize("escape", [r"\ud800", r"\udfff", r"\uDC00", r"\U0000D800", r"\ud800x"])
def test_surrogate_escapes_are_reported(escape):
    """A lone surrogate is no character: no file name or UTF-8 output can hold one."""
    value, problem = decode_string(f'"a{escape}"')
    assert value == "a" and "surrogate" in problem.message


def test_a_surrogate_pair_is_named_as_one_escape():
    _, problem = decode_string(r'"\ud83d\ude00"')
    assert "\\U0001F600" in problem.hint


def test_items_and_spans():
    items = _items("let d = 256\nmodel { d_model = d, context = 2 * d }\n")
    let, model = items
    assert isinstance(let, t.Let) and let.name.name == "d" and let.value.value == 256
    assert (let.span.line, let.span.column, let.span.end_column) == (1, 1, 12)
    assert isinstance(model, t.Section) and model.body.one_line
    ctx = model.body.items[1]
    assert isinstance(ctx.value, t.Binary) and ctx.value.op == "*"
    assert (ctx.value.span.line, ctx.value.span.column, ctx.value.span.end_column) == (2, 32, 37)


def test_every_item_form():
    text = """include "base.sw"
extends "other.sw"
block b { attention = mha(heads = 4), ffn = swiglu }
stack s = 2 x b + b
grow prepend 3 x s {
  trunk { frozen, lora(rank = 4) }
  stage 2..3 { steps = 1k }
}
run { log every 10 steps }
"""
    kinds = [type(i).__name__ for i in _items(text)]
    assert kinds == ["Include", "Extends", "BlockDef", "StackDef", "Grow", "Section"]
    grow = _items(text)[4]
    trunk, stage = grow.body.items
    assert [type(i).__name__ for i in trunk.body.items] == ["Flag", "Flag"]
    assert isinstance(stage, t.Stage) and stage.first.value == 2 and stage.last.value == 3


def test_precedence_of_x_plus_and_arrow():
    (item,) = _items("stack s = 2 x enc + 4 x dec")
    plus = item.value
    assert plus.op == "+" and plus.left.op == "x" and plus.right.op == "x"
    expr, problems = parse_expr("linear(0.9 -> 0.1 + 0.05)", "e")
    assert problems == () and expr.args[0].op == "->" and expr.args[0].right.op == "+"


def test_field_named_steps_after_an_expression():
    """`steps` is an ordinary name even right after a value (it was once a keyword)."""
    (grow,) = _items("grow append 2 x s {\n  steps = 300\n  steps = 400\n}\n")
    assert [i.name.name for i in grow.body.items] == ["steps", "steps"]


def test_comments_are_collected_outside_strings():
    doc = parse('# head\nrun { dir = "a#b" }  # tail\n', "x.sw").document
    assert [c.text for c in doc.comments] == ["# head", "# tail"]
    assert doc.comments[1].span.line == 2


def _codes(text):
    return [(d.code, d.span.line, d.span.column) for d in parse(text, "x.sw").diagnostics]


def test_every_syntax_error_is_reported_once():
    text = "model { d_model: 64 }\nblock a {\n  attention = gqa(heads = 4 kv = 2)\n}\nrun = { }\n"
    assert _codes(text) == [("SW002", 1, 16), ("SW001", 3, 29), ("SW001", 5, 7)]


def test_expected_tokens_are_words():
    (d,) = parse("model { d_model = }", "x.sw").diagnostics
    assert d.message == 'unexpected "}"; expected a value'
    (d,) = parse("model { d_model = 1", "x.sw").diagnostics
    assert d.message == 'unexpected end of file; expected "}", a field or ","'
    assert d.notes[0].message == 'this "{" is never closed'
    assert (d.notes[0].span.line, d.notes[0].span.column) == (1, 7)


def test_unclosed_bracket_on_an_earlier_line_is_blamed():
    text = "block a {\n  ffn = swiglu(hidden = 4\n}\nrun { seed = 1 }\n"
    (d,) = parse(text, "x.sw").diagnostics
    assert (d.code, d.span.line) == ("SW001", 3)
    assert d.notes[0].message == 'the "(" opened here is not closed'
    assert (d.notes[0].span.line, d.notes[0].span.column) == (2, 15)


@pytest.mark.parametrize(
    ("text", "hint"),
    [("model { d_model: 1 }", 'set a field with "="'),
     ("model { a = 1; b = 2 }", 'items need no ";"'),
     ("run { dir = 'x' }", "strings use double quotes"),
     ('run { dir = "open }', "this string is not closed"),
     ("model {\u00a0}", "replace it with an ordinary space")],
)  # fmt: skip
def test_character_errors_have_hints(text, hint):
    (d,) = parse(text, "x.sw").diagnostics
    assert d.code == "SW002"
    assert hint in d.hint


def test_cadence_unit_must_be_steps():
    (d,) = parse("run { log every 10 tokens }", "x.sw").diagnostics
    assert (d.code, d.span.column) == ("SW001", 20)


def test_x_is_reserved_everywhere():
    """`x` continues an expression, so it may never be a name: a flag `x` after a value
    would otherwise turn into a repetition once `sw fmt` puts items on their own lines."""
    for text in ["data { source = stdlib, x, batch = 1 }", "let x = 1", "stack s = 2 x x"]:
        codes = [(d.code, d.message) for d in parse(text, "x.sw").diagnostics]
        assert ("SW001", "`x` is a keyword and cannot be a name (it repeats: `2 x s`)") in codes, (
            text
        )


def test_every_keyword_is_reserved_as_a_name():
    for word in ["let", "include", "extends", "block", "stack", "grow", "every"]:
        diags = parse(f"model {{ a = 1, {word} }}", "x.sw").diagnostics
        assert [d.message for d in diags] == [f"`{word}` is a keyword and cannot be a name"], word
    # `stage` starts an item wherever a field may, so it is never a name to begin with
    assert [d.code for d in parse("model { a = 1, stage }", "x.sw").diagnostics] == ["SW001"]


def _errors(text: str) -> list[tuple[str, int, int, str, str | None, str | None]]:
    result = parse(text, "x.sw")
    assert result.document is None
    return [(d.code, d.span.line, d.span.column, d.message, d.hint, d.replacement)
            for d in result.diagnostics]  # fmt: skip


@pytest.mark.parametrize(
    ("written", "hint", "fixed"),
    [
        ("2K", "did you mean `2k`?", "2k"),
        ("1.5m", "did you mean `1.5M`?", "1.5M"),
        ("3b", "did you mean `3B`?", "3B"),
        ("2kb", "put a space between a number and a name", None),
        ("2_000", "write numbers without `_`: `2000` or `2k`", "2000"),
        ("2_000_000", "write numbers without `_`: `2000000` or `2M`", "2000000"),
        ("1_234", "write numbers without `_`: `1234`", "1234"),
        ("0x10", "numbers are decimal: `16`", "16"),
        ("0b101", "numbers are decimal: `5`", "5"),
    ],
)
def test_a_number_run_into_a_name_is_refused_with_its_fix(written, hint, fixed):
    """`2K` would read as the number 2 and then an item `K`."""
    ((code, line, column, message, said, replacement),) = _errors(f"let a = {written}\n")
    assert (code, line, column, said, replacement) == ("SW001", 1, 9, hint, fixed)
    assert message.startswith(f"`{written}` is not a number")


def test_a_count_written_against_x_repeats():
    (stack,) = _items("stack s = 3x b\n")
    assert isinstance(stack.value, t.Binary) and stack.value.op == "x"
    (grow,) = _items("grow append 2x(s) { steps = 1 }\n")
    assert grow.stacks.op == "x"


def test_a_misspelt_every_is_named_with_its_fix():
    ((code, line, column, message, hint, fixed),) = _errors("run { log evry 5 steps }\n")
    assert (code, line, column, hint, fixed) == ("SW001", 1, 11, "did you mean `every`?", "every")
    assert message == "`evry` is not a keyword; a cadence is written `NAME every N steps`"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # the end of the file inside a call inside a block: one error, not a second one for
        # the block's `{` at the end of line 1 (the recovery blanked line 2)
        ("block c {\n  attention = mha(heads = 2,\n", [(2, 29)]),
        # the `{` is closed on line 2: blanking that line must not make it unclosed
        ("model { d_model = 32,\n  context = 3x }\n", [(2, 16)]),
        # a real error, then a block that is really never closed: both
        ("model { d_model = = 3 }\nblock b {\n", [(1, 19), (2, 10)]),
    ],
)
def test_recovery_reports_no_end_of_file_it_made(text, expected):
    assert [(line, column) for _, line, column, *_ in _errors(text)] == expected


@pytest.mark.parametrize(
    ("text", "column", "fixed"),
    [
        ("optimizer = adamw(lr = 3e-3, warmup = 2_000)\n", 39, "2000"),
        ("optimizer = adamw(warmup = 0x10)\n", 28, "16"),
        ("optimizer = adamw(warmup = 2K)\n", 28, "2k"),
        ("let b = [1_0, 2]\n", 10, "10"),
        ("stack s = 2_000 x b\n", 11, "2000"),  # not also "`x` is a keyword"
        ("run { log every 2_000 steps }\n", 17, "2000"),  # not also "counted in steps"
    ],
)
def test_a_number_run_into_a_name_is_one_error_wherever_it_is(text, column, fixed):
    """In a call's arguments and in lists the grammar stops at the name; in sections the
    words after it would make more items: the number's problem, once, with its fix."""
    ((code, line, col, message, _, replacement),) = _errors(text)
    assert (code, line, col, replacement) == ("SW001", 1, column, fixed)
    assert "is not a number" in message


def test_a_carriage_return_alone_ends_no_line():
    """Classic Mac line ends: every line and column would be wrong, in sw check and in an
    editor (which counts a lone CR as a line end)."""
    ((code, line, column, message, hint, _),) = _errors("model { d_model = 32 }\rrun { }\r")
    assert (code, line, column) == ("SW002", 1, 23)
    assert message == "a line ends with a carriage return alone (U+000D without a line feed)"
    assert hint == "save the file with LF or CRLF line endings"
    assert parse("model { d_model = 32 }\r\nrun { }\r\n", "x.sw").diagnostics == ()
