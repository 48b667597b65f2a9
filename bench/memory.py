"""Memory and step time of one stage with the trunk in fp32, bf16, nf4 and nvfp4.

The model: 8 stacks of 2 blocks each, d_model 1024 (causal MHA with 8 heads, SwiGLU 2816),
205M parameters; context 64, batch 4, bytes of the `stdlib` corpus. Weights dominate.

Measured: the last append stage (7 frozen trunk stacks, 1 new stack training in fp32 with
AdamW). A setup run trains stages 1-7 for one step each (trunk in fp32) and leaves its
stage-end checkpoints; each variant then copies that run directory, rewrites its plan with
the variant's trunk precision and resumes it in a fresh process, which runs only stage 8.
So each process holds what a real run holds at stage 8: the trunk in its precision (its fp32
masters stay in the stage-end checkpoints on disk), the new stack, its gradients and
optimizer state. Peak resident memory (ru_maxrss) of that process is reported, with:
- `baseline`: a process that imports torch and the runtime and prepares the data;
- `end_to_end`: the same final model, all 8 stacks training together (fp32, AdamW).
Step time: median of the logged tokens/s windows of stage 8 (first step left out), as ms
per step, with its ratio to bf16.

    python bench/memory.py [--steps 6]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import machine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SPEC = """model { d_model = 1024, context = 64, head = tied }
block b { attention = gpt_style(heads = 8), ffn = swiglu(hidden = 2816) }
stack s = 2 x b
objective = clm
GROW
data { source = stdlib, tokenizer = bytes, batch = 4, validation = 0.01 }
optimizer = adamw(lr = 1e-4, warmup = 0)
run { seed = 0, log every 1 steps, eval_batches = 1 }
"""
GROWTH = "grow append 8 x s { steps = STEPS, trunk { frozen, precision = PREC } }"
END_TO_END = "grow end_to_end 8 x s { steps = STEPS }"
VARIANTS = ("fp32", "bf16", "nf4", "nvfp4")


def plan_for(grow: str, steps: int, precision: str = "fp32"):
    from stackwise_dsl.frontend import check_text
    from stackwise_dsl.lower import to_plan

    text = SPEC.replace("GROW", grow.replace("PREC", precision)).replace("STEPS", str(steps))
    report = check_text(text, "memory.sw")
    errors = [d for d in report.diagnostics if d.is_error]
    assert not errors, [(d.code, d.message) for d in errors]
    return to_plan(report.spec, name="memory")


def peak_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# --- child processes ------------------------------------------------------------------------


def child(kind: str, run_dir: Path, steps: int) -> dict:
    import attrs
    import torch

    from stackwise_dsl import runtime
    from stackwise_dsl.data import prepare

    torch.set_num_threads(os.cpu_count() or 1)
    if kind == "baseline":
        plan = plan_for(GROWTH, steps)
        prepare(plan.data, plan.run.seed)
        return {"peak_mib": peak_mib()}
    if kind == "setup":  # stages 1-7, one step each, leaving stage-end checkpoints
        plan = plan_for(GROWTH, 1)
        runtime.run(attrs.evolve(plan, stages=plan.stages[:7]), run_dir)
        return {}
    if kind == "end_to_end":
        runtime.run(plan_for(END_TO_END, steps), run_dir)
    else:  # resume the setup run at stage 8, with this trunk precision
        runtime.resume(run_dir)
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = max(r["stage"] for r in records)
    rates = [r["tokens_per_s"] for r in records if r["kind"] == "train" and r["stage"] == last]
    tokens = 4 * 64
    return {
        "peak_mib": peak_mib(),
        "ms_per_step": 1000 * tokens / statistics.median(rates[1:] or rates),
    }


def spawn(kind: str, run_dir: Path, steps: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--run-dir", str(run_dir),
         "--steps", str(steps)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--child")
    parser.add_argument("--run-dir", type=Path)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.run_dir, args.steps)))
        return

    from stackwise_dsl.lower.serialize import to_json

    results: dict = {"machine": machine(with_torch=True), "steps": args.steps}
    from stackwise_dsl import estimate

    results["parameters"] = estimate.final_params(plan_for(GROWTH, args.steps))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        results["baseline"] = spawn("baseline", tmp / "baseline", args.steps)
        spawn("setup", tmp / "setup", args.steps)
        for precision in VARIANTS:
            run_dir = tmp / precision
            shutil.copytree(tmp / "setup", run_dir)
            variant = plan_for(GROWTH, args.steps, precision)
            (run_dir / "plan.json").write_text(json.dumps(to_json(variant)))
            results[precision] = spawn(precision, run_dir, args.steps)
        results["end_to_end"] = spawn("end_to_end", tmp / "end_to_end", args.steps)
    fp32, e2e = results["fp32"]["peak_mib"], results["end_to_end"]["peak_mib"]
    bf16_ms = results["bf16"]["ms_per_step"]
    for name in (*VARIANTS, "end_to_end"):
        r = results[name]
        r["peak_over_fp32"] = round(r["peak_mib"] / fp32, 3)
        r["peak_over_end_to_end"] = round(r["peak_mib"] / e2e, 3)
        r["step_time_over_bf16"] = round(r["ms_per_step"] / bf16_ms, 3)
        r["peak_mib"], r["ms_per_step"] = round(r["peak_mib"], 1), round(r["ms_per_step"], 1)
    results["baseline"]["peak_mib"] = round(results["baseline"]["peak_mib"], 1)
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "memory.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
