"""Quality: final validation losses of the example specs.

1. `specs/shakespeare.sw` on `../shared/data/tinyshakespeare.txt` (character-level CLM):
   validation loss after each stage, in nats and bits per character.
2. `specs/diffusion.sw` (stage-wise, right to left, time as depth, NF4 trunk with LoRA) against
   `specs/baseline.sw` (the same final model trained end to end with time as input) at equal
   steps (700 each). Each run's own validation loss uses its own noise, so both final models
   are also scored the same way: masked-token cross-entropy on the same held-out windows with
   the same masks at mask ratios 0.15, 0.3, 0.5, 0.7 and 0.9 (the time-as-input model is told
   the matching t).

    python bench/quality.py [--only shakespeare|diffusion] [--max-steps N]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import machine

ROOT = Path(__file__).resolve().parent.parent
SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
RATIOS = (0.15, 0.3, 0.5, 0.7, 0.9)
SCORE_BATCHES = 8


def plan_of(spec: str, overrides: list[str], max_steps: int | None):
    from stackwise_dsl.data import plan_spec
    from stackwise_dsl.frontend import check_file

    report = check_file(ROOT / "specs" / spec, overrides)
    assert report.ok, [d.message for d in report.diagnostics]
    plan = plan_spec(report.spec, spec.removesuffix(".sw"))
    if max_steps is not None:
        import attrs

        plan = attrs.evolve(
            plan, stages=tuple(attrs.evolve(s, steps=min(s.steps, max_steps)) for s in plan.stages)
        )
    return plan


def train(plan, run_dir: Path) -> tuple[list, float]:
    from stackwise_dsl import runtime

    started = time.perf_counter()
    summaries = runtime.run(plan, run_dir)
    return summaries, time.perf_counter() - started


def masked_scores(plan, run_dir: Path) -> dict[str, float]:
    """Masked-token cross-entropy of a run's final model at fixed mask ratios."""
    from stackwise_dsl.core.batches import eval_ids
    from stackwise_dsl.core.objectives import Vocabulary, loss_of, make_batch
    from stackwise_dsl.core.stage_model import StageModel
    from stackwise_dsl.data import prepare
    from stackwise_dsl.lower import plan as p
    from stackwise_dsl.lower.schedule import ratio_at
    from stackwise_dsl.runtime import checkpoint

    store = checkpoint.load(checkpoint.latest(run_dir), plan)[0]
    stage = plan.stages[-1]
    model = StageModel(plan, stage, store, torch.device("cpu")).eval()
    data = prepare(plan.data, plan.run.seed)
    vocab = Vocabulary(mask=data.tokenizer.specials.mask, ordinary=data.tokenizer.ordinary)
    batches = eval_ids(data.val, plan.data.batch, SCORE_BATCHES)
    scores = {}
    for ratio in RATIOS:
        t = None
        if isinstance(
            getattr(stage.objective, "time", None), p.InputTime
        ):  # the t whose scheduled ratio is closest
            grid = np.linspace(1e-3, 1.0, 1000)
            t = float(
                grid[np.argmin([abs(ratio_at(stage.objective.mask, 1 - g) - ratio) for g in grid])]
            )
        losses = []
        with torch.no_grad():
            for ids in batches:
                windows = torch.from_numpy(data.windows[ids])
                b = make_batch(windows, ids, stage.objective, ratio, t, seed=12345, vocab=vocab)
                h = model.hidden(b.inputs, b.t)
                losses.append(loss_of(model.logits, h, b.targets).item())
        scores[str(ratio)] = round(float(np.mean(losses)), 4)
    scores["mean"] = round(float(np.mean([scores[str(r)] for r in RATIOS])), 4)
    return scores


def shakespeare(max_steps: int | None) -> dict:
    if not SHAKESPEARE.exists():
        return {"skipped": f"{SHAKESPEARE} not found"}
    plan = plan_of("shakespeare.sw", [f'data.source.files="{SHAKESPEARE}"'], max_steps)
    with tempfile.TemporaryDirectory() as tmp:
        summaries, seconds = train(plan, Path(tmp) / "run")
    return {
        "steps": [s.steps for s in summaries],
        "val_loss_by_stage": [round(s.val_loss, 4) for s in summaries],
        "final_val_loss": round(summaries[-1].val_loss, 4),
        "final_bits_per_char": round(summaries[-1].val_loss / math.log(2), 3),
        "seconds": round(seconds, 1),
    }


def diffusion(max_steps: int | None) -> dict:
    out = {}
    for spec in ("diffusion.sw", "baseline.sw"):
        plan = plan_of(spec, [], max_steps)
        with tempfile.TemporaryDirectory() as tmp:
            summaries, seconds = train(plan, Path(tmp) / "run")
            scores = masked_scores(plan, Path(tmp) / "run")
        out[spec.removesuffix(".sw")] = {
            "steps": sum(s.steps for s in summaries),
            "own_val_loss": round(summaries[-1].val_loss, 4),
            "masked_loss_at_ratio": scores,
            "seconds": round(seconds, 1),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["shakespeare", "diffusion"])
    parser.add_argument("--max-steps", type=int)
    args = parser.parse_args()
    result: dict = {
        "machine": machine(with_torch=True),
    }
    if args.only in (None, "shakespeare"):
        result["shakespeare"] = shakespeare(args.max_steps)
    if args.only in (None, "diffusion"):
        result["diffusion_vs_baseline"] = diffusion(args.max_steps)
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"quality{'-' + args.only if args.only else ''}.json").write_text(
        json.dumps(result, indent=2) + "\n"
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
