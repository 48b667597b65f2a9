"""The harness a compiled script carries (`sw compile`): `sw run`'s run directory, kept short.

The core is the same (core/loop.py's `train_stage`, the stage's model, the data), and so are
the files a run writes and the code that writes and reads them (checkpoint.py, metrics.py,
train.py's `save_run`, `restored`, `offload_unchanging`, runtime/__init__.py's `create` and
`finishing`): so `sw export` and `sw run --resume` read a script's run, a script resumes a
run `sw run` started from the same plan, and a damaged run directory gets the same message
from both. What `sw run` adds around it stays in its own harness (runtime/__init__.py and
train.py's `Trainer`): progress bars, the malloc tuning while a stage is built, and reading
the plan from the run directory instead of from the script.
"""

from __future__ import annotations

import time
from pathlib import Path

import attrs
import torch

from stackwise_dsl.core import loop
from stackwise_dsl.core.errors import RunError
from stackwise_dsl.core.loop import RunState
from stackwise_dsl.core.stage_model import StageModel
from stackwise_dsl.data import Prepared
from stackwise_dsl.ir.enums import Device
from stackwise_dsl.lower import plan as p
from stackwise_dsl.lower.serialize import to_json
from stackwise_dsl.runtime import Complete, create, forget, keep_tokenizer, setting_up
from stackwise_dsl.runtime.checkpoint import latest, plan_file, read_json, read_state
from stackwise_dsl.runtime.metrics import Metrics
from stackwise_dsl.runtime.train import (
    StageSummary,
    Window,
    merge_for,
    offload_unchanging,
    restored,
    save_run,
    stage_cache,
    trainable,
)
from stackwise_dsl.runtime.weights import Store


@attrs.define
class Training:
    """A run of `plan` in `run_dir`; `stage(n)` trains stage n unless the run is past it."""

    plan: p.Plan
    run_dir: Path
    device: torch.device
    data: Prepared
    metrics: Metrics
    store: Store = attrs.field(factory=Store)
    state: RunState = attrs.field(factory=RunState)  # where the run is
    summaries: list[StageSummary] = attrs.field(factory=list)

    def stage(self, number: int) -> None:
        if number < self.state.stage:
            return  # done before the run was resumed
        plan, stage, state = self.plan, self.plan.stages[number - 1], self.state
        merged = merge_for(stage, self.store, plan) if state.step == 0 else set()
        model = StageModel(plan, stage, self.store, self.device).train()
        offload_unchanging(self.store, self.run_dir, stage, keep=merged)
        cache, window = stage_cache(self.run_dir, stage), Window()
        if state.window is not None:
            window.resume(state.window)  # the next log line averages the same steps
        print(f"stage {number} of {len(plan.stages)} ({stage.kind.value}), {stage.steps} steps")
        started = time.perf_counter()

        def on_step(now: RunState, loss: float, lr: float, snapshot) -> None:
            window.add(loss, plan.tokens_per_step)
            last, run = now.step == stage.steps, plan.run
            if now.step % run.log_every == 0 or last:
                loss, rate = window.flush()
                self.metrics.write({"kind": "train", "stage": number, "step": now.step,
                                    "global_step": now.global_step, "loss": loss, "lr": lr,
                                    "tokens_per_s": rate})  # fmt: skip
                print(f"  step {now.step:>6}  loss {loss:.4f}  {rate:,.0f} tokens/s")
            if run.eval_every and now.step % run.eval_every == 0 and not last:
                self.log_eval(now, loop.evaluate(model, plan, stage, self.data))
            if run.checkpoint_every and now.step % run.checkpoint_every == 0 and not last:
                model.capture(self.store)
                self.save(attrs.evolve(snapshot(), window=window.state()), done=False)

        self.state, loss = loop.train_stage(plan, stage, model, self.data, state, cache=cache,
                                            on_step=on_step)  # fmt: skip
        if cache is not None and cache.directory is not None:
            cache.flush()
        val = self.log_eval(self.state, loop.evaluate(model, plan, stage, self.data))
        model.capture(self.store)
        self.summaries.append(StageSummary(
            stage=number, kind=stage.kind.value, steps=stage.steps,
            train_loss=window.last_loss if window.last_loss is not None else loss,
            val_loss=val, seconds=time.perf_counter() - started,
            trainable=trainable(model, stage, plan), tokens_per_s=window.overall_rate(),
        ))  # fmt: skip
        self.save(self.state, done=True)
        self.state = self.state.starting(number + 1)

    def log_eval(self, now: RunState, val: float | None) -> float | None:
        if val is not None:
            self.metrics.write({"kind": "eval", "stage": now.stage, "step": now.step,
                                "global_step": now.global_step, "val_loss": val})  # fmt: skip
        return val

    def save(self, state: RunState, *, done: bool) -> None:
        save_run(self.run_dir, self.store, state, done=done, summaries=self.summaries,
                 metrics_lines=self.metrics.lines)  # fmt: skip


def begin(plan: p.Plan, run_dir: Path, *, spec_text: str, info: dict) -> Training:
    """A new run in `run_dir` (which must not hold one: `create`), then `start`. A run that
    cannot start (no such device, data that cannot be read) leaves nothing behind, so the
    same command can be run again."""
    existed = run_dir.exists()
    create(plan, run_dir, spec_text=spec_text, info=info)
    try:
        return start(plan, run_dir, None)
    except RunError:
        forget(run_dir, existed)
        raise


def reopen(run_dir: Path, plan: p.Plan) -> tuple[p.Plan, Path | None]:
    """The run in `run_dir`, which this script's `plan` must have started (with the steps,
    device and directory the run has), and its latest checkpoint (None: none written yet).
    `Complete` for a run with nothing left to do."""
    theirs = read_json(plan_file(run_dir))
    try:
        steps = [s["steps"] for s in theirs["stages"]]
        run = attrs.evolve(plan.run, dir=theirs["run"]["dir"],
                           device=Device(theirs["run"]["device"]))  # fmt: skip
    except (KeyError, TypeError, ValueError):
        steps, run = [], plan.run
    ours = None
    if len(steps) == len(plan.stages) and all(type(x) is int and x >= 1 for x in steps):
        pairs = zip(plan.stages, steps, strict=True)
        stages = tuple(attrs.evolve(s, steps=n) for s, n in pairs)
        ours = attrs.evolve(plan, stages=stages, run=run)
    if ours is None or to_json(ours) != theirs:
        raise RunError(f"{run_dir / 'plan.json'} is not this script's plan (a run of another "
                       "plan, or its plan.json was changed): resume it with what started it "
                       "(`sw run --resume` reads the run's own plan)")  # fmt: skip
    last = latest(run_dir)
    if last is not None:
        state = read_state(last, ours)
        if state["stage_done"] and state["stage"] >= len(ours.stages):
            raise Complete(f"the run in {run_dir} is already complete")
    return ours, last


def start(plan: p.Plan, run_dir: Path, resume_from: Path | None) -> Training:
    """What comes before the first stage (the device, the seed, the data), and the run,
    restored from `resume_from` when given."""
    device, data = setting_up(plan)
    keep_tokenizer(run_dir, data.tokenizer)
    run = Training(plan=plan, run_dir=run_dir, device=device, data=data,
                   metrics=Metrics(run_dir / "metrics.jsonl"))  # fmt: skip
    if resume_from is not None:
        run.store, run.summaries, run.state = restored(resume_from, plan, data, run.metrics)
    else:
        run.metrics.truncate(0)
    return run
