"""How long a compiled script is, and where its parts begin.

For each shipped spec named, `sw compile` writes the script; this counts its non-blank lines
(comments included) and finds the line where each part begins: the configuration, the model
(the first `nn.Module` class), the objective, the loop (`def train_stage`), the harness (the
trainer) and `main`. Goals (issue 10): tiny.sw at most 700 non-blank lines, gpt.sw at most 900,
diffusion.sw at most 1,200, the model defined before line 250.

    python bench/compile_size.py [tiny gpt diffusion ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from common import machine

ROOT = Path(__file__).resolve().parent.parent
GOALS = {"tiny": 700, "gpt": 900, "diffusion": 1200}
MODEL_BEFORE = 250
MARKS = {
    "configuration": r"^# --- configuration",
    "model": r"^class \w+\(nn\.Module\)",  # the first module class
    "objective and data": r"^# --- the objective and the data",
    "loop": r"^# --- the loop",
    "harness": r"^# --- the harness",
    "main": r"^def main\(",
}


def measure(spec: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"{spec}.py"
        subprocess.run([sys.executable, "-m", "stackwise_dsl", "compile", f"specs/{spec}.sw",
                        "-o", str(out)], cwd=ROOT, check=True)  # fmt: skip
        lines = out.read_text(encoding="utf-8").splitlines()
    starts = {}
    for part, pattern in MARKS.items():
        starts[part] = next((i + 1 for i, x in enumerate(lines) if re.match(pattern, x)), None)
    non_blank = sum(1 for x in lines if x.strip())
    goal = GOALS.get(spec)
    return {
        "spec": spec, "lines": len(lines), "non_blank": non_blank, "goal": goal,
        "met": goal is not None and non_blank <= goal and (starts["model"] or 10**9) < MODEL_BEFORE,
        "starts": starts,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", nargs="*", default=list(GOALS))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = [measure(spec) for spec in args.specs]
    print(f"machine: {machine()}")
    print(f"{'spec':<10} {'non-blank':>9} {'goal':>5}  model at  parts (first line)")
    for r in results:
        parts = ", ".join(f"{k} {v}" for k, v in r["starts"].items())
        print(f"{r['spec']:<10} {r['non_blank']:>9,} {r['goal'] or '-':>5}  "
              f"{r['starts']['model'] or '-':>8}  {parts}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "results": results}, indent=1))


if __name__ == "__main__":
    main()
