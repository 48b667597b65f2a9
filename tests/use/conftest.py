"""Small trained runs, one per objective, shared by the tests of using a run."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackwise_dsl import runtime
from tests.runtime.helpers import plan_of, small

SPECS = {
    "clm": small("clm", grow="append 2 x s"),
    "mlm": small("mlm", grow="append 2 x s"),
    # prepend: stage k enters at stack 3 - k; a fuse stage trains the whole rack at the end
    "depth": small(
        "masked_diffusion(time = depth)",
        grow="prepend 3 x s",
        extra="fuse { steps = 2, trunk { full } }\n",
    ),
    "append": small("masked_diffusion(time = depth)", grow="append 3 x s"),
    "input": small(
        "masked_diffusion(time = input(embedding = sinusoidal), mask = linear(1.0 -> 0.05))",
        grow="end_to_end 2 x s",
    ),
}


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory) -> dict[str, Path]:
    """name → the directory of a finished run of SPECS[name] (a few seconds each)."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name, text in SPECS.items():
        plan = plan_of(text, name)
        runtime.run(plan, root / name, spec_text=text)
        out[name] = root / name
    return out
