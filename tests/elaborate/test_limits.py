"""Elaboration has limits: no spec hangs `sw check`, overflows the stack or exhausts memory.
Each case is bounded in time here by what it must not do (read forever, recurse, allocate)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from stackwise_dsl.elaborate import elaborate_file, elaborate_text
from stackwise_dsl.elaborate.evaluate import MAX_LET_DEPTH
from stackwise_dsl.elaborate.load import MAX_DEPTH
from stackwise_dsl.source import MAX_FILE_BYTES
from tests.elaborate.helpers import BASE, codes


def _errors(result) -> list[tuple[str, str]]:
    return [(d.code, d.message) for d in result.diagnostics if d.is_error]


@pytest.mark.parametrize("count", ["999999999999999999", "200000000", "100001"])
def test_a_huge_repeat_is_refused_before_anything_is_built(count):
    started = time.perf_counter()
    r = elaborate_text(BASE.replace("stack s = 1 x b", f"stack s = {count} x b"), "t.sw")
    assert (time.perf_counter() - started) < 2.0  # 200000000 x b once built 1.6 GB first
    assert ("SW109", f"{count} repeated names is more than 100000") in _errors(r)


def test_doubling_a_sequence_stops_at_the_limit():
    lets = "".join(f"let q{i + 1} = q{i} + q{i}\n" for i in range(40))
    r = elaborate_text("let q0 = b\n" + lets + BASE.replace("1 x b", "q40"), "t.sw")
    assert ("SW109", "131072 repeated names is more than 100000") in _errors(r)


def test_doubling_a_string_stops_at_the_limit():
    lets = "".join(f"let s{i + 1} = s{i} + s{i}\n" for i in range(40))
    r = elaborate_text('let s0 = "ab"\n' + lets + BASE + "run { dir = s40 }\n", "t.sw")
    errors = _errors(r)
    assert errors == [("SW007", "a string of 131,072 characters is longer than 65,536")]
    span = next(d.span for d in r.diagnostics if d.code == "SW007")
    assert span.line == 17  # let s16 = s15 + s15


def test_squaring_an_integer_stops_at_the_limit():
    lets = "".join(f"let n{i + 1} = n{i} * n{i}\n" for i in range(40))
    text = "let n0 = 10\n" + lets + BASE.replace("steps = 10", "steps = n40")
    errors = [c for c, _ in _errors(elaborate_text(text, "t.sw"))]
    assert errors[0] == "SW007"


def test_a_deep_let_chain_is_an_error_not_a_recursion_error():
    lets = "".join(f"let v{i + 1} = v{i} + 1\n" for i in range(5000))
    text = "let v0 = 1\n" + lets + BASE.replace("steps = 10", "steps = v5000")
    r = elaborate_text(text, "t.sw")
    sw007 = [d for d in r.diagnostics if d.code == "SW007"]
    assert len(sw007) == 1
    assert sw007[0].message == f"`v4900` is reached through more than {MAX_LET_DEPTH} nested lets"


def test_a_let_chain_within_the_limit_evaluates():
    lets = "".join(f"let v{i + 1} = v{i} + 1\n" for i in range(MAX_LET_DEPTH - 1))
    text = "let v0 = 1\n" + lets + BASE.replace("steps = 10", f"steps = v{MAX_LET_DEPTH - 1}")
    r = elaborate_text(text, "t.sw")
    assert codes(r) == [] and r.spec.grow.settings.steps == MAX_LET_DEPTH


def test_a_deep_include_chain_is_an_error_not_a_recursion_error(tmp_path):
    for i in range(2000):
        text = f'include "c{i + 1}.sw"\n' if i < 1999 else BASE
        (tmp_path / f"c{i}.sw").write_text(text, encoding="utf-8")
    r = elaborate_file(tmp_path / "c0.sw")
    assert [(c, m) for c, m in _errors(r)] == [
        ("SW007", f"include chain deeper than {MAX_DEPTH} files")
    ]


def test_an_include_chain_within_the_limit_loads(tmp_path):
    for i in range(MAX_DEPTH):
        text = f'include "c{i + 1}.sw"\n' if i < MAX_DEPTH - 1 else BASE
        (tmp_path / f"c{i}.sw").write_text(text, encoding="utf-8")
    assert codes(elaborate_file(tmp_path / "c0.sw")) == []


@pytest.mark.parametrize("kind", ["include", "extends"])
@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_devices_are_not_read(tmp_path, kind, device):
    if not os.path.exists(device):
        pytest.skip(f"no {device} here")
    main = tmp_path / "main.sw"
    main.write_text(f'{kind} "{device}"\n' + BASE, encoding="utf-8")
    assert _errors(elaborate_file(main)) == [
        ("SW004", f"{device} is not a regular file (a device, FIFO or socket)")
    ]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_with_no_writer_is_not_opened(tmp_path):
    os.mkfifo(tmp_path / "pipe.sw")
    (tmp_path / "main.sw").write_text('include "pipe.sw"\n' + BASE, encoding="utf-8")
    # in a subprocess: were it opened, it would block forever
    code = (
        "from stackwise_dsl.elaborate import elaborate_file\n"
        f"r = elaborate_file({str(tmp_path / 'main.sw')!r})\n"
        "print([(d.code, d.message) for d in r.diagnostics])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    expected = f"{tmp_path / 'pipe.sw'} is not a regular file (a device, FIFO or socket)"
    assert done.stdout.strip() == str([("SW004", expected)])


def test_a_file_over_the_size_cap_is_not_read(tmp_path):
    big = tmp_path / "lets.sw"
    line = "let a = 1\n"
    big.write_text(line * (MAX_FILE_BYTES // len(line) + 1), encoding="utf-8")
    (tmp_path / "main.sw").write_text('include "lets.sw"\n' + BASE, encoding="utf-8")
    size = big.stat().st_size
    assert _errors(elaborate_file(tmp_path / "main.sw")) == [
        ("SW004", f"{big} is {size:,} bytes; spec files are read up to 1,048,576 bytes (1 MiB)")
    ]
