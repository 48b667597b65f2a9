"""Nothing a user writes produces a traceback: fuzzed text, mutated specs, wild IR."""

from __future__ import annotations

import random

import lark
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.lark import from_lark

from stackwise_dsl.checks import CPU_ONLY, run_checks
from stackwise_dsl.frontend import check_bytes, check_text
from stackwise_dsl.syntax.format import format_document
from stackwise_dsl.syntax.parser import parse
from stackwise_dsl.syntax.tables import grammar_text
from stackwise_dsl.testing import raw_specs
from tests.conftest import SPECS

_SPEC_TEXTS = [p.read_text(encoding="utf-8") for p in SPECS]
_GRAMMAR = lark.Lark(grammar_text(), parser="lalr")


def _front_end_survives(text: str) -> None:
    report = check_text(text, "fuzz.sw", host=CPU_ONLY)
    for d in report.diagnostics:
        assert d.code.startswith("SW") and d.message
    result = parse(text, "fuzz.sw")
    if result.document is not None:  # whatever parses also formats, stably
        once = format_document(result.document)
        assert format_document(parse(once, "f").document) == once


@given(st.binary(max_size=400))
def test_any_bytes_give_diagnostics_never_a_traceback(data):
    report = check_bytes(data, "fuzz.sw", host=CPU_ONLY)
    assert report.spec is not None or report.diagnostics


@given(from_lark(_GRAMMAR, start="start"))
@settings(max_examples=150)
def test_grammatical_nonsense_is_diagnosed(text):
    _front_end_survives(text)


_MUTATIONS = st.lists(
    st.tuples(st.sampled_from(["delete", "insert", "swap", "duplicate"]), st.integers(0, 10**6),
              st.sampled_from([*list('{}()[]=,.x-+*/"#\n 0123456789abz'), "let ", "stage ", "->", "every"])),
    min_size=1, max_size=6,
)  # fmt: skip


@given(st.sampled_from(_SPEC_TEXTS), _MUTATIONS)
@settings(max_examples=300)
def test_mutated_specs_are_diagnosed(text, mutations):
    chars = list(text)
    for op, where, piece in mutations:
        i = where % (len(chars) + 1)
        if op == "delete" and chars:
            del chars[min(i, len(chars) - 1)]
        elif op == "insert":
            chars[i:i] = list(piece)
        elif op == "swap" and len(chars) > 1:
            j = (i * 7919) % len(chars)
            k = min(i, len(chars) - 1)
            chars[k], chars[j] = chars[j], chars[k]
        elif op == "duplicate":
            chars[i:i] = chars[i : i + 40]
    _front_end_survives("".join(chars))


@given(raw_specs())
@settings(max_examples=300)
def test_checks_never_raise_on_any_ir(spec):
    for d in run_checks(spec, CPU_ONLY):
        assert d.code.startswith("SW")


@pytest.mark.parametrize("seed", range(5))
def test_shuffled_lines_of_real_specs(seed):
    lines = random.Random(seed).sample(_SPEC_TEXTS[seed % len(_SPEC_TEXTS)].splitlines(), k=12)
    _front_end_survives("\n".join(lines))
