"""Stage-wise against end to end, fairly: at equal steps and at equal training FLOPs, over seeds.

CLM, on two corpora: tinyshakespeare's characters (`../shared/data/tinyshakespeare.txt`) and
the standard library's bytes. Every run holds out the same text (`split = tail`, the last
10%) and scores the same 8 x 32 windows spread over it, so final validation losses compare
directly. The runs, each for every seed:

- `stagewise`: `specs/shakespeare.sw` as shipped: append 3 stacks of 2 blocks, 300 steps
  each, the trunk frozen and cached.
- each recipe in RECIPES, a variant of it (a closing joint fine-tune, SegProp's top, ...).
- `e2e`: the same 6-block model end to end for as many steps (900).
- `e2e@flops(V)` for each stage-wise variant V: end to end for as many steps as give V's
  training FLOPs (what V's run logged, estimate/flops.py), with its own warmup and decay.

Masked diffusion, on the stdlib's bytes: `specs/diffusion.sw` (stage-wise, time as depth)
against `specs/baseline.sw` (end to end, time as input) at equal steps and at equal FLOPs,
both scored the same way (`sw eval`'s measure: masked-token loss on the same validation
windows with the same masks at ratios 0.15, 0.3, 0.5, 0.7 and 0.9, their mean).

    python bench/stagewise.py [--part clm|diffusion] [--corpus shakespeare|stdlib]
                              [--seeds 0 1 2] [--only NAME ...] [--out DIR]

Runs train in `DIR/<corpus>/<name>/seed<k>` (scratch: checkpoints, metrics); each finished
run's result is kept in the repository, `bench/results/stagewise/<corpus>/<name>/seed<k>.json`,
and a run with a result there is not run again, so the bench can be stopped and continued on
another day or machine. The tables (mean and spread over the seeds) are printed at the end,
for docs/benchmarks.md; `--report` prints them from the kept results alone.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import attrs
from common import machine

ROOT = Path(__file__).resolve().parent.parent
SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
GOAL = 0.05  # nats: the bar for "matches end to end"

SHIPPED = (ROOT / "specs" / "shakespeare.sw").read_text()
RESULTS = ROOT / "bench" / "results" / "stagewise"
DIFFUSION = ("diffusion", "baseline")


def _block(text: str, start: str) -> str:
    """The block of `text` that begins with `start`, to its matching closing brace."""
    i = text.index(start)
    depth = 0
    for j in range(text.index("{", i), len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i : j + 1]
    raise ValueError(f"no end to {start!r}")


GROW = _block(SHIPPED, "grow append")


def _grow(body: str) -> str:
    return SHIPPED.replace(GROW, body)


E2E = _grow("grow end_to_end 3 x layer {\n  steps = 900\n}")
RECIPES = {
    # a closing joint fine-tune: 3 x 250 stage-wise steps, then a sixth of all steps joint
    "fuse": _grow(
        "grow append 3 x layer {\n  steps = 250\n  cache = memory\n  trunk { frozen }\n}\n"
        "fuse { share = 0.1667, lr = 5e-4, trunk { full } }"
    ),
    # progressive stacking, shipped as specs/progressive.sw: each new stack starts as a copy
    # of the top one and the whole model trains in every stage, no cache
    "progressive": (ROOT / "specs" / "progressive.sw").read_text(),
    # SegProp: grow toward the input, the first stack (next to the head) keeps training
    "prepend_top": _grow(
        "grow prepend 3 x layer {\n  steps = 300\n  top = 1\n  trunk { frozen }\n}"
    ),
}
CORPORA = {
    "shakespeare": ["data.source.files={shakespeare}", "data.split=tail"],
    "stdlib": ["data.source=stdlib", "data.tokenizer=bytes", "data.split=tail"],
}


def _plan(text: str, overrides: list[str], name: str, seed: int, steps: int | None = None):
    from stackwise_dsl.data import plan_spec
    from stackwise_dsl.frontend import check_text

    report = check_text(text, str(ROOT / "specs" / f"{name}.sw"),
                        [*overrides, f"run.seed={seed}"])  # fmt: skip
    assert report.ok, [d.message for d in report.diagnostics if d.is_error]
    plan = plan_spec(report.spec, name)
    if steps is not None:  # one end-to-end stage of `steps`
        plan = attrs.evolve(plan, stages=(attrs.evolve(plan.stages[0], steps=steps),))
    return plan


def _record(run_dir: Path) -> Path:
    """Where the result of the run in `run_dir` (DIR/<corpus>/<name>/seed<k>) is kept."""
    return RESULTS / run_dir.parent.parent.name / run_dir.parent.name / f"{run_dir.name}.json"


def _train(plan, run_dir: Path, score: bool = False) -> dict:
    """Train `plan` in `run_dir` (once: a kept result is returned as it is); with `score`,
    also `sw eval`'s masked-diffusion measure."""
    from stackwise_dsl import runtime

    result_file = _record(run_dir)
    if result_file.exists():
        return json.loads(result_file.read_text())
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    plan = attrs.evolve(plan, run=attrs.evolve(plan.run, dir=str(run_dir)))
    started = time.perf_counter()
    summaries = runtime.run(plan, run_dir)
    seconds = time.perf_counter() - started
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    result = {
        "val_loss": summaries[-1].val_loss, "steps": sum(s.steps for s in plan.stages),
        "flops": records[-1]["flops"], "tokens": records[-1]["tokens"], "seconds": seconds,
        "stage_val": [s.val_loss for s in summaries], "seed": plan.run.seed,
    }  # fmt: skip
    if score:  # sw eval's measure on the run's own validation windows: the mean masked-token
        from stackwise_dsl.use.evaluation import evaluate_run  # loss over ratios 0.15-0.9
        from stackwise_dsl.use.scoring import headline

        result["score"] = headline(evaluate_run(run_dir)[0])
    result_file.parent.mkdir(parents=True, exist_ok=True)
    result_file.write_text(json.dumps(result, indent=1) + "\n")
    return result


