"""Inputs an independent tester found to crash the front end: each is now a diagnostic (code,
span, hint) and never a traceback, both through the library and through the `sw` command."""

from __future__ import annotations

import os
import shutil

import pytest
from typer.testing import CliRunner

from stackwise_dsl.cli import app
from stackwise_dsl.elaborate import elaborate_text
from stackwise_dsl.frontend import check_text
from stackwise_dsl.machine.host import DataFile, FileKind, Host
from tests.conftest import ROOT
from tests.elaborate.helpers import BASE

runner = CliRunner()
NO_DATA = Host(cuda=False, data=())
NINES = "9" * 5000


def _cli(*args):
    """`sw ARGS`, failing the test on any exception but the exit itself."""
    result = runner.invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"sw {args[0]} raised") from result.exception
    assert "Traceback" not in result.output
    return result


def _found(text=BASE, overrides=(), host=NO_DATA):
    """(code, source, line, column, end column) of every diagnostic."""
    report = check_text(text, "t.sw", overrides, host=host)
    return [
        (d.code, d.span.source, d.span.line, d.span.column, d.span.end_column)
        if d.span
        else (d.code, None, None, None, None)
        for d in report.diagnostics
    ]


@pytest.fixture
def spec(tmp_path):
    def write(text=BASE, name="spec.sw", data: bytes | None = None):
        path = tmp_path / name
        path.write_bytes(data if data is not None else text.encode())
        return path

    return write


# 1. integer literals past 10^18 (Python refuses to convert more than 4,300 digits)


@pytest.mark.parametrize("digits", [NINES, "1000000000000000001", "1000000001B"])
def test_an_integer_literal_past_10_to_the_18_is_sw007(digits):
    text = BASE.replace("steps = 10", f"steps = {digits}")
    assert _found(text) == [("SW007", "t.sw", 5, 29, 29 + len(digits))]


def test_a_5000_digit_value_in_a_set_is_sw007(spec):
    assert _found(overrides=[f"model.d_model={NINES}"]) == [
        ("SW007", "<--set model.d_model>", 1, 15, 15 + len(NINES))
    ]
    result = _cli("check", spec(), "-s", f"model.d_model={NINES}")
    assert result.exit_code == 2 and "error[SW007]" in result.output
    assert "(5,000 characters)" in result.output  # the message does not repeat every digit


def test_a_5000_digit_literal_in_a_file_through_the_cli(spec):
    result = _cli("check", spec(BASE.replace("steps = 10", f"steps = {NINES}")))
    assert result.exit_code == 1 and "error[SW007]" in result.output


# 2. `--set` paths that name no field, or a stage the file form rejects


@pytest.mark.parametrize(
    ("path", "code", "column", "end"),
    [
        ("grow.stage.x.steps", "SW006", 12, 13),
        ("grow.stage.2", "SW006", 6, 13),
        ("grow.stage.1..2", "SW006", 6, 16),
        ("grow.stage", "SW006", 6, 11),
        ("block", "SW006", 1, 6),
        ("block.b", "SW006", 1, 8),
        ("stack", "SW006", 1, 6),
        ("grow.stage.0.steps", "SW104", 12, 13),
        ("grow.stage.2..1.steps", "SW109", 12, 16),
        ("grow.stage.99999999999999999999.steps", "SW006", 12, 32),
        ("stage.1.steps", "SW110", 1, 8),
        ("model.stage.1.steps", "SW110", 7, 14),
    ],
)
def test_set_paths_that_cannot_be_taken(path, code, column, end, spec):
    assert _found(overrides=[f"{path}=1"]) == [(code, f"<--set {path}>", 1, column, end)]
    result = _cli("check", spec(), "-s", f"{path}=1")
    assert result.exit_code == 1 and f"error[{code}]" in result.output


