"""The built wheel carries the grammar and templates, installs cleanly, and `sw check` works
from it in a fresh virtual environment (outside this checkout)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def _run(args, **kw):
    result = subprocess.run(args, capture_output=True, text=True, timeout=900, **kw)
    assert result.returncode == 0, f"{args}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def test_wheel_installs_and_checks_a_spec(tmp_path):
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(dist), str(ROOT)])
    (wheel,) = dist.glob("stackwise_dsl-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "stackwise_dsl/grammars/sw.lark" in names
    assert "stackwise_dsl/codegen/README.md" in names
    assert "stackwise_dsl/codegen/script.py.j2" in names

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    # The repository's install-time pins (the CPU torch build on disk), as `make` uses them.
    constraints = ["-c", str(ROOT / "constraints.txt")]
    _run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet", *constraints, str(wheel)])

    spec = ROOT / "specs" / "diffusion.sw"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = _run([str(bin_dir / "sw"), "check", str(spec)], cwd=tmp_path, env=env)
    assert result.stdout.strip() == f"{spec}: ok"
    broken = tmp_path / "broken.sw"
    broken.write_text(spec.read_text().replace("heads = 4", "heads = 5"), encoding="utf-8")
    result = subprocess.run(
        [str(bin_dir / "sw"), "check", str(broken)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 1 and "error[SW201]" in result.stdout
    where = _run(
        [str(bin_dir / "python"), "-c", "import stackwise_dsl, sys; print(stackwise_dsl.__file__)"],
        cwd=tmp_path,
    )
    assert str(venv) in where.stdout  # the installed package, not the checkout
    script = _run([str(bin_dir / "sw"), "compile", str(spec)], cwd=tmp_path, env=env).stdout
    assert "def main() -> None:" in script  # the template ships in the wheel