def finished() -> list[str]:
    """The tables of every kept result, without training anything."""
    lines = []
    for corpus in sorted(p.name for p in RESULTS.iterdir() if p.is_dir()):
        results: dict[str, list[dict]] = {}
        for record in sorted((RESULTS / corpus).glob("*/seed*.json")):
            results.setdefault(record.parent.name, []).append(json.loads(record.read_text()))
        clm = {k: v for k, v in results.items() if k not in ("diffusion", "baseline",
                                                               "baseline@flops")}  # fmt: skip
        diff = {k: v for k, v in results.items() if k not in clm}
        if clm:
            names = [v for v in ("stagewise", *RECIPES) if v in clm]
            pairs = [(v, "e2e", "equal steps") for v in names]
            pairs += [(v, f"e2e@flops({v})", "equal FLOPs") for v in names]
            lines += [f"\n{corpus} (CLM):", *table(clm), *verdicts(clm, "val_loss", pairs)]
        if diff:
            pairs = [("diffusion", "baseline", "equal steps"),
                     ("diffusion", "baseline@flops", "equal FLOPs")]  # fmt: skip
            lines += [f"\n{corpus} (masked diffusion, sw eval's mean over ratios):",
                      *table(diff, "score"), *verdicts(diff, "score", pairs)]  # fmt: skip
    return lines


def clm(corpus: str, seeds: list[int], out: Path, only: set[str] | None) -> dict:
    overrides = [x.format(shakespeare=SHAKESPEARE) for x in CORPORA[corpus]]
    results: dict[str, list[dict]] = {}
    variants = {"stagewise": SHIPPED, **RECIPES}
    for name, text in variants.items():
        if only and name not in only:
            continue
        for seed in seeds:
            run = out / corpus / name / f"seed{seed}"
            results.setdefault(name, []).append(_train(_plan(text, overrides, name, seed), run))
            print(f"{corpus} {name} seed {seed}: {results[name][-1]}", flush=True)
            # end to end at the FLOPs this run spent, with its own schedule
            e2e = _plan(E2E, overrides, "e2e", seed)
            from stackwise_dsl.estimate.flops import stage_flops

            per_step = stage_flops(e2e, e2e.stages[0]).step()
            steps = max(1, round(results[name][-1]["flops"] / per_step))
            key = f"e2e@flops({name})"
            run = out / corpus / key / f"seed{seed}"
            results.setdefault(key, []).append(_train(_plan(E2E, overrides, "e2e", seed, steps),
                                                      run))  # fmt: skip
            print(f"{corpus} {key} seed {seed}: {results[key][-1]}", flush=True)
    if not only or "e2e" in only:
        for seed in seeds:
            run = out / corpus / "e2e" / f"seed{seed}"
            results.setdefault("e2e", []).append(_train(_plan(E2E, overrides, "e2e", seed), run))
            print(f"{corpus} e2e seed {seed}: {results['e2e'][-1]}", flush=True)
    return results


