"""The harness: what `sw run` adds around one stage's loop (core/loop.py).

Per stage: merge trained adapters into their masters where a fuse stage asks, build the
stage's model from the weight store, offload the masters it does not change, open its
activation cache, run the loop from where the run is (a `RunState`), then evaluate and write
back. Around every step: log lines, evaluations and checkpoints on the run's cadence (always
at a stage's end), and progress for the CLI. `restore` continues a run from a checkpoint.
"""

from __future__ import annotations

import time
from pathlib import Path

import attrs
import numpy as np
import torch

from stackwise_dsl.core import loop
from stackwise_dsl.core.batches import Stream
from stackwise_dsl.core.errors import Damaged, RunError
from stackwise_dsl.core.loop import Diverged, RunState
from stackwise_dsl.core.stage_model import StageModel
from stackwise_dsl.core.world import World
from stackwise_dsl.data import Prepared
from stackwise_dsl.lower import plan as p
from stackwise_dsl.lower.dispatch import cache_key, merge_key, pick
from stackwise_dsl.machine.probe import tensorboard_present
from stackwise_dsl.runtime import checkpoint, heap
from stackwise_dsl.runtime.cache import ActivationCache
from stackwise_dsl.runtime.merge import merge_store
from stackwise_dsl.runtime.metrics import Metrics
from stackwise_dsl.runtime.weights import Store


@attrs.frozen(kw_only=True)
class StageSummary:
    stage: int
    kind: str
    steps: int
    train_loss: float
    val_loss: float | None
    seconds: float
    trainable: int
    tokens_per_s: float


class Progress:
    """What the loop reports as it goes; the CLI draws it, tests ignore it."""

    def stage_started(self, stage: p.Stage, done: int) -> None: ...
    def stepped(
        self, stage: p.Stage, step: int, loss: float | None, tokens_per_s: float | None
    ) -> None:
        """After every step; loss and rate only on logged steps (None otherwise)."""

    def stage_finished(self, summary: StageSummary) -> None: ...