def test_every_set_path_problem_has_a_hint():
    for path in ("grow.stage.x.steps", "grow.stage.2", "block", "block.b", "grow.stage.0.steps",
                 "grow.stage.2..1.steps", "stage.1.steps"):  # fmt: skip
        (d,) = elaborate_text(BASE, "t.sw", [f"{path}=1"]).diagnostics
        assert d.hint, path


def test_the_same_stages_in_a_file_are_the_same_errors():
    for stage, code in (("0", "SW104"), ("2..1", "SW109")):
        text = BASE.replace("steps = 10 }", f"steps = 10, stage {stage} {{ steps = 1 }} }}")
        assert [c for c, *_ in _found(text)] == [code]


def test_a_set_stage_label_is_the_file_label():
    """`stage.02` and `stage.2..2` are stage 2, so they change the file's stage 2 override."""
    text = BASE.replace("steps = 10 }", "steps = 10, stage 2 { steps = 5 } }")
    for label in ("02", "2..2", "2"):
        r = elaborate_text(text, "t.sw", [f"grow.stage.{label}.steps=7"])
        assert r.diagnostics == () and [
            (o.first, o.last, o.settings.steps) for o in r.spec.grow.overrides
        ] == [(2, 2, 7)]


def test_set_paths_that_still_work():
    r = elaborate_text(BASE, "t.sw", ["stack.s=2 x b", "block.b.attention.heads=2"])
    assert r.diagnostics == () and len(r.spec.stacks[0].blocks) == 2


# 3. very long `--set` paths and values


def test_a_set_path_of_5000_parts_is_sw006(spec):
    path = ".".join(["a"] * 5000)
    assert _found(overrides=[f"{path}=1"]) == [("SW006", f"<--set {path}>", 1, 1, len(path) + 1)]
    result = _cli("check", spec(), "-s", f"{path}=1")
    assert result.exit_code == 1 and "error[SW006]" in result.output


def test_a_set_value_of_50000_terms_is_evaluated_as_in_a_file(spec):
    value = "+".join(["1"] * 50_000)
    r = elaborate_text(BASE, "t.sw", [f"grow.steps={value}"])
    assert r.diagnostics == () and r.spec.grow.settings.steps == 50_000
    assert _cli("check", spec(), "-s", f"grow.steps={value}").exit_code == 0


@pytest.mark.parametrize("value", ["[" * 3000 + "1" + "]" * 3000, "f(a=" * 3000 + "1" + ")" * 3000])
def test_a_deeply_nested_set_value_is_diagnosed(value, spec):
    assert [c for c, *_ in _found(overrides=[f"model.d_model={value}"])] == ["SW104"]
    assert _cli("check", spec(), "-s", f"model.d_model={value}").exit_code == 1


# 4. symbolic link loops


@pytest.fixture
def loop(tmp_path):
    try:
        os.symlink("loop1.sw", tmp_path / "loop2.sw")
        os.symlink("loop2.sw", tmp_path / "loop1.sw")
    except (OSError, NotImplementedError):
        pytest.skip("no symbolic links here")
    return tmp_path / "loop1.sw"


@pytest.mark.parametrize("keyword", ["include", "extends"])
def test_an_include_of_a_symlink_loop_is_sw004(keyword, loop, spec):
    path = spec(f'{keyword} "loop1.sw"\n' + BASE)
    result = _cli("check", path, "--format", "json")
    assert result.exit_code == 1
    assert '"code": "SW004"' in result.output and "loop of symbolic links" in result.output
    text = path.read_text()
    report = check_text(text, str(path), host=NO_DATA)
    (d,) = report.diagnostics
    assert (d.code, d.span.line, d.span.column, d.span.end_column) == ("SW004", 1, 9, 19)


def test_checking_a_symlink_loop_itself_is_sw004(loop):
    result = _cli("check", loop)
    assert result.exit_code == 2 and "error[SW004]" in result.output  # as for a missing file
    assert "loop of symbolic links" in result.output


# 5. \u and \U escapes that name no character


