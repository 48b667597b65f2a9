"""The configuration block's comments: the spec line each plan value came from."""

from __future__ import annotations

import ast

from typer.testing import CliRunner

from stackwise_dsl.cli import app
from stackwise_dsl.emit.literals import comment_text, pretty
from tests.conftest import ROOT

runner = CliRunner()


def _plan_block(script: str) -> list[str]:
    lines = script.splitlines()
    start = lines.index("PLAN = {")
    return lines[start : lines.index("}", start) + 1]


def _compile(*args: str) -> str:
    result = runner.invoke(app, ["compile", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_values_name_the_spec_line_that_set_them(monkeypatch):
    monkeypatch.chdir(ROOT)
    block = "\n".join(_plan_block(_compile("specs/tiny.sw")))
    for line in [
        '    "model": {  # line 4',
        '        "d_model": 32,  # line 4',
        '        "dropout": 0.0,  # default',
        '        "vocab": 259,  # the tokenizer\'s',
        '                        "heads": 2,  # line 6',
        '                        "mode": "causal",  # line 6',
        '                        "head_dim": 16,',  # derived: no comment
        '                        "hidden": 64,  # line 6',
        '            "name": "s",  # line 12',
        "        {  # line 12",
        '            "steps": 150,  # line 12',
        '            "lr": 0.003,  # line 15',
        '            "objective": {"kind": "Clm"},  # line 10',
        '        "source": {  # line 14',
        '            "task": "copy",  # line 14',
        '            "samples": 512,  # line 14',
        '        "warmup": 10,  # line 15',
        '            "eps": 1e-08,  # default',
        '        "seed": 0,  # line 16',
        '        "log_every": 25,  # line 16',
    ]:
        assert f"\n{line}\n" in f"\n{block}\n", line


def test_overrides_and_included_files_are_named(tmp_path, monkeypatch):
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "model.sw").write_text("\n\nmodel { d_model = 32, context = 32 }\n")
    spec = (
        (ROOT / "specs" / "tiny.sw")
        .read_text()
        .replace("model { d_model = 32, context = 32 }", 'include "parts/model.sw"')
    )
    (tmp_path / "main.sw").write_text(spec)
    monkeypatch.chdir(tmp_path)
    block = _plan_block(_compile("main.sw", "--set", "optimizer.lr=0.01"))
    assert '        "d_model": 32,  # model.sw:3' in block
    assert '            "lr": 0.01,  # --set optimizer.lr' in block  # each stage's lr


def test_comments_are_one_line_of_printable_ascii():
    assert comment_text("a\nb\u2028c\x00d\re") == "a?b?c?d?e"
    assert comment_text("x" * 200, width=20) == "x" * 17 + "..."


def test_pretty_with_comments_expands_only_what_holds_one_and_keeps_the_value():
    value = {"a": {"b": 1, "c": [1, 2]}, "d": {"e": 2}, "f": [3, 4]}
    comments = {("a",): "line 1", ("a", "b"): "line 2", ("f",): "default", ("x",): "unused"}
    text = pretty(value, comments=comments)
    assert text == (
        "{\n"
        '    "a": {  # line 1\n'
        '        "b": 1,  # line 2\n'
        '        "c": [1, 2],\n'
        "    },\n"
        '    "d": {"e": 2},\n'
        '    "f": [3, 4],  # default\n'
        "}"
    )
    assert ast.literal_eval(text) == value
    long = {"k": "v" * 90}
    assert pretty(long, comments={("k",): "line 1"}) == '{\n    "k": "' + "v" * 90 + '",\n}'