@attrs.define
class Trainer:
    """The harness around the loop: it builds each stage's model from the weight store (merging
    adapters first where a fuse stage asks), offloads what the stage does not change, runs
    `loop.train_stage`, and around it writes metrics, evaluations and checkpoints on the run's
    cadence; `restore` continues a run from a checkpoint."""

    plan: p.Plan
    data: Prepared
    run_dir: Path
    device: torch.device
    progress: Progress = attrs.field(factory=Progress)
    store: Store = attrs.field(factory=Store)
    state: RunState = attrs.field(factory=RunState)  # where the run is
    world: World = attrs.field(factory=World)  # its processes (rank 0 writes)
    summaries: list[StageSummary] = attrs.field(factory=list)  # the stages done
    metrics: Metrics = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        events = None
        if self.plan.run.tensorboard:
            events = self.run_dir / "tensorboard"
            if not tensorboard_present():
                raise RunError("the run asks for TensorBoard event files (run.tensorboard), but "
                               "the tensorboard package is not installed: pip install "
                               "'stackwise-dsl[tensorboard]', or remove the setting")  # fmt: skip
        self.metrics = Metrics(self.run_dir / "metrics.jsonl", events=events)

    def run(self) -> list[StageSummary]:
        """Every stage of the plan not done yet (see `restore`)."""
        for stage in self.plan.stages:
            self.stage(stage.number)
        return self.summaries

    def stage(self, number: int) -> StageSummary | None:
        """Train stage `number` (1-based), or nothing if a resumed run is past it."""
        if number < self.state.stage:
            return None
        return self.train_stage(self.plan.stages[number - 1])

    def restore(self, path: Path) -> None:
        """Continue from the checkpoint at `path` (`restored`)."""
        self.store, self.summaries, self.state = restored(path, self.plan, self.data,
                                                          self.metrics, self.world)  # fmt: skip

    def train_stage(self, stage: p.Stage) -> StageSummary:
        """Build the stage's model, train it from where the run is, evaluate, write back."""
        state = self.state
        if state.stage != stage.number:  # a stage trained out of order (tests)
            state = state.starting(stage.number)
        merged = merge_for(stage, self.store, self.plan) if state.step == 0 else set()
        with heap.building():
            model = StageModel(self.plan, stage, self.store, self.device).train()
        offload_unchanging(self.store, self.run_dir, stage, keep=merged)
        cache = stage_cache(self.run_dir, stage, self.world)
        window = Window()
        if state.window is not None:
            window.resume(state.window)  # the next log line averages the same steps
        self.progress.stage_started(stage, state.step)
        started = time.perf_counter()

        net = loop.shared(self.plan, model, cache, self.world)  # None when alone

        def on_step(now: RunState, loss: float, lr: float, snapshot) -> None:
            window.add(loss, self.plan.tokens_per_step)
            self._after_step(model, net, stage, now, lr, window, snapshot)

        self.state, loss = loop.train_stage(self.plan, stage, model, self.data, state,
                                            cache=cache, on_step=on_step, world=self.world,
                                            net=net)  # fmt: skip
        if cache is not None and cache.directory is not None:
            cache.flush()
        val = loop.evaluate(model, self.plan, stage, self.data, net)
        self._record_eval(stage, stage.steps, val)
        model.capture(self.store)
        summary = StageSummary(
            stage=stage.number, kind=stage.kind.value, steps=stage.steps,
            train_loss=window.last_loss if window.last_loss is not None else loss, val_loss=val,
            seconds=time.perf_counter() - started, trainable=trainable(model, stage, self.plan),
            tokens_per_s=window.overall_rate(),
        )  # fmt: skip
        self.summaries.append(summary)
        self._save(self.state, done=True)
        self.state = self.state.starting(stage.number + 1)
        self.progress.stage_finished(summary)
        return summary

    def _after_step(self, model, net, stage: p.Stage, now: RunState, lr: float,
                    window: Window, snapshot) -> None:  # fmt: skip
        run, step = self.plan.run, now.step
        last = step == stage.steps
        if step % run.log_every == 0 or last:
            loss, rate = window.flush()
            if self.world.main:
                self.metrics.write({
                    "kind": "train", "stage": stage.number, "step": step,
                    "global_step": now.global_step, "loss": loss, "lr": lr,
                    "tokens_per_s": rate, **self._spent(now),
                })  # fmt: skip
            self.progress.stepped(stage, step, loss, rate)
        else:
            self.progress.stepped(stage, step, None, None)
        if run.eval_every and step % run.eval_every == 0 and not last:
            self._record_eval(stage, step, loop.evaluate(model, self.plan, stage, self.data,
                                                         net), now=now)  # fmt: skip
        if run.checkpoint_every and step % run.checkpoint_every == 0 and not last:
            model.capture(self.store)
            self._save(attrs.evolve(snapshot(), window=window.state()), done=False)

    # --- records and checkpoints ---

    def _record_eval(self, stage: p.Stage, step: int, val: float | None, *,
                     now: RunState | None = None) -> None:  # fmt: skip
        now = self.state if now is None else now
        if val is not None and self.world.main:
            self.metrics.write({
                "kind": "eval", "stage": stage.number, "step": step,
                "global_step": now.global_step, "val_loss": val, **self._spent(now),
            })  # fmt: skip

    def _spent(self, now: RunState) -> dict:
        """What the run has trained on so far: tokens (the windows' inputs) and FLOPs."""
        return {"tokens": now.global_step * self.plan.tokens_per_step, "flops": now.flops}

    def _save(self, state: RunState, *, done: bool) -> None:
        """Rank 0 writes the checkpoint; the others wait for it (and read it when offloading)."""
        if self.world.main:
            save_run(self.run_dir, self.store, state, done=done, summaries=self.summaries,
                     metrics_lines=self.metrics.lines)  # fmt: skip
        else:  # the same store as rank 0's: every rank stops alike
            check_finite(self.store, state)
        self.world.barrier()


# --- what both harnesses do (this one and runtime/standalone.py, a compiled script's) ---


def check_finite(store: Store, state: RunState) -> None:
    """Diverged unless every weight in the store is finite."""
    broken = next((k for k, v in store.flat().items()
                   if v.is_floating_point() and not torch.isfinite(v).all()), None)  # fmt: skip
    if broken is not None:
        raise Diverged(state.stage, state.step, f"the weights became non-finite ({broken})")


def save_run(run_dir: Path, store: Store, state: RunState, *, done: bool,
             summaries: list[StageSummary], metrics_lines: int) -> Path:  # fmt: skip
    """Checkpoint the store at `state` (checkpoint.save). The store must be finite: a loss is
    measured before the update that may break the weights, so weights are checked too
    before they are kept."""
    check_finite(store, state)
    saved = {
        "stage": state.stage, "step": state.step, "stage_done": done,
        "global_step": state.global_step, "stream": state.stream, "flops": state.flops,
        "metrics_lines": metrics_lines, "scaler": state.scaler,
        "summaries": [attrs.asdict(x) for x in summaries], "window": state.window,
    }  # fmt: skip
    name = f"stage{state.stage:03d}-step{state.step:07d}"
    return checkpoint.save(run_dir, name, store, state.optimizer, saved)