def diffusion(seeds: list[int], out: Path) -> dict:
    from stackwise_dsl.estimate.flops import stage_flops

    results: dict[str, list[dict]] = {}
    specs = {name: (ROOT / "specs" / f"{name}.sw").read_text() for name in DIFFUSION}
    for seed in seeds:
        run = out / "stdlib" / "diffusion" / f"seed{seed}"
        diff = _train(_plan(specs["diffusion"], [], "diffusion", seed), run, score=True)
        base = _plan(specs["baseline"], [], "baseline", seed)
        at_flops = max(1, round(diff["flops"] / stage_flops(base, base.stages[0]).step()))
        # the comparison the goal is about first, then the equal-steps one
        for name, steps in (("baseline@flops", at_flops), ("baseline", None)):
            run = out / "stdlib" / name / f"seed{seed}"
            plan = _plan(specs["baseline"], [], "baseline", seed, steps)
            results.setdefault(name, []).append(_train(plan, run, score=True))
        results.setdefault("diffusion", []).append(diff)
        print(f"diffusion seed {seed}: " + ", ".join(
            f"{k} {v[-1]['score']:.4f}" for k, v in results.items()), flush=True)  # fmt: skip
    return results


def _stats(values: list[float]) -> str:
    mean = statistics.fmean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.4f} ± {spread:.4f}"


def table(results: dict, key: str = "val_loss") -> list[str]:
    """Mean, spread and each seed's value; seconds where the record has them (a recovered
    record keeps only what the docs printed)."""
    lines = ["| Run | steps | training FLOPs | seconds | val loss (mean ± sd) | by seed |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for name, rows in results.items():
        rows = sorted(rows, key=lambda r: r.get("seed", 0))
        seconds = [r["seconds"] for r in rows if "seconds" in r]
        each = ", ".join(f"{r.get('seed', '?')}: {r[key]:.4f}" for r in rows)
        lines.append(
            f"| {name} | {rows[0]['steps']:,} | {statistics.fmean(r['flops'] for r in rows):.3g} "
            f"| {f'{statistics.fmean(seconds):.0f}' if seconds else '-'} "
            f"| {_stats([r[key] for r in rows])} | {each} |"
        )
    return lines


def verdicts(results: dict, key: str, pairs: list[tuple[str, str, str]]) -> list[str]:
    """For each (stage-wise, end-to-end, what) pair: the mean gap and whether it meets GOAL."""
    out = []
    for ours, theirs, what in pairs:
        if ours not in results or theirs not in results:
            continue
        gap = statistics.fmean(r[key] for r in results[ours]) - statistics.fmean(
            r[key] for r in results[theirs]
        )
        met = "met" if gap <= GOAL else "NOT met"
        out.append(f"- {ours} against {theirs} ({what}): {gap:+.4f} nats; goal {GOAL}: {met}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", choices=["clm", "diffusion", "both"], default="both")
    parser.add_argument("--corpus", choices=[*CORPORA, "both"], default="both")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "stagewise")
    parser.add_argument("--report", action="store_true", help="Only print the finished runs.")
    args = parser.parse_args()
    print(machine())
    if args.report:
        print("\n".join(finished()))
        return
    only = set(args.only) if args.only else None
    report = []
    if args.part in ("clm", "both"):
        for corpus in CORPORA if args.corpus == "both" else [args.corpus]:
            results = clm(corpus, args.seeds, args.out, only)
            pairs = [(v, "e2e", "equal steps") for v in ("stagewise", *RECIPES)]
            pairs += [(v, f"e2e@flops({v})", "equal FLOPs") for v in ("stagewise", *RECIPES)]
            report += [f"\n{corpus} (CLM):", *table(results), *verdicts(results, "val_loss",
                                                                         pairs)]  # fmt: skip
    if args.part in ("diffusion", "both"):
        results = diffusion(args.seeds, args.out)
        pairs = [("diffusion", "baseline", "equal steps"),
                 ("diffusion", "baseline@flops", "equal FLOPs")]  # fmt: skip
        report += ["\nstdlib (masked diffusion, sw eval's mean over ratios):",
                   *table(results, "score"), *verdicts(results, "score", pairs)]  # fmt: skip
    print("\n".join(report))


if __name__ == "__main__":
    main()