@pytest.mark.parametrize("escape", [r"\ud800", r"\udfff", r"\U0000dc00", r"\U00110000"])
def test_escapes_that_name_no_character_are_sw003(escape, spec):
    literal = f'"{escape}"'
    text = BASE + f"run {{ dir = {literal} }}\n"
    assert _found(text) == [("SW003", "t.sw", 6, 13, 13 + len(literal))]
    path = spec(text)
    for command in ("check", "fmt"):
        result = _cli(command, path)
        assert result.exit_code == 1 and "error[SW003]" in result.output
    assert _found(f'extends "{escape}"\n' + BASE)[0][0] == "SW003"
    set_span = ("<--set run.dir>", 1, 9, 9 + len(literal))
    assert _found(overrides=[f"run.dir={literal}"]) == [("SW003", *set_span)]
    assert _cli("check", path, "-s", f"run.dir={literal}").exit_code == 2


def test_a_surrogate_pair_escape_names_the_character_to_write():
    report = check_text(BASE + 'run { dir = "\\ud83d\\ude00" }\n', "t.sw", host=NO_DATA)
    (d,) = report.diagnostics
    assert d.code == "SW003" and "\\U0001F600" in d.hint


# 6. a NUL character in a path


@pytest.mark.parametrize(
    ("override", "column"),
    [
        ('run.dir="a\\0b"', 9),
        ('data.source=text("a\\0b")', 18),
        ('data.tokenizer=file("t\\0.json")', 21),
    ],
)
def test_a_nul_in_a_path_is_sw104_at_check_time(override, column, spec):
    (found,) = _found(overrides=[override])
    assert found[:4] == ("SW104", f"<--set {override.partition('=')[0]}>", 1, column)
    result = _cli("check", spec(), "-s", override)
    assert result.exit_code == 1 and "error[SW104]" in result.output


def test_a_nul_in_a_data_path_is_reported_once_whatever_the_host():
    text = BASE + 'data { source = text("a\\0b") }\n'
    host = Host(cuda=False, data=(DataFile(written="a\0b", kind=FileKind.MISSING),))
    assert [c for c, *_ in _found(text, host=host)] == ["SW104"]
    assert [c for c, *_ in _found(text, host=Host(cuda=False))] == ["SW104"]


# 7. the hint for a missing tokenizer file


def test_a_missing_tokenizer_file_names_its_own_override(spec, tmp_path):
    (tmp_path / "train.txt").write_text("some text\n")
    path = spec(BASE + 'data { source = text("train.txt"), tokenizer = file("tok.json") }\n')
    report = check_text(path.read_text(), str(path), host=Host(cuda=False))
    (d,) = report.diagnostics
    assert d.code == "SW604" and "`--set data.tokenizer.path=PATH`" in d.hint
    assert "source" not in d.hint
    shutil.copy(
        ROOT / "specs" / "models" / "tiny-llama" / "tokenizer.json", tmp_path / "other.json"
    )
    fixed = check_text(
        path.read_text(),
        str(path),
        [f"data.tokenizer.path={tmp_path / 'other.json'}"],
        host=Host(cuda=False),
    )
    assert fixed.diagnostics == ()


# 8. a leading byte-order mark


def test_a_leading_byte_order_mark_is_ignored(spec):
    path = spec(data=b"\xef\xbb\xbf" + BASE.encode())
    assert _cli("check", path).exit_code == 0
    assert _cli("fmt", "--check", path).exit_code == 1  # the mark is not canonical
    assert _cli("fmt", path).exit_code == 0
    assert path.read_bytes() == BASE.encode()
    assert _cli("fmt", "--check", path).exit_code == 0


def test_spans_after_a_byte_order_mark_count_from_the_text(spec):
    assert _found("\ufeffmodel: 1\n") == [("SW002", "t.sw", 1, 6, 7)]
    result = _cli("check", spec(data=b"\xef\xbb\xbfmodel: 1\n"), "--format", "json")
    assert '"column": 6' in result.output
