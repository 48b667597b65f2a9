"""The `sw` command: output, formats and exit codes (0 ok, 1 problems, 2 usage)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stackwise_dsl.cli import app
from tests.conftest import ROOT, SPECS
from tests.elaborate.helpers import BASE

runner = CliRunner()


def run(*args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input)


@pytest.fixture
def spec(tmp_path):
    def write(text, name="spec.sw"):
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


# what the shipped specs may warn about on a CPU machine: the data the user brings
# (shakespeare.sw, progressive.sw, llama70b.sw) and llama70b.sw's GPU
MACHINE_WARNINGS = {
    "shakespeare": ["SW604"],
    "progressive": ["SW604"],
    "llama70b": ["SW603", "SW604", "SW604"],
}


def test_check_clean_specs_exit_zero():
    result = run("check", *SPECS)
    assert result.exit_code == 0, result.output
    plain = [s for s in SPECS if s.stem not in MACHINE_WARNINGS]
    lines = dict(line.rsplit(": ", 1) for line in result.output.splitlines() if ": " in line)
    assert all(lines[str(s)] == "ok" for s in plain), result.output
    found = json.loads(run("check", *SPECS, "--format", "json").output)["files"]
    for entry in found:
        stem = Path(entry["file"]).stem
        expected = MACHINE_WARNINGS.get(stem, [])
        if stem == "llama70b" and _has_cuda():
            expected = ["SW604", "SW604"]
        assert entry["errors"] == 0
        assert sorted(d["code"] for d in entry["diagnostics"]) == expected, stem


def _has_cuda() -> bool:
    from stackwise_dsl.machine.probe import cuda_present

    return cuda_present()


def test_check_and_run_say_which_data_files_are_not_on_this_machine(tmp_path):
    result = run("check", ROOT / "specs" / "llama70b.sw", "--format", "json")
    assert result.exit_code == 0  # the data may live where the run will run
    found = json.loads(result.output)["files"][0]["diagnostics"]
    absent = [
        (d["code"], d["severity"], d["message"], d["line"]) for d in found if d["code"] == "SW604"
    ]
    assert absent == [
        ("SW604", "warning", "no file matches data/*.txt", 35),
        ("SW604", "warning", "there is no file tokenizer.json", 35),
    ]
    plan = run("plan", ROOT / "specs" / "llama70b.sw", "--format", "json")
    assert plan.exit_code == 0  # a plan is made where the data is not
    shakespeare = ROOT / "specs" / "shakespeare.sw"
    refused = run("run", shakespeare, "--run-dir", tmp_path / "run")
    assert refused.exit_code == 1
    assert "warning[SW604]: there is no file input.txt" in refused.stdout
    assert refused.stderr == "error: the run cannot start without the data named above\n"
    assert not (tmp_path / "run").exists()
    text = tmp_path / "input.txt"
    text.write_text("To be, or not to be, that is the question.\n" * 40)
    given = run("check", shakespeare, "--set", f"data.source.files={text}")
    assert (given.exit_code, given.output) == (0, f"{shakespeare}: ok\n")


def test_check_reports_every_error_and_exits_one(spec):
    path = spec(BASE.replace("heads = 4", "heads = 5").replace("steps = 10", "steps = 0"))
    result = run("check", path)
    assert result.exit_code == 1
    assert "error[SW201]: heads (5) does not divide d_model (64)" in result.output
    assert "error[SW301]: `steps` is 0" in result.output
    assert result.output.strip().endswith("spec.sw: 2 errors")


def test_warnings_alone_exit_zero(spec):
    result = run("check", spec("let unused = 1\n" + BASE))
    assert result.exit_code == 0 and "ok (1 warning)" in result.output


def test_check_json(spec):
    path = spec(BASE.replace("heads = 4", "heads = 5"))
    result = run("check", path, "--format", "json")
    assert result.exit_code == 1
    (file,) = json.loads(result.output)["files"]
    assert (file["ok"], file["errors"], file["warnings"]) == (False, 1, 0)
    (d,) = file["diagnostics"]
    assert (d["code"], d["severity"], d["line"], d["column"], d["end_column"]) == (
        "SW201",
        "error",
        2,
        35,
        36,
    )
    assert d["notes"][0]["line"] == 1 and d["hint"].startswith("use a divisor of 64")


def test_unreadable_file_and_bad_set_are_usage_errors(spec):
    assert run("check", "no/such.sw").exit_code == 2
    result = run("check", spec(BASE), "--set", "model.d_model")
    assert result.exit_code == 2 and "SW006" in result.output
    assert run("check").exit_code == 2  # no files


def test_set_reaches_the_spec(spec):
    path = spec(BASE)
    assert run("check", path, "--set", "model.d_model=60").exit_code == 1  # odd head dim: SW203
    assert run("check", path, "-s", "model.d_model=128").exit_code == 0


def test_fmt_check_diff_and_write(spec):
    path = spec("model {d_model=64,context=32}\n" + BASE.split("\n", 1)[1])
    before = path.read_text()
    result = run("fmt", path, "--check")
    assert result.exit_code == 1 and "1 file would be reformatted" in result.output
    result = run("fmt", path, "--diff")
    assert result.exit_code == 0
    assert "-model {d_model=64,context=32}\n+model { d_model = 64, context = 32 }" in result.output
    assert path.read_text() == before  # --check and --diff change nothing
    assert run("fmt", path).exit_code == 0
    assert path.read_text().startswith("model { d_model = 64, context = 32 }\n")
    assert run("fmt", path, "--check").exit_code == 0


def test_fmt_keeps_permissions_and_refuses_broken_files(spec):
    path = spec("run {seed=1}\n")
    path.chmod(0o640)
    assert run("fmt", path).exit_code == 0 and (path.stat().st_mode & 0o777) == 0o640
    broken = spec("run { seed = }\n", "broken.sw")
    result = run("fmt", broken)
    assert result.exit_code == 1 and "SW001" in result.output
    assert broken.read_text() == "run { seed = }\n"
    assert run("fmt", "no/such.sw").exit_code == 2


def test_explain():
    result = run("explain", "sw201")
    assert result.exit_code == 0
    assert result.output.startswith("SW201 (error): heads do not divide d_model")
    assert "error[SW201]: heads (5) does not divide d_model (64)" in result.output
    result = run("explain", "SW999")
    assert result.exit_code == 2


def test_version():
    result = run("--version")
    assert result.exit_code == 0 and result.output.startswith("stackwise-dsl 0.")


def _module(*args, stdin=None):
    return subprocess.run(
        [sys.executable, "-m", "stackwise_dsl", *args],
        input=stdin, capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip


def test_python_dash_m_is_the_same_app():
    result = _module("check", "specs/tiny.sw")
    assert (result.returncode, result.stdout) == (0, "specs/tiny.sw: ok\n")


def test_fmt_stdin_to_stdout():
    result = _module("fmt", "-", stdin="run {seed=1}\n")
    assert (result.returncode, result.stdout) == (0, "run { seed = 1 }\n")


def test_front_end_never_imports_torch_or_the_runtime():
    """`sw check`, `sw fmt` and everything before lowering stay light (no torch)."""
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from stackwise_dsl.cli import app\n"
        "r = CliRunner()\n"
        "assert r.invoke(app, ['check', *sys.argv[1:]]).exit_code == 0\n"
        "assert r.invoke(app, ['fmt', '--check', *sys.argv[1:]]).exit_code == 0\n"
        "import stackwise_dsl.testing, stackwise_dsl.ir.printer, stackwise_dsl.cli.explain\n"
        "import stackwise_dsl.lsp.server, stackwise_dsl.lsp.outline\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'peft', 'bitsandbytes',"
        " 'numpy') or m.startswith('stackwise_dsl.runtime')]\n"
        "assert not heavy, heavy\n"
        "print('light')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, *map(str, SPECS)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "light\n"


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="no FIFOs here")
@pytest.mark.parametrize("command", ["check", "fmt", "plan", "compile"])
def test_commands_refuse_devices_and_fifos_without_reading_them(command, tmp_path):
    import os

    os.mkfifo(tmp_path / "pipe.sw")
    for target in ("/dev/zero", str(tmp_path / "pipe.sw")):
        result = subprocess.run(
            [sys.executable, "-m", "stackwise_dsl", command, target],
            capture_output=True, text=True, cwd=ROOT, timeout=60, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        said = result.stdout + result.stderr
        assert result.returncode == 2, said
        assert f"{target} is not a regular file (a device, FIFO or socket)" in said
        assert "Traceback" not in said


def test_fmt_reads_at_most_a_spec_file_from_stdin():
    result = _module("fmt", "-", stdin="#" * (1 << 20) + "\n")
    assert result.returncode == 2
    said = result.stdout + result.stderr
    assert said == "error: standard input is longer than 1,048,576 bytes (1 MiB)\n"


def test_fmt_through_a_symlink_formats_the_file_it_names(tmp_path):
    real = tmp_path / "real.sw"
    real.write_text("run {seed=1}\n")
    link = tmp_path / "link.sw"
    link.symlink_to(real)
    result = run("fmt", link)
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and real.read_text() == "run { seed = 1 }\n"