def restored(path: Path, plan: p.Plan, data: Prepared, metrics: Metrics,
             world: World = World()) -> tuple[Store, list[StageSummary], RunState]:  # fmt: skip
    """The weight store, the stages done and where the run is, from the checkpoint at `path`
    (each file checked: checkpoint.load); metrics.jsonl keeps the records written before it.
    Its RNG state is restored where it was saved: before the next stage's model is built (at
    a stage's end) or after this stage's is (mid-stage), since building a model draws from
    torch's generator."""
    store, opt_state, saved, rng = checkpoint.load(path, plan)
    try:
        Stream.of(data, plan.run.seed).restore(saved["stream"])
    except ValueError as e:
        raise Damaged(f"{path / 'state.json'} is damaged: {e}") from None
    if world.main:
        metrics.truncate(saved["metrics_lines"], later=True)
    summaries = [StageSummary(**x) for x in saved["summaries"]]
    where = {"global_step": saved["global_step"], "stream": saved["stream"],
             "flops": saved["flops"]}  # fmt: skip
    if saved["stage_done"]:
        torch.set_rng_state(rng)
        return store, summaries, RunState(stage=saved["stage"] + 1, **where)
    state = RunState(stage=saved["stage"], step=saved["step"], rng=rng, optimizer=opt_state,
                     scaler=saved["scaler"], window=saved["window"], **where)  # fmt: skip
    return store, summaries, state


def offload_unchanging(store: Store, run_dir: Path, stage: p.Stage, keep: set[int]) -> None:
    """Masters a stage does not change leave memory for the stage-end checkpoint that holds
    them (the one just written, or resumed from); those in `keep` (merged since that
    checkpoint) stay."""
    last = checkpoint.latest(run_dir)
    if last is None or not checkpoint.is_stage_end(last):
        return
    fixed = [x.position for x in stage.parts
             if x.trains is not p.Trains.FULL and x.position not in keep]  # fmt: skip
    store.offload(fixed, last / "model.safetensors")


def trainable(model: StageModel, stage: p.Stage, plan: p.Plan) -> int:
    return sum(x.numel() for g in loop.param_groups(model, stage, plan.optimizer)
               for x in g["params"])  # fmt: skip


def merge_for(stage: p.Stage, store: Store, plan: p.Plan) -> set[int]:
    """Fold trained adapters into their masters where the stage asks (MERGES), at its start
    (a stage resumed mid-way finds its store merged already); the stack positions merged."""
    key = merge_key(stage)
    if key is None:
        return set()
    merge = pick(MERGES, key, "adapter merge")
    return {position for position, _ in merge(store, plan, stage.number - 1)}


def stage_cache(run_dir: Path, stage: p.Stage, world: World = World()):
    """The stage's activation cache (CACHES), or None: each rank's own, over its windows."""
    key = cache_key(stage)
    make = None if key is None else pick(CACHES, key, "activation cache")
    return None if make is None else make(run_dir, stage, world)


def _memory_cache(run_dir: Path, stage: p.Stage, world: World) -> ActivationCache:
    return ActivationCache(None)


def _disk_cache(run_dir: Path, stage: p.Stage, world: World) -> ActivationCache:
    rank = f"-rank{world.rank}" if world.size > 1 else ""
    return ActivationCache(run_dir / "cache" / f"stage{stage.number:03d}{rank}")


MERGES = {
    "lora": merge_store,
}

CACHES = {
    "memory": _memory_cache,
    "disk": _disk_cache,
}


@attrs.define
class Window:
    """Losses and token counts since the last log line."""

    losses: list[float] = attrs.field(factory=list)
    tokens: int = 0
    since: float = attrs.field(factory=time.perf_counter)
    total_tokens: int = 0
    started: float = attrs.field(factory=time.perf_counter)
    last_loss: float | None = None

    def add(self, loss: float, tokens: int) -> None:
        self.losses.append(loss)
        self.tokens += tokens
        self.total_tokens += tokens

    def state(self) -> dict:
        """What a mid-stage checkpoint keeps: the losses and tokens since the last log."""
        return {"losses": list(self.losses), "tokens": self.tokens}

    def resume(self, state: dict) -> None:
        self.losses, self.tokens = list(state["losses"]), state["tokens"]

    def flush(self) -> tuple[float, float]:
        now = time.perf_counter()
        loss = float(np.mean(self.losses))
        rate = self.tokens / max(now - self.since, 1e-9)
        self.losses, self.tokens, self.since, self.last_loss = [], 0, now, loss
        return loss, rate

    def overall_rate(self) -> float:
        return self.total_tokens / max(time.perf_counter() - self.started, 1e-9)
