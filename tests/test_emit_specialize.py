"""emit/specialize.py: a definition cut down to what one plan uses, checked on its tree."""

from __future__ import annotations

import re
import textwrap

import pytest

from stackwise_dsl.emit.specialize import (
    FEATURE_TEST,
    PLAN_MODULE,
    AllAbsent,
    Decided,
    SpecializeError,
    plan_classes,
    specialize,
)

KNOWN = Decided(features=frozenset({"on"}), absent=frozenset({"Gone", "Away"}))


def _resolve(name: str):
    if name == "uses":
        return ("def", FEATURE_TEST)
    if name.startswith("p."):
        return ("def", (PLAN_MODULE, name[2:]))
    if name.startswith("torch."):
        raise KeyError(name)  # not one of our modules (extract.py's resolve does the same)
    return None


def _run(source: str) -> str:
    return specialize(textwrap.dedent(source).lstrip(), KNOWN, _resolve)


def test_a_decided_if_becomes_the_branch_it_takes_dedented_with_its_comments():
    assert _run("""
        def f(x):
            a = 1
            if uses("on"):
                # the feature's own comment
                a = g(x)  # kept
                h(a)
            else:
                a = 0
            if uses("off"):
                a = 2
            else:
                b = 3
            return a
        """) == textwrap.dedent("""\
        def f(x):
            a = 1
            # the feature's own comment
            a = g(x)  # kept
            h(a)
            b = 3
            return a
        """)


def test_tests_that_mix_decided_and_live_values_fold_and_keep_the_rest():
    assert _run("""
        def f(part, o):
            if uses("on") and part.ok:
                go()
            if uses("off") and part.ok:
                never()
            if not uses("off") or isinstance(o, p.Gone):
                always()
            if part.a and (uses("on") or part.b):
                both()
            return 1 if isinstance(o, p.Away) else 2
        """) == textwrap.dedent("""\
        def f(part, o):
            if part.ok:
                go()
            always()
            if part.a:
                both()
            return 2
        """)


def test_an_empty_block_gets_pass_and_no_blank_lines_are_doubled():
    assert _run("""
        def f(x):
            if x:
                if uses("off"):
                    g()
            y = 1

            if uses("off"):
                h()

            return y
        """) == textwrap.dedent("""\
        def f(x):
            if x:
                pass
            y = 1

            return y
        """)


def test_unions_lose_the_classes_the_plan_has_none_of():
    assert _run("""
        class Model:
            position: p.Rope | p.Gone | None
            time: p.Away | None
            kind: p.Away | p.Gone | p.Rope = None
        """) == textwrap.dedent("""\
        class Model:
            position: p.Rope | None
            time: None
            kind: p.Rope = None
        """)
    with pytest.raises(AllAbsent, match=re.escape("every type of `p.Gone | p.Away` is absent")):
        _run("Alias = p.Gone | p.Away\n")


def test_isinstance_decides_only_for_absent_plan_classes():
    source = """
        def f(o, t):
            return isinstance(o, p.Rope), isinstance(t, torch.Tensor), isinstance(o, (p.Gone, p.Away))
        """
    assert _run(source).endswith(
        "return isinstance(o, p.Rope), isinstance(t, torch.Tensor), False\n"
    )


def test_what_it_cannot_rewrite_faithfully_is_refused():
    with pytest.raises(SpecializeError, match="an `elif` is decided"):
        _run("""
            def f(x):
                if x:
                    a()
                elif uses("on"):
                    b()
            """)
    with pytest.raises(SpecializeError, match="string literal"):
        _run("def f(name):\n    if uses(name):\n        a()\n")


def test_plan_classes_names_every_class_and_those_a_plan_holds():
    from stackwise_dsl.frontend import check_file
    from stackwise_dsl.lower import to_plan
    from tests.conftest import ROOT

    plan = to_plan(check_file(ROOT / "specs" / "tiny.sw", []).spec, name="tiny")
    every, seen = plan_classes(plan)
    assert {"Plan", "Model", "Rope", "Clm", "AdamW", "Synthetic", "Bytes", "SwiGlu"} <= seen
    assert {"Lora", "MaskedDiffusion", "LearnedPosition", "Sgd", "Gelu"} <= every - seen
    assert seen <= every and "Variant" not in every
