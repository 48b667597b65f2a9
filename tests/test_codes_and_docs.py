"""Every diagnostic code is registered, explained, exemplified and documented."""

from __future__ import annotations

import re

import attrs
import pytest

from stackwise_dsl import codes
from stackwise_dsl.cli.explain import diagnostics_page
from stackwise_dsl.elaborate.attention import CONSTRUCTORS
from stackwise_dsl.elaborate.registry import ALL_NODES, hints
from stackwise_dsl.frontend import check_file
from tests.conftest import ROOT


@pytest.mark.parametrize("code", list(codes.CODES.values()), ids=lambda c: c.code)
def test_each_example_produces_exactly_its_code(code, tmp_path):
    path = tmp_path / "example.sw"
    path.write_text(code.example, encoding="utf-8")
    report = check_file(path, code.overrides, host=code.host)
    assert sorted({d.code for d in report.diagnostics}) == sorted({code.code, *code.also})
    assert {d.severity for d in report.diagnostics if d.code == code.code} == {code.severity}


def test_every_code_in_the_source_is_registered():
    used = set()
    for path in (ROOT / "stackwise_dsl").rglob("*.py"):
        if path.name != "codes.py":
            used |= set(re.findall(r'"(SW\d{3})"', path.read_text(encoding="utf-8")))
    assert used == set(codes.CODES), used ^ set(codes.CODES)


def test_diagnostics_page_is_current(golden):
    golden(ROOT / "docs" / "diagnostics.md", diagnostics_page())


def test_language_reference_covers_every_construct():
    """docs/language.md names every constructor, every field, and every enum value."""
    text = (ROOT / "docs" / "language.md").read_text(encoding="utf-8")

    def documented(word: str) -> bool:
        return re.search(rf"(?<![\w]){re.escape(word)}(?![\w])", text) is not None

    from stackwise_dsl.ir import enums

    words = [cls.sw_name for cls in ALL_NODES]
    words += [field for cls in ALL_NODES for field in hints(cls) if field != "name"]
    words += list(CONSTRUCTORS)
    words += [m.value for e in vars(enums).values()
              if isinstance(e, type) and issubclass(e, enums.Word) and e is not enums.Word for m in e]  # fmt: skip
    missing = sorted({w for w in words if not documented(w)})
    assert not missing, missing


def test_glossary_names_every_knob(golden):
    """stackwise_dsl/reference.py says what every field of the IR means (the language
    server's hover reads it), and the glossary's Knobs table is written from it."""
    from stackwise_dsl.reference import KNOBS, knob_table

    knobs = {f for cls in ALL_NODES for f in hints(cls)} - {"name"}
    missing = sorted(knobs - {name for name, _, _ in KNOBS})
    assert not missing, missing
    path = ROOT / "docs" / "glossary.md"
    text = path.read_text(encoding="utf-8")
    head = text[: text.index("| Knob | Where | Meaning |")]
    golden(path, head + knob_table())


def test_node_fields_have_no_synonyms():
    """One name per concept: no two IR classes spell the same idea two ways."""
    names = {f.name for cls in ALL_NODES for f in attrs.fields(cls)}
    for a, b in [
        ("min_mask_fraction", "mask_fraction_min"),
        ("learning_rate", "lr"),
        ("n_heads", "heads"),
    ]:
        assert not (a in names and b in names)
