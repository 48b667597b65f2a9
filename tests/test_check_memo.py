"""Remembered `sw check` results: identical output, and never stale."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from stackwise_dsl.cli import app, check_memo
from tests.elaborate.helpers import BASE

runner = CliRunner()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "cache" / "stackwise-dsl" / "check"


def check(*args):
    return runner.invoke(app, ["check", *map(str, args)])


def entries(cache):
    return sorted(cache.glob("*.json")) if cache.exists() else []


def test_a_remembered_result_prints_exactly_the_same(tmp_path, cache):
    (tmp_path / "s.sw").write_text(BASE.replace("heads = 4", "heads = 5"))
    first = check("s.sw")
    assert len(entries(cache)) == 1
    again = check("s.sw")
    assert (again.exit_code, again.output) == (first.exit_code, first.output) == (1, first.output)
    assert "error[SW201]" in again.output
    json_first, json_again = check("s.sw", "--format", "json"), check("s.sw", "--format", "json")
    assert json.loads(json_first.output) == json.loads(json_again.output)


def test_an_edited_spec_is_checked_again(tmp_path, cache):
    spec = tmp_path / "s.sw"
    spec.write_text(BASE)
    assert check(spec).exit_code == 0
    spec.write_text(BASE.replace("heads = 4", "heads = 5"))
    assert check(spec).exit_code == 1


def test_a_changed_or_appearing_include_is_noticed(tmp_path, cache):
    (tmp_path / "s.sw").write_text('include "part.sw"\n' + BASE)
    assert check("s.sw").exit_code == 1  # part.sw is missing: SW004
    (tmp_path / "part.sw").write_text("run { seed = 1 }\n")
    assert check("s.sw").exit_code == 0  # it appeared
    (tmp_path / "part.sw").write_text("run { seed = -1 }\n")
    result = check("s.sw")
    assert result.exit_code == 1 and "SW301" in result.output


def test_overrides_are_part_of_the_key(tmp_path, cache):
    (tmp_path / "s.sw").write_text(BASE)
    assert check("s.sw", "--set", "model.d_model=60").exit_code == 1
    assert check("s.sw").exit_code == 0
    assert len(entries(cache)) == 2


def test_no_memo_stores_nothing_and_corrupt_entries_are_ignored(tmp_path, cache):
    (tmp_path / "s.sw").write_text(BASE)
    assert check("s.sw", "--no-memo").exit_code == 0
    assert entries(cache) == []
    assert check("s.sw").exit_code == 0
    (entry,) = entries(cache)
    entry.write_text("{ not json")
    assert check("s.sw").exit_code == 0
    assert json.loads(entry.read_text())["files"][0][0].endswith("s.sw")


def test_digest_of_a_missing_file_is_none(tmp_path):
    assert check_memo.digest(str(tmp_path / "nope")) is None
    (tmp_path / "f").write_bytes(b"abc")
    assert check_memo.digest(str(tmp_path / "f")) == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_the_number_of_processes_is_part_of_what_is_remembered(tmp_path, cache):
    (tmp_path / "s.sw").write_text(BASE + "data { source = stdlib, batch = 6 }\n")
    assert check("s.sw").exit_code == 0
    shared = check("s.sw", "--nproc", "4")  # 6 windows cannot go equally to 4 processes
    assert shared.exit_code == 1 and "error[SW607]" in shared.output
    assert "make it a multiple of 4, such as 4 or 8" in shared.output
    assert check("s.sw", "--nproc", "3").exit_code == 0
    assert check("s.sw").exit_code == 0 and len(entries(cache)) == 3
