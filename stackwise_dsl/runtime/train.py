"""The stage loop: build each stage's model from the weight store, train it, write back.

Every step: set the learning rate; for each micro-batch take the next windows, corrupt them,
run the model (through the activation cache when the stage has one) and backpropagate; stop
on a non-finite loss; clip; step. Logs, evaluations and checkpoints follow the run's cadence
and always happen at a stage's end.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import attrs
import numpy as np
import torch

from stackwise_dsl.data import Prepared
from stackwise_dsl.lower import plan as p
from stackwise_dsl.lower.dispatch import cache_key, merge_key, pick
from stackwise_dsl.runtime import adapters, checkpoint, heap, optim
from stackwise_dsl.runtime.batches import Stream, eval_ids
from stackwise_dsl.runtime.cache import ActivationCache
from stackwise_dsl.runtime.errors import Damaged, RunError
from stackwise_dsl.runtime.merge import merge_store
from stackwise_dsl.runtime.metrics import Metrics
from stackwise_dsl.runtime.objectives import Batch, Vocabulary, loss_of, make_batch, noise
from stackwise_dsl.runtime.precision import LossScaler
from stackwise_dsl.runtime.stage_model import (
    StageModel,
    base_parameters,
    head_parameters,
    input_parameters,
)
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
    plan: p.Plan
    data: Prepared
    run_dir: Path
    device: torch.device
    progress: Progress = attrs.field(factory=Progress)
    store: Store = attrs.field(factory=Store)
    global_step: int = 0
    trunk_forwards: int = 0  # windows the cache had to run the trunk for (tests read it)
    rng_after_build: torch.Tensor | None = None  # a mid-stage checkpoint's RNG state
    scaler_state: dict | None = None  # a mid-stage checkpoint's loss scale (fp16 on CUDA)
    window_state: dict | None = None  # a mid-stage checkpoint's losses since its last log
    scaler: LossScaler = attrs.field(factory=lambda: LossScaler(enabled=False))
    resume_at: tuple[int, int, dict | None] = (1, 0, None)  # (stage, step, optimizer state)
    # the summaries of the stages done, in order (a resumed run's from its checkpoint)
    summaries: list[StageSummary] = attrs.field(factory=list)
    stream: Stream = attrs.field(init=False)
    metrics: Metrics = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.stream = Stream(self.data.train, self.plan.run.seed)
        self.metrics = Metrics(self.run_dir / "metrics.jsonl")

    # --- the run ---

    def run(self) -> list[StageSummary]:
        """Every stage of the plan not done yet (see `restore`)."""
        for stage in self.plan.stages:
            self.stage(stage.number)
        return self.summaries

    def stage(self, number: int) -> StageSummary | None:
        """Train stage `number` (1-based), or nothing if a resumed run is past it."""
        start_stage, start_step, opt_state = self.resume_at
        if number < start_stage:
            return None
        resume = (start_step, opt_state) if number == start_stage else (0, None)
        return self.train_stage(self.plan.stages[number - 1], *resume)

    def restore(self, path: Path) -> None:
        """Continue from the checkpoint at `path`: the stages before its point are done. Its
        RNG state is restored where it was saved: before the next stage's model is built
        (stage end) or after this stage's is (mid-stage), since building a model draws from
        torch's generator."""
        store, opt_state, state, rng = checkpoint.load(path, self.plan)
        try:
            self.stream.restore(state["stream"])
        except ValueError as e:
            raise Damaged(f"{path / 'state.json'} is damaged: {e}") from None
        self.store = store
        self.global_step = state["global_step"]
        self.metrics.truncate(state["metrics_lines"])
        self.summaries = [StageSummary(**x) for x in state["summaries"]]
        if state["stage_done"]:
            torch.set_rng_state(rng)
            self.resume_at = (state["stage"] + 1, 0, None)
            return
        self.rng_after_build = rng
        self.scaler_state = state["scaler"]
        self.window_state = state["window"]
        self.resume_at = (state["stage"], state["step"], opt_state)

    # --- one stage ---

    def train_stage(
        self, stage: p.Stage, start_step: int = 0, opt_state: dict | None = None
    ) -> StageSummary:
        merged: set[int] = set()
        key = merge_key(stage)
        if key is not None and start_step == 0:  # mid-stage, the store is merged already
            merge = pick(MERGES, key, "adapter merge")
            merged = {pos for pos, _ in merge(self.store, self.plan, stage.number - 1)}
        with heap.building():
            model = StageModel(self.plan, stage, self.store, self.device).train()
        self._offload_unchanging(stage, keep=merged)
        opt = optim.build(self.plan.optimizer, self._groups(model, stage))
        self.scaler = LossScaler.for_stage(stage.parts, self.device)
        if opt_state is not None:
            try:
                opt.load_state_dict(opt_state)
                self.scaler.restore(self.scaler_state)
            except (ValueError, KeyError, RuntimeError) as e:
                raise Damaged(
                    f"the checkpoint's optimizer state does not fit stage {stage.number}'s "
                    f"optimizer ({e}); resume from a stage-end checkpoint or start again"
                ) from None
        if self.rng_after_build is not None:
            torch.set_rng_state(self.rng_after_build)
            self.rng_after_build = None
        trainable = [x for g in opt.param_groups for x in g["params"]]
        cache = self._cache(stage)
        self.progress.stage_started(stage, start_step)
        started, window = time.perf_counter(), _Window()
        if start_step > 0 and self.window_state is not None:
            window.resume(self.window_state)  # the next log line averages the same steps
            self.window_state = None
        loss = math.nan
        for step in range(start_step + 1, stage.steps + 1):
            optim.set_lr(opt, self.plan.optimizer, step, stage.steps)
            loss = self._step(model, stage, step, cache)
            if self.plan.optimizer.clip is not None:
                self.scaler.unscale(opt)
                torch.nn.utils.clip_grad_norm_(trainable, self.plan.optimizer.clip)
            self.scaler.step(opt)
            opt.zero_grad(set_to_none=True)
            self.global_step += 1
            window.add(loss, self.plan.tokens_per_step)
            self._after_step(model, opt, stage, step, window)
        if cache is not None and cache.directory is not None:
            cache.flush()
        val = self._evaluate(model, stage)
        self._record_eval(stage, stage.steps, val)
        model.capture(self.store)
        summary = StageSummary(
            stage=stage.number, kind=stage.kind.value, steps=stage.steps,
            train_loss=window.last_loss if window.last_loss is not None else loss, val_loss=val,
            seconds=time.perf_counter() - started, trainable=sum(x.numel() for x in trainable),
            tokens_per_s=window.overall_rate(),
        )  # fmt: skip
        self.summaries.append(summary)
        self._save(None, stage, stage.steps, done=True)
        self.progress.stage_finished(summary)
        return summary

    def _offload_unchanging(self, stage: p.Stage, keep: set[int]) -> None:
        """Masters this stage does not change leave memory for the stage-end checkpoint
        that holds them (the one just written, or resumed from); those in `keep` (merged
        since that checkpoint) stay."""
        last = checkpoint.latest(self.run_dir)
        if last is None or not checkpoint.is_stage_end(last):
            return
        fixed = [
            x.position
            for x in stage.parts
            if x.trains is not p.Trains.FULL and x.position not in keep
        ]
        self.store.offload(fixed, last / "model.safetensors")

    def _after_step(self, model, opt, stage: p.Stage, step: int, window: _Window) -> None:
        run = self.plan.run
        last = step == stage.steps
        if step % run.log_every == 0 or last:
            loss, rate = window.flush()
            self.metrics.write({
                "kind": "train", "stage": stage.number, "step": step,
                "global_step": self.global_step, "loss": loss,
                "lr": opt.param_groups[0]["lr"], "tokens_per_s": rate,
            })  # fmt: skip
            self.progress.stepped(stage, step, loss, rate)
        else:
            self.progress.stepped(stage, step, None, None)
        if run.eval_every and step % run.eval_every == 0 and not last:
            self._record_eval(stage, step, self._evaluate(model, stage))
        if run.checkpoint_every and step % run.checkpoint_every == 0 and not last:
            model.capture(self.store)
            self._save(opt, stage, step, done=False, window=window.state())

    def _step(self, model: StageModel, stage: p.Stage, step: int, cache) -> float:
        accumulate = self.plan.optimizer.accumulate
        total = 0.0
        for micro in range(accumulate):
            ids = self.stream.take(self.plan.data.batch)
            batch = self._batch(stage, ids, (step - 1) * accumulate + micro)
            loss = self._loss(model, stage, batch, cache) / accumulate
            self.scaler.backward(loss)
            total += loss.item()
        if not math.isfinite(total):
            raise Diverged(stage.number, step, f"the loss became {total}")
        return total

    def _batch(self, stage: p.Stage, ids: np.ndarray, draw: int) -> Batch:
        ratio, t = noise(stage, self.plan, draw)
        windows = torch.from_numpy(self.data.windows[ids])
        return make_batch(
            windows, ids, stage.objective, ratio, t, seed=self.plan.run.seed, vocab=self._vocab()
        )

    def _loss(self, model: StageModel, stage: p.Stage, b: Batch, cache) -> torch.Tensor:
        inputs, targets = b.inputs.to(self.device), b.targets.to(self.device)
        t = b.t.to(self.device) if b.t is not None else None
        if cache is None:
            h = model.hidden(inputs, t)
        else:  # append: the new stack is last; everything before it is the cached trunk
            trunk, new = model.positions[:-1], model.positions[-1:]
            rows = {int(i): r for r, i in enumerate(b.ids.tolist())}

            def trunk_output(missing: np.ndarray) -> torch.Tensor:
                self.trunk_forwards += len(missing)
                sel = torch.tensor([rows[int(i)] for i in missing], device=self.device)
                with torch.no_grad():
                    return model.hidden(inputs[sel], None, positions=trunk)

            h = model.run(cache.get(b.ids, trunk_output), new)
        return loss_of(model.logits, h, targets)

    def _cache(self, stage: p.Stage):
        """The stage's activation cache (CACHES), or None."""
        key = cache_key(stage)
        return None if key is None else pick(CACHES, key, "activation cache")(self.run_dir, stage)

    # --- evaluation, records, checkpoints ---

    def _evaluate(self, model: StageModel, stage: p.Stage) -> float | None:
        batches = eval_ids(self.data.val, self.plan.data.batch, self.plan.run.eval_batches)
        if not batches:
            return None
        model.eval()
        losses = []
        with torch.no_grad():
            for i, ids in enumerate(batches):
                b = self._eval_batch(stage, ids, i)
                t = b.t.to(self.device) if b.t is not None else None
                h = model.hidden(b.inputs.to(self.device), t)
                losses.append(loss_of(model.logits, h, b.targets.to(self.device)).item())
        model.train()
        return float(np.mean(losses))

    def _eval_batch(self, stage: p.Stage, ids: np.ndarray, i: int) -> Batch:
        """Validation batches see the same noise at every evaluation (and cycle through the
        rack's ratios in a depth-time fuse stage)."""
        ratio, t = noise(stage, self.plan, -1 - i)
        if stage.objective.time == "depth" and stage.mask_ratio is None:
            ratio = stage.parts[i % len(stage.parts)].mask_ratio
        windows = torch.from_numpy(self.data.windows[ids])
        return make_batch(
            windows, ids, stage.objective, ratio, t, seed=self.plan.run.seed, vocab=self._vocab()
        )

    def _record_eval(self, stage: p.Stage, step: int, val: float | None) -> None:
        if val is not None:
            self.metrics.write({
                "kind": "eval", "stage": stage.number, "step": step,
                "global_step": self.global_step, "val_loss": val,
            })  # fmt: skip

    def _save(self, opt, stage: p.Stage, step: int, *, done: bool, window=None) -> None:
        """Checkpoint the store, which must be finite: a loss is measured before the update
        that may break the weights, so weights are checked too before they are kept."""
        flat = self.store.flat()
        broken = next(
            (k for k, v in flat.items() if v.is_floating_point() and not torch.isfinite(v).all()),
            None,
        )
        if broken is not None:
            raise Diverged(stage.number, step, f"the weights became non-finite ({broken})")
        state = {
            "stage": stage.number, "step": step, "stage_done": done,
            "global_step": self.global_step, "stream": self.stream.state(),
            "metrics_lines": self.metrics.lines, "scaler": self.scaler.state(),
            "summaries": [attrs.asdict(x) for x in self.summaries], "window": window,
        }  # fmt: skip
        name = f"stage{stage.number:03d}-step{step:07d}"
        checkpoint.save(self.run_dir, name, self.store, None if done else opt, state)

    # --- optimizer groups ---

    def _groups(self, model: StageModel, stage: p.Stage) -> list[dict]:
        """Stack weights at the stage's lr, adapters at adapter_lr, embeddings and head at
        embedding_lr; weight decay on matrices only."""
        stacks, lora = [], []
        for part in stage.parts:
            stack = model.stack(part.position)
            stacks += [x for x in base_parameters(stack) if x.requires_grad]
            lora += [x for x in adapters.adapter_parameters(stack) if x.requires_grad]
        shared = [
            x
            for x in [*input_parameters(model.rack), *head_parameters(model.rack)]
            if x.requires_grad
        ]
        shared = list({id(x): x for x in shared}.values())
        decay = self.plan.optimizer.weight_decay
        groups = []
        for name, params, lr in (("stacks", stacks, stage.lr), ("adapters", lora, stage.adapter_lr),
                                 ("embeddings", shared, stage.embedding_lr)):  # fmt: skip
            groups.append(
                {
                    "name": name,
                    "params": [x for x in params if x.dim() >= 2],
                    "lr": lr,
                    "weight_decay": decay,
                }
            )
            groups.append(
                {
                    "name": name + "/no_decay",
                    "params": [x for x in params if x.dim() < 2],
                    "lr": lr,
                    "weight_decay": 0.0,
                }
            )
        if not any(g["params"] for g in groups):
            raise RunError(f"stage {stage.number} trains nothing")
        return groups

    def _vocab(self) -> Vocabulary:
        tok = self.data.tokenizer
        return Vocabulary(mask=tok.specials.mask, ordinary=tok.ordinary)


def _memory_cache(run_dir: Path, stage: p.Stage) -> ActivationCache:
    return ActivationCache(None)


def _disk_cache(run_dir: Path, stage: p.Stage) -> ActivationCache:
    return ActivationCache(run_dir / "cache" / f"stage{stage.number:03d}")


MERGES = {
    "lora": merge_store,
}

CACHES = {
    "memory": _memory_cache,
    "disk": _disk_cache,
}


class Diverged(RunError):
    """Training produced a non-finite loss or non-finite weights."""

    def __init__(self, stage: int, step: int, what: str) -> None:
        super().__init__(f"{what} in stage {stage} at step {step}")
        self.stage, self.step = stage, step


@attrs.define
class _Window:
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
