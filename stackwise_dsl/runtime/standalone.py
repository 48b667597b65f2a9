"""What a compiled script (`sw compile`) adds to `sw run`'s harness: its own way in.

A script starts, trains and finishes with `sw run`'s own harness (runtime/__init__.py's
`begin`, `start` and `finishing`, the Trainer, checkpoint.py, metrics.py), so `sw export`
and `sw run --resume` read a script's run, a script resumes a run `sw run` started from the
same plan, and a damaged run directory gets the same message from both. What differs: the
plan comes from the script (`reopen` refuses a run directory of another plan), and
progress is printed lines (`Printed`) instead of the CLI's display. `sample_run` is the
script's `--sample`: the samplers of `sw sample` (core/sampling.py) on the run's latest
checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import attrs

from stackwise_dsl.core.errors import RunError
from stackwise_dsl.core.sampling import encode_prompt, sample
from stackwise_dsl.core.stage_model import StageModel
from stackwise_dsl.data.corpus import DataError
from stackwise_dsl.data.tokenizer import tokenizer_from
from stackwise_dsl.ir.enums import Device
from stackwise_dsl.lower import plan as p
from stackwise_dsl.lower.serialize import to_json
from stackwise_dsl.runtime import Complete, device_for
from stackwise_dsl.runtime.checkpoint import latest, load, plan_file, read_json, read_state
from stackwise_dsl.runtime.train import Progress


class Printed(Progress):
    """A script's progress: a line when a stage starts and one per logged step."""

    def stage_started(self, stage: p.Stage, done: int) -> None:
        print(f"stage {stage.number} ({stage.kind.value}), {stage.steps} steps")

    def stepped(self, stage: p.Stage, step: int, loss: float | None,
                tokens_per_s: float | None) -> None:  # fmt: skip
        if loss is not None:
            print(f"  step {step:>6}  loss {loss:.4f}  {tokens_per_s:,.0f} tokens/s")


def reopen(run_dir: Path, plan: p.Plan) -> tuple[p.Plan, Path | None]:
    """The run in `run_dir`, which this script's `plan` must have started (with the steps,
    device and directory the run has), and its latest checkpoint (None: none written yet).
    `Complete` for a run with nothing left to do."""
    ours = _ours(run_dir, plan, "resume it with what started it (`sw run --resume` reads the "
                 "run's own plan)")  # fmt: skip
    last = latest(run_dir)
    if last is not None:
        state = read_state(last, ours)
        if state["stage_done"] and state["stage"] >= len(ours.stages):
            raise Complete(f"the run in {run_dir} is already complete")
    return ours, last


def _ours(run_dir: Path, plan: p.Plan, instead: str) -> p.Plan:
    """The run's plan, if this script's `plan` started it (RunError saying what to do
    `instead` if not)."""
    theirs = read_json(plan_file(run_dir))
    try:  # what --max-steps changes: a stage's steps and the schedule's length
        steps = [(s["steps"], s.get("schedule_steps")) for s in theirs["stages"]]
        run = attrs.evolve(plan.run, dir=theirs["run"]["dir"],
                           device=Device(theirs["run"]["device"]))  # fmt: skip
    except (KeyError, TypeError, ValueError, AttributeError):
        steps, run = [], plan.run
    ours = None
    if len(steps) == len(plan.stages) and all(_a_count(n) and (m is None or _a_count(m))
                                              for n, m in steps):  # fmt: skip
        pairs = zip(plan.stages, steps, strict=True)
        stages = tuple(attrs.evolve(s, steps=n, schedule_steps=m) for s, (n, m) in pairs)
        ours = attrs.evolve(plan, stages=stages, run=run)
    if ours is None or to_json(ours) != theirs:
        raise RunError(f"{run_dir / 'plan.json'} is not this script's plan (a run of another "
                       f"plan, or its plan.json was changed): {instead}")  # fmt: skip
    return ours


def sample_run(run_dir: Path, plan: p.Plan, prompt: str, device: Device | None = None,
               **options) -> list[str]:  # fmt: skip
    """Samples from the latest checkpoint of the run in `run_dir` (which this script's plan
    must have started), as `sw sample` draws them (core/sampling.py `sample`: options), on
    `device` (default the run's).
    ValueError for a request that does not fit the model; RunError for the run."""
    ours = _ours(run_dir, plan, "sample it with `sw sample`, which reads the run's own plan")
    last = latest(run_dir)
    if last is None:
        raise RunError(f"{run_dir} has no checkpoint yet: train first")
    store, _, state, _ = load(last, ours, optimizer=False)
    file = run_dir / "tokenizer.json"
    try:
        tokenizer = tokenizer_from(json.loads(file.read_text(encoding="utf-8")), ours.data)
    except (OSError, ValueError, DataError) as e:
        raise RunError(f"{file} cannot be read ({e}); it is the run's vocabulary") from None
    stage = ours.stages[state["stage"] - 1]
    model = StageModel(ours, stage, store, device_for(device or ours.run.device)).eval()
    try:
        ids = encode_prompt(tokenizer, prompt)
    except DataError as e:
        raise ValueError(f"the prompt cannot be encoded with the run's tokenizer: {e}") from None
    out = sample(model, tokenizer, ids, **options)
    return [tokenizer.decode(row) for row in out.ids.tolist()]


def _a_count(x) -> bool:
    return type(x) is int and x >= 1
