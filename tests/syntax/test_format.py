"""`sw fmt`: golden output, comments kept, idempotence, and the same tree after formatting."""

from __future__ import annotations

import pytest

from stackwise_dsl.syntax.format import format_document, format_string
from stackwise_dsl.syntax.parser import parse
from tests.conftest import FIXTURES, SPECS


def _fmt(text: str) -> str:
    result = parse(text, "x.sw")
    assert result.diagnostics == ()
    return format_document(result.document)


@pytest.mark.parametrize("path", sorted((FIXTURES / "format").glob("*.sw")), ids=lambda p: p.stem)
def test_golden(path, golden):
    golden(path.with_suffix(".expected"), _fmt(path.read_text(encoding="utf-8")))


@pytest.mark.parametrize(
    "path", [*sorted((FIXTURES / "format").glob("*.sw")), *SPECS], ids=lambda p: p.name
)
def test_idempotent_same_tree_same_comments(path):
    text = path.read_text(encoding="utf-8")
    once = _fmt(text)
    assert _fmt(once) == once
    before, after = parse(text, "a").document, parse(once, "b").document
    assert after.items == before.items
    assert [c.text.rstrip() for c in after.comments] == [c.text.rstrip() for c in before.comments]


def test_shipped_specs_are_already_formatted():
    for path in SPECS:
        text = path.read_text(encoding="utf-8")
        assert _fmt(text) == text, path.name


def test_long_calls_break_and_short_ones_stay():
    fits = "optimizer = adamw(lr = 0.0003, weight_decay = 0.1, warmup = 100, schedule = cosine, min_lr = 0.0001)\n"
    assert len(fits) == 101 and _fmt(fits) == fits  # exactly 100 columns: stays on one line
    long = fits.replace("min_lr = 0.0001", "min_lr = 0.00001")
    assert _fmt(long) == (
        "optimizer = adamw(\n  lr = 0.0003,\n  weight_decay = 0.1,\n  warmup = 100,\n"
        "  schedule = cosine,\n  min_lr = 0.00001,\n)\n"
    )
    assert _fmt("run {seed=1}\n") == "run { seed = 1 }\n"
    assert _fmt("run {\nseed=1\n}\n") == "run {\n  seed = 1\n}\n"


def test_parentheses_only_where_needed():
    assert _fmt("y = (a + b) * c - (d - e) - -(f)\n") == "y = (a + b) * c - (d - e) - -f\n"
    assert _fmt("y = a - (b + c)\n") == "y = a - (b + c)\n"
    assert _fmt("y = (2 * n) x s\n") == "y = 2 * n x s\n"


def test_strings_are_escaped_canonically():
    assert format_string('a"b\\c\nd\u2028') == '"a\\"b\\\\c\\nd\\u2028"'
    assert _fmt('run { dir = "\\u0041" }\n') == 'run { dir = "A" }\n'


# --- formatting arbitrary layouts of valid specs --------------------------------------------

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from stackwise_dsl.elaborate import elaborate_text  # noqa: E402
from stackwise_dsl.testing import spec_texts  # noqa: E402

_GAPS = st.sampled_from([" ", "  ", "\n", "\t", " \n   ", "\n\n"])


@st.composite
def _relaid(draw):
    """A valid spec with random whitespace between tokens and comments at line ends."""
    text = draw(spec_texts())
    out, in_string, escaped = [], False, False
    for ch in text:
        if in_string:
            out.append(ch)
            in_string = escaped or ch != '"'
            escaped = not escaped and ch == "\\"
        elif ch == '"':
            in_string = True
            out.append(ch)
        elif ch == " ":
            out.append(draw(_GAPS))
        elif ch == "\n" and draw(st.booleans()):
            out.append(f"  # note {draw(st.integers(0, 99))}\n")
        else:
            out.append(ch)
    return text, "".join(out)


@given(_relaid())
def test_any_layout_formats_to_the_same_ir_idempotently(pair):
    canonical, relaid = pair
    formatted = _fmt(relaid)
    assert _fmt(formatted) == formatted
    assert elaborate_text(formatted).spec == elaborate_text(canonical).spec
    assert formatted.count("# note") == relaid.count("# note")
