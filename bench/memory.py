"""Memory: `sw plan`'s estimate against measured peaks, and one stage's memory and step time
with the trunk in fp32, bf16, nf4 and nvfp4.

Part `estimate`: every shipped spec that runs here (all but llama70b.sw), each stage cut to
`--steps` steps (gpt.sw and shakespeare.sw also at 60, so their activation caches grow),
trained in a fresh process whose peak tensor memory per stage is measured
(runtime/peaks.py: the CPU allocator's records, or `torch.cuda.max_memory_allocated`)
and set beside `estimate.memory.stage_memory` for the same plan and data. The goal: within
15% on every stage.

Part `precision`:

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

    python bench/memory.py [--part estimate|precision|both] [--steps 6]
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


SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
SHIPPED = ("tiny", "gpt", "bert", "attention", "baseline", "diffusion", "shakespeare",
           "progressive")  # fmt: skip
LONGER = ("gpt", "shakespeare")  # also run at 60 steps a stage: caches that grow


def estimate_child(name: str, run_dir: Path, steps: int) -> dict:
    """One shipped spec at `steps` steps a stage: each stage's estimate and measured peak."""
    import attrs

    from stackwise_dsl.data import plan_spec, prepare
    from stackwise_dsl.estimate.memory import stage_memory
    from stackwise_dsl.frontend import check_file
    from stackwise_dsl.ir.enums import Device
    from stackwise_dsl.runtime.peaks import stage_peaks

    overrides = [f"data.source.files={SHAKESPEARE}"] if name in ("shakespeare",
                                                                "progressive") else []  # fmt: skip
    report = check_file(ROOT / "specs" / f"{name}.sw", overrides)
    assert report.ok, [d.message for d in report.diagnostics if d.is_error]
    plan = plan_spec(report.spec, name)
    plan = attrs.evolve(plan, stages=tuple(attrs.evolve(s, steps=steps) for s in plan.stages))
    data = prepare(plan.data, plan.run.seed)
    windows = len(data.train) if data.text is None else len(data.text) - plan.data.seq_len
    measured = stage_peaks(plan, run_dir)
    cuda = plan.run.device is Device.CUDA
    rows = []
    for stage, peak in zip(plan.stages, measured, strict=True):
        mem = stage_memory(plan, stage, cuda=cuda, windows=windows)
        rows.append({"stage": stage.number, "measured": peak, "estimate": mem.peak,
                     "parts": mem.parts()})  # fmt: skip
    return {"spec": name, "steps": steps, "stages": rows}


def estimate_part(steps: int) -> dict:
    runs = [(name, steps) for name in SHIPPED] + [(name, 60) for name in LONGER]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, n in runs:
            result = spawn(f"estimate:{name}", Path(tmp) / f"{name}-{n}", n)
            results.append(result)
            for row in result["stages"]:
                ratio = row["estimate"] / row["measured"]
                mib = row["measured"] / 2**20, row["estimate"] / 2**20
                print(f"{name:12} steps {n:3} stage {row['stage']}: measured {mib[0]:8.2f} MiB, "
                      f"estimate {mib[1]:8.2f} MiB, ratio {ratio:.3f}", flush=True)  # fmt: skip
    worst = max(abs(r["estimate"] / r["measured"] - 1) for x in results for r in x["stages"])
    return {"runs": results, "worst_error": round(worst, 4), "goal": 0.15,
            "met": worst <= 0.15}  # fmt: skip


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
    parser.add_argument("--part", choices=["estimate", "precision", "both"], default="both")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="Steps a stage (default: 3 for estimate, 6 for precision).",
    )
    parser.add_argument("--child")
    parser.add_argument("--run-dir", type=Path)
    args = parser.parse_args()
    if args.child:
        if args.child.startswith("estimate:"):
            result = estimate_child(args.child.partition(":")[2], args.run_dir, args.steps)
        else:
            result = child(args.child, args.run_dir, args.steps)
        print(json.dumps(result))
        return
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    if args.part in ("estimate", "both"):
        estimates = {"machine": machine(with_torch=True), **estimate_part(args.steps or 3)}
        (out / "memory_estimate.json").write_text(json.dumps(estimates, indent=2) + "\n")
        print(f"worst error {estimates['worst_error']:.1%}; goal 15%: "
              f"{'met' if estimates['met'] else 'NOT met'}")  # fmt: skip
    if args.part in ("precision", "both"):
        precision_part(args.steps or 6, out)


def precision_part(steps: int, out: Path) -> None:
    """The trunk-precision variants (module docstring), each with `sw plan`'s estimate of
    its stage and its resident memory above the baseline process."""
    from stackwise_dsl.estimate.memory import stage_memory
    from stackwise_dsl.lower.serialize import to_json

    results: dict = {"machine": machine(with_torch=True), "steps": steps}
    from stackwise_dsl import estimate

    results["parameters"] = estimate.final_params(plan_for(GROWTH, steps))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        results["baseline"] = spawn("baseline", tmp / "baseline", steps)
        spawn("setup", tmp / "setup", steps)
        for precision in VARIANTS:
            run_dir = tmp / precision
            shutil.copytree(tmp / "setup", run_dir)
            variant = plan_for(GROWTH, steps, precision)
            (run_dir / "plan.json").write_text(json.dumps(to_json(variant)))
            results[precision] = spawn(precision, run_dir, steps)
        results["end_to_end"] = spawn("end_to_end", tmp / "end_to_end", steps)
    fp32, e2e = results["fp32"]["peak_mib"], results["end_to_end"]["peak_mib"]
    bf16_ms = results["bf16"]["ms_per_step"]
    base = results["baseline"]["peak_mib"]
    for name in (*VARIANTS, "end_to_end"):
        r = results[name]
        plan = plan_for(END_TO_END if name == "end_to_end" else GROWTH, steps,
                        "fp32" if name == "end_to_end" else name)  # fmt: skip
        r["estimate_mib"] = round(stage_memory(plan, plan.stages[-1]).peak / 2**20, 1)
        r["resident_over_baseline_mib"] = round(r["peak_mib"] - base, 1)
        r["estimate_over_resident"] = round(r["estimate_mib"] / (r["peak_mib"] - base), 3)
        r["peak_over_fp32"] = round(r["peak_mib"] / fp32, 3)
        r["peak_over_end_to_end"] = round(r["peak_mib"] / e2e, 3)
        r["step_time_over_bf16"] = round(r["ms_per_step"] / bf16_ms, 3)
        r["peak_mib"], r["ms_per_step"] = round(r["peak_mib"], 1), round(r["ms_per_step"], 1)
    results["baseline"]["peak_mib"] = round(results["baseline"]["peak_mib"], 1)
    (out / "memory.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
