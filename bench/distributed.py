"""Two gloo processes against one, on this machine's CPUs: the same run, the same numbers,
at what speed.

The run: `specs/progressive.sw`'s model (6 blocks, d_model 128, context 128) on the stdlib's
bytes, one end-to-end stage of STEPS steps at batch 32 (every weight trains, so DDP sends
every gradient and FSDP2 gathers every weight), the first WARMUP steps left out of the timing.
Configurations, each `sw run ... --format json` in a fresh process:

- 1 process with all the machine's threads (the baseline), and with half of them;
- `--nproc 2` with DDP and with FSDP2 (`run.distributed`), each process with half the threads.

Rates are the run's own tokens per second over the timed steps (from metrics.jsonl's
`tokens_per_s`, logged every step). The final losses are printed too: they must agree.

    python bench/distributed.py [--steps 60] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import machine

ROOT = Path(__file__).resolve().parent.parent


def _spec(steps: int, distributed: str) -> str:
    """specs/progressive.sw's model, end to end on the stdlib's bytes."""
    return (
        "model { d_model = 128, context = 128, head = tied }\n"
        "block gpt { attention = gpt_style(heads = 4), ffn = swiglu }\n"
        "stack layer = 2 x gpt\nobjective = clm\n"
        f"grow end_to_end 3 x layer {{ steps = {steps} }}\n"
        "data { source = stdlib, tokenizer = bytes, batch = 32, validation = 0.1, split = tail }\n"
        "optimizer = adamw(lr = 1e-3, warmup = 10)\n"
        f"run {{ seed = 0, log every 1 steps, distributed = {distributed} }}\n"
    )


def run(out: Path, name: str, steps: int, warmup: int, threads: int, nproc: int,
        distributed: str) -> dict:  # fmt: skip
    spec = out / f"{name}.sw"
    spec.write_text(_spec(steps, distributed))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "stackwise_dsl", "run", str(spec), "--run-dir",
               str(out / name), "--format", "json", "--nproc", str(nproc)]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    records = [json.loads(x) for x in (out / name / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train" and r["step"] > warmup]
    rate = len(train) / sum(1 / r["tokens_per_s"] for r in train)  # tokens/s over the steps
    return {"name": name, "threads": threads, "processes": nproc, "tokens_per_s": rate,
            "loss": train[-1]["loss"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="sw-distributed-"))
    out.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 2
    half = max(1, cores // 2)
    rows = [
        run(out, "one-all-threads", args.steps, args.warmup, cores, 1, "ddp"),
        run(out, "one-half-threads", args.steps, args.warmup, half, 1, "ddp"),
        run(out, "two-ddp", args.steps, args.warmup, half, 2, "ddp"),
        run(out, "two-fsdp", args.steps, args.warmup, half, 2, "fsdp"),
    ]
    print(machine(with_torch=True))
    base = rows[0]["tokens_per_s"]
    print("| run | processes x threads | tokens/s | ratio to 1 x all | last loss |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['processes']} x {r['threads']} | {r['tokens_per_s']:,.0f} "
              f"| {r['tokens_per_s'] / base:.2f} | {r['loss']:.6f} |")  # fmt: skip


if __name__ == "__main__":
    main()
