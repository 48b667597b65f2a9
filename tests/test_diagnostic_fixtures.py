"""Each check's fixture: a spec in, the expected diagnostics out.

Every fixture lists the codes and positions it must produce as `# expect: CODE [file:]L:C`
comments (asserted exactly), and its full rendered report is a golden `.out` file.
"""

from __future__ import annotations

import os
import re

import pytest

from stackwise_dsl.checks import Host
from stackwise_dsl.diagnostics import render_text
from stackwise_dsl.frontend import check_file
from tests.conftest import FIXTURES, ROOT

CASES = [
    *sorted((FIXTURES / "diagnostics").glob("*.sw")),
    FIXTURES / "diagnostics" / "include_cycle" / "a.sw",
]
EXPECT = re.compile(r"# expect: (SW\d{3}) (?:([\w.]+):)?(\d+):(\d+)")


def _expected(path):
    text = path.read_text(encoding="utf-8")
    return sorted(
        (code, file or path.name, int(line), int(col))
        for code, file, line, col in EXPECT.findall(text)
    )


@pytest.mark.parametrize(
    "path", CASES, ids=lambda p: p.stem if p.parent.name == "diagnostics" else p.parent.name
)
def test_fixture_reports_exactly_its_expectations(path, monkeypatch, golden):
    monkeypatch.chdir(ROOT)
    rel = os.path.relpath(path, ROOT)
    report = check_file(rel, host=Host(cuda=False))  # a CPU machine; data files looked at
    got = sorted(
        (d.code, os.path.basename(d.span.source), d.span.line, d.span.column)
        for d in report.diagnostics
    )
    expected = _expected(path)
    assert expected, f"{path.name} states no expectations"
    assert got == expected
    golden(path.with_suffix(".out"), render_text(report.diagnostics, report.sources) + "\n")


def test_every_check_code_has_a_fixture():
    """The checks the issue lists each appear in at least one fixture."""
    covered = {code for path in CASES for code, *_ in _expected(path)}
    required = {
        "SW201", "SW202", "SW203", "SW204", "SW205", "SW405", "SW301", "SW101", "SW102",
        "SW106", "SW107", "SW005", "SW501", "SW502", "SW401", "SW402", "SW403", "SW503",
        "SW504", "SW505", "SW404", "SW207", "SW206", "SW416", "SW601", "SW602", "SW603", "SW604",
    }  # fmt: skip
    assert required <= covered, sorted(required - covered)
