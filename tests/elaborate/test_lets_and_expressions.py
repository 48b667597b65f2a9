"""Lets, arithmetic, repetition, and their errors."""

from __future__ import annotations

from stackwise_dsl.elaborate import elaborate_text
from tests.elaborate.helpers import BASE, codes


def test_lets_arithmetic_and_units():
    text = "let d = 64\nlet h = d // 4\n" + BASE.replace("d_model = 64", "d_model = d").replace(
        "ffn = swiglu", "ffn = swiglu(hidden = 3 * d + h)"
    ).replace("steps = 10", "steps = 1.5k")
    r = elaborate_text(text)
    assert codes(r) == []
    assert r.spec.model.d_model == 64
    assert r.spec.blocks[0].ffn.hidden == 3 * 64 + 16
    assert r.spec.grow.settings.steps == 1500


def test_lets_may_be_used_before_they_are_defined():
    r = elaborate_text(BASE.replace("d_model = 64", "d_model = 2 * half") + "let half = 32\n")
    assert codes(r) == [] and r.spec.model.d_model == 64


def test_repetition_and_sequences():
    text = BASE.replace(
        "stack s = 1 x b", "block c { attention = mha(heads = 2) }\nstack s = 2 x b + c + 0 x b"
    )
    r = elaborate_text(text)
    assert codes(r) == []
    assert [ref.name for ref in r.spec.stacks[0].blocks] == ["b", "b", "c"]


def test_let_cycle_is_reported_once_with_the_loop():
    r = elaborate_text(
        "let a = b + 1\nlet b = a * 2\n" + BASE.replace("d_model = 64", "d_model = a")
    )
    assert codes(r) == ["SW108"]
    assert r.diagnostics[0].message == "let cycle: a -> b -> a"


def test_unused_and_duplicate_lets():
    r = elaborate_text("let a = 1\nlet a = 2\nlet z = 9\n" + BASE)
    assert codes(r) == ["SW107", "SW102", "SW107"]  # the first `a` is the one kept, and unused
    assert "let `a` is already defined" in r.diagnostics[1].message
    assert r.diagnostics[2].message == "let `z` is never used"


def test_errors_inside_unused_lets_are_still_reported():
    r = elaborate_text("let broken = 1 / 0\n" + BASE)
    assert codes(r) == ["SW107", "SW109"]


def test_arithmetic_errors():
    cases = {
        "d_model = 64 / 0": "division by zero",
        "d_model = 2 * denoiser": "`denoiser` is not defined by any `let`",
        'd_model = "a" * 2': 'cannot multiply the string "a"',
        "d_model = 1.5 x b": "repeats a name a whole number of times",
    }
    for fragment, message in cases.items():
        r = elaborate_text(BASE.replace("d_model = 64", fragment))
        assert any(message in d.message for d in r.diagnostics), (fragment, r.diagnostics)


def test_multiply_by_a_name_hints_at_repetition():
    r = elaborate_text(BASE.replace("stack s = 1 x b", "stack s = 2 * b"))
    (d,) = [d for d in r.diagnostics if d.code == "SW106"]
    assert d.hint == "to repeat a block or stack, write `2 x b`"


def test_huge_repetition_is_refused():
    r = elaborate_text(BASE.replace("stack s = 1 x b", "stack s = 1M x b"))
    assert "SW109" in codes(r)


def test_string_concatenation():
    r = elaborate_text(BASE + 'let name = "exp1"\nrun { dir = "runs/" + name }\n')
    assert r.spec.run.dir == "runs/exp1"
