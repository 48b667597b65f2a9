"""`sw check specs/diffusion.sw` wall time against a bare `python -c pass`, same run.

The two commands alternate, so machine noise hits both alike. "cold" gives every `sw check`
an empty cache directory (parser tables rebuilt, no remembered result): the first check of a
new or edited spec. "warm" shares one cache directory, filled by a first run: re-checking an
unchanged spec. Target (issue 2): at most 10x.

The package's bytecode is compiled first, as pip does when it installs a wheel, so that an
environment with PYTHONDONTWRITEBYTECODE set measures what users run.

    python bench/check_startup.py [--runs 30]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine

ROOT = Path(__file__).resolve().parent.parent
SW = Path(sys.executable).parent / "sw"
SPEC = "specs/diffusion.sw"


def _time(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    result = subprocess.run(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{cmd} failed: {result.stderr.decode()}")
    return elapsed


def measure(runs: int) -> dict:
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(ROOT / "stackwise_dsl")], check=True
    )
    base, cold, warm = [], [], []
    warm_cache = tempfile.mkdtemp(prefix="sw-bench-warm-")
    warm_env = {**os.environ, "XDG_CACHE_HOME": warm_cache}
    _time([str(SW), "check", SPEC], warm_env)  # fill the warm cache
    for _ in range(runs):
        base.append(_time([sys.executable, "-c", "pass"], dict(os.environ)))
        cold_env = {**os.environ, "XDG_CACHE_HOME": tempfile.mkdtemp(prefix="sw-bench-cold-")}
        cold.append(_time([str(SW), "check", SPEC], cold_env))
        warm.append(_time([str(SW), "check", SPEC], warm_env))
    med = {
        k: statistics.median(v) * 1000 for k, v in (("base", base), ("cold", cold), ("warm", warm))
    }
    return {
        "machine": machine(),
        "runs": runs,
        "python_c_pass_ms": round(med["base"], 1),
        "sw_check_cold_ms": round(med["cold"], 1),
        "sw_check_warm_ms": round(med["warm"], 1),
        "ratio_cold": round(med["cold"] / med["base"], 2),
        "ratio_warm": round(med["warm"] / med["base"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    result = measure(args.runs)
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "check_startup.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
