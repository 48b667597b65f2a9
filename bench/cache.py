"""Activation caching: step time of the last append stage relative to the first.

Append growth of four one-block stacks over a frozen trunk, run in the same process with
`cache = memory` and with `cache = off`. A cached stage keeps the embedding frozen (it is part
of the cached output), so the fair uncached run freezes it too after stage 1 (`off`); the
default uncached run, which trains the embedding and so backpropagates through the trunk, is
reported as `off_embeddings_train`. Without the cache the last stage runs three
frozen stacks forward before its new stack; with it each window's trunk output is computed
once per stage and read back afterwards. The data set is small enough that every stage sees
each window about five times, the regime caching is for (a stage that sees each window once
computes each trunk output once with or without a cache). Step time per stage is the stage's
wall time over its steps, cache fills and evaluation included. Target (issue 3): with the
cache, the last stage at most 1.3x the first.

    python bench/cache.py [--steps 150] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from common import machine

ROOT = Path(__file__).resolve().parent.parent

SPEC = """model { d_model = 128, context = 64 }
block b { attention = gpt_style(heads = 4), ffn = swiglu }
stack s = 1 x b
objective = clm
grow append 4 x s {
  steps = STEPS, cache = CACHE, trunk { frozen }
  EXTRA
}
data {
  source = synthetic(task = reverse, symbols = 32, samples = 2048)
  tokenizer = bytes, batch = 16
}
optimizer = adamw(lr = 1e-3, warmup = 10)
run { seed = 0, log every 25 steps, eval_batches = 1 }
"""


VARIANTS = {
    "memory": ("memory", ""),
    "off": ("off", "stage 2..4 { embeddings = frozen }"),
    "off_embeddings_train": ("off", ""),
}


def step_times(variant: str, steps: int) -> list[float]:
    """Seconds per step of each stage."""
    from stackwise_dsl import runtime
    from stackwise_dsl.frontend import check_text
    from stackwise_dsl.lower import to_plan

    cache, extra = VARIANTS[variant]
    text = SPEC.replace("STEPS", str(steps)).replace("CACHE", cache).replace("EXTRA", extra)
    report = check_text(text, "bench.sw")
    assert report.ok, report.diagnostics
    plan = to_plan(report.spec, name="bench")
    with tempfile.TemporaryDirectory() as tmp:
        summaries = runtime.run(plan, Path(tmp) / "run")
    return [s.seconds / s.steps for s in summaries]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    runs: dict[str, list[list[float]]] = {v: [] for v in VARIANTS}
    for _ in range(args.rounds):
        for cache in runs:
            runs[cache].append(step_times(cache, args.steps))
    result: dict = {
        "machine": machine(with_torch=True),
        "model": "append 4 x (1 block, d_model 128, gpt_style 4 heads, swiglu), "
        "context 64, batch 16",
        "steps_per_stage": args.steps,
        "rounds": args.rounds,
    }
    for cache, rounds in runs.items():
        per_stage = [statistics.median(r[i] for r in rounds) for i in range(len(rounds[0]))]
        result[f"cache_{cache}"] = {
            "ms_per_step_by_stage": [round(1000 * x, 1) for x in per_stage],
            "last_over_first": round(per_stage[-1] / per_stage[0], 3),
        }
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "cache.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
