"""The harness a compiled script carries (`sw compile`): `sw run`'s run directory, kept short.

The core is the same (core/loop.py's `train_stage`, the stage's model, the data), and so are
the files a run writes and their formats: plan.json, run.json, spec.sw, metrics.jsonl,
checkpoints (the weight store's tensors as safetensors, the rest as JSON, written under a
temporary name and renamed into place), summary.json and loss.png. So `sw export`,
`sw run --resume` and `sw show` read a script's run, and a script resumes a run `sw run`
started from the same plan. What `sw run` adds around it stays in its own harness
(runtime/__init__.py, train.py, checkpoint.py): progress bars, the malloc tuning while a
stage is built, and a check of every field of a checkpoint with advice; a script that
cannot read a checkpoint says which one and what it met.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import attrs
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from stackwise_dsl import __version__
from stackwise_dsl.core import loop
from stackwise_dsl.core.batches import Stream
from stackwise_dsl.core.errors import RunError
from stackwise_dsl.core.loop import Diverged, RunState
from stackwise_dsl.core.stage_model import StageModel
from stackwise_dsl.data import Prepared
from stackwise_dsl.lower import plan as p
from stackwise_dsl.lower.serialize import PLAN_FORMAT, to_json
from stackwise_dsl.runtime import setting_up
from stackwise_dsl.runtime.checkpoint import join_optimizer, split_optimizer, verify
from stackwise_dsl.runtime.metrics import draw
from stackwise_dsl.runtime.train import StageSummary, Window, merge_for, stage_cache, trainable
from stackwise_dsl.runtime.weights import OnDisk, Store


@attrs.define
class Training:
    """A run of `plan` in `run_dir`; `stage(n)` trains stage n unless the run is past it."""

    plan: p.Plan
    run_dir: Path
    device: torch.device
    data: Prepared
    store: Store = attrs.field(factory=Store)
    state: RunState = attrs.field(factory=RunState)  # where the run is
    summaries: list[StageSummary] = attrs.field(factory=list)
    logged: int = 0  # the lines of metrics.jsonl
    last: Path | None = None  # the newest checkpoint
    stage_end: Path | None = None  # the newest, if it ends a stage: masters stay in its file

    def stage(self, number: int) -> None:
        if number < self.state.stage:
            return  # done before the run was resumed
        plan, stage, state = self.plan, self.plan.stages[number - 1], self.state
        merged = merge_for(stage, self.store, plan) if state.step == 0 else set()
        model = StageModel(plan, stage, self.store, self.device).train()
        if self.stage_end is not None:  # what the stage does not change leaves memory
            fixed = [x.position for x in stage.parts
                     if x.trains is not p.Trains.FULL and x.position not in merged]  # fmt: skip
            self.store.offload(fixed, self.stage_end / "model.safetensors")
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
                self.log({"kind": "train", "stage": number, "step": now.step,
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

    # --- metrics.jsonl ---

    def log(self, record: dict) -> None:
        try:
            with (self.run_dir / "metrics.jsonl").open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:
            raise RunError(
                f"cannot write {self.run_dir / 'metrics.jsonl'} ({e.strerror})"
            ) from None
        self.logged += 1

    def log_eval(self, now: RunState, val: float | None) -> float | None:
        if val is not None:
            self.log({"kind": "eval", "stage": now.stage, "step": now.step,
                      "global_step": now.global_step, "val_loss": val})  # fmt: skip
        return val

    def records(self) -> list[dict]:
        out = []
        with contextlib.suppress(OSError):
            for line in (self.run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return [x for x in out if isinstance(x, dict)]

    # --- checkpoints ---

    def save(self, state: RunState, *, done: bool) -> None:
        """Checkpoint the weight store at `state` and make it current. Weights are checked
        first: a loss is measured before the update that may break them."""
        flat = self.store.flat()
        broken = [k for k, v in flat.items() if v.is_floating_point() and not v.isfinite().all()]
        if broken:
            raise Diverged(state.stage, state.step, f"the weights became non-finite ({broken[0]})")
        root, name = self.run_dir / "checkpoints", f"stage{state.stage:03d}-step{state.step:07d}"
        tmp = None
        try:
            root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
            save_file(flat, str(tmp / "model.safetensors"))
            meta = None
            if state.optimizer is not None:
                tensors, meta = split_optimizer(state.optimizer)
                save_file(tensors, str(tmp / "optimizer.safetensors"))
            on_disk = {str(k): v.resolve().relative_to(root.resolve()).as_posix()
                       for k, v in self.store.on_disk().items()}  # fmt: skip
            write_json(tmp / "state.json", {
                "stage": state.stage, "step": state.step, "stage_done": done,
                "global_step": state.global_step, "stream": state.stream,
                "metrics_lines": self.logged, "scaler": state.scaler,
                "summaries": [attrs.asdict(x) for x in self.summaries],
                "window": state.window, "stacks_on_disk": on_disk, "optimizer": meta,
                "rng": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode(),
            })  # fmt: skip
            shutil.rmtree(root / name, ignore_errors=True)
            os.replace(tmp, root / name)
            write_json(root / "latest.json", {"checkpoint": name})
        except (OSError, SafetensorError) as e:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            raise RunError(f"cannot write checkpoint {name} in {root} ({e}); "
                           f"{self.last_good()}") from None  # fmt: skip
        self.last, self.stage_end = root / name, root / name if done else None
        steps = sorted(c for c in root.iterdir() if c.name != name and not _ends_stage(c))
        for old in steps[:-1]:  # every stage end stays, and the newest step checkpoint
            shutil.rmtree(old, ignore_errors=True)

    def restore(self, path: Path) -> None:
        """Continue from the checkpoint at `path`. Its RNG state is restored where it was
        saved: before the next stage's model is built (at a stage's end) or after this
        stage's is (mid-stage, by the loop), since building a model draws from torch's."""
        try:
            saved = json.loads((path / "state.json").read_text(encoding="utf-8"))
            store = Store.from_flat(load_file(str(path / "model.safetensors")))
            for position, file in saved["stacks_on_disk"].items():
                store.stacks[int(position)] = OnDisk(path.parent / file, f"stack/{position}/")
            verify(store, self.plan, path / "model.safetensors")  # every tensor, its shape
            optimizer = None
            if saved["optimizer"] is not None:
                tensors = load_file(str(path / "optimizer.safetensors"))
                optimizer = join_optimizer(tensors, saved["optimizer"])
            rng = torch.frombuffer(bytearray(base64.b64decode(saved["rng"])), dtype=torch.uint8)
            if rng.numel() != torch.get_rng_state().numel():
                raise ValueError("`rng` is not a torch RNG state")
            Stream(self.data.train, self.plan.run.seed).restore(saved["stream"])
            self.summaries = [StageSummary(**x) for x in saved["summaries"]]
            lines = (self.run_dir / "metrics.jsonl").read_text(encoding="utf-8")
        except (OSError, ValueError, KeyError, TypeError, AttributeError, SafetensorError) as e:
            why = f"{type(e).__name__}: {e}"
            raise RunError(f"the checkpoint {path} cannot be read ({why}); point checkpoints/"
                           "latest.json at another or start again") from None  # fmt: skip
        kept = lines.splitlines(keepends=True)[: saved["metrics_lines"]]
        (self.run_dir / "metrics.jsonl").write_text("".join(kept), encoding="utf-8")
        self.store, self.logged, self.last = store, len(kept), path
        where = {"global_step": saved["global_step"], "stream": saved["stream"]}
        if saved["stage_done"]:
            torch.set_rng_state(rng.clone())
            self.state, self.stage_end = RunState(stage=saved["stage"] + 1, **where), path
        else:
            self.state = RunState(stage=saved["stage"], step=saved["step"], rng=rng.clone(),
                                  optimizer=optimizer, scaler=saved["scaler"],
                                  window=saved["window"], **where)  # fmt: skip

    def last_good(self) -> str:
        return f"the last good checkpoint is {self.last}" if self.last else "no checkpoint yet"


def begin(plan: p.Plan, run_dir: Path, *, spec_text: str, info: dict) -> Training:
    """A new run in `run_dir` (which must not hold one): spec.sw, run.json and plan.json
    (last: it marks a run), then `start`. A run that cannot start (no such device, data
    that cannot be read) leaves nothing behind, so the same command can be run again."""
    if (run_dir / "plan.json").exists():
        raise RunError(f"{run_dir} already holds a run: resume it with --resume {run_dir}, "
                       "or pick another --run-dir")  # fmt: skip
    existed = run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "spec.sw").write_text(spec_text, encoding="utf-8")
        write_json(run_dir / "run.json", {"version": __version__, "plan_format": PLAN_FORMAT,
                                          **info})  # fmt: skip
        write_json(run_dir / "plan.json", to_json(plan))
    except OSError as e:
        raise RunError(f"cannot write the run directory {run_dir} ({e.strerror})") from None
    try:
        return start(plan, run_dir, None)
    except RunError:
        for name in ("plan.json", "run.json", "spec.sw", "metrics.jsonl"):
            (run_dir / name).unlink(missing_ok=True)
        if not existed:
            with contextlib.suppress(OSError):
                run_dir.rmdir()
        raise


def reopen(run_dir: Path, plan: p.Plan) -> tuple[p.Plan, Path | None]:
    """The run in `run_dir`, which this script's `plan` must have started (its steps, device
    and directory as the run has them), and its latest checkpoint (None: none written yet)."""
    try:
        theirs = json.loads((run_dir / "plan.json").read_text(encoding="utf-8"))
        stages = tuple(attrs.evolve(s, steps=int(t["steps"]))
                       for s, t in zip(plan.stages, theirs["stages"], strict=True))  # fmt: skip
        run = attrs.evolve(plan.run, dir=str(theirs["run"]["dir"]),
                           device=type(plan.run.device)(theirs["run"]["device"]))  # fmt: skip
        ours = attrs.evolve(plan, stages=stages, run=run)
        latest = run_dir / "checkpoints" / "latest.json"
        last = None
        if latest.exists():
            last = run_dir / "checkpoints" / json.loads(latest.read_text())["checkpoint"]
            done = json.loads((last / "state.json").read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise RunError(f"{run_dir} holds no run this script can resume ({e.filename} is "
                       "missing)") from None  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise RunError(f"{run_dir} holds no run this script can resume ({type(e).__name__}: "
                       f"{e}): resume it with what started it") from None  # fmt: skip
    if to_json(ours) != theirs:
        raise RunError(f"{run_dir} holds a run of another plan: resume it with what started "
                       "it (`sw run --resume` reads its own plan)")  # fmt: skip
    if last is not None and done.get("stage_done") and done.get("stage") == len(plan.stages):
        raise Complete(f"the run in {run_dir} is already complete")
    return ours, last


class Complete(RunError):
    """A run asked to resume has finished its last stage: nothing is left to do."""


def start(plan: p.Plan, run_dir: Path, resume_from: Path | None) -> Training:
    """What comes before the first stage (the device, the seed, the data), and the run,
    restored from `resume_from` when given."""
    device, data = setting_up(plan)
    run = Training(plan=plan, run_dir=run_dir, device=device, data=data)
    if resume_from is not None:
        run.restore(resume_from)
    else:
        (run_dir / "metrics.jsonl").write_text("", encoding="utf-8")
    return run


@contextlib.contextmanager
def finishing(run: Training):
    """Around the stages: loss.png whatever happens, summary.json when they are done, and a
    message naming the last good checkpoint for a run that diverged or ran out of memory."""
    try:
        yield run
    except Diverged as e:
        raise RunError(f"{e}; {run.last_good()}") from None
    except (torch.OutOfMemoryError, MemoryError, RuntimeError) as e:
        if isinstance(e, RuntimeError) and "can't allocate memory" not in str(e):
            raise
        raise RunError(f"out of memory ({str(e)[:200]}): make the model or the batch smaller, "
                       f"or hold the trunk in fewer bits; {run.last_good()}") from None  # fmt: skip
    finally:
        with contextlib.suppress(OSError):
            draw(run.records(), run.run_dir / "loss.png")
    summary = json.dumps([attrs.asdict(x) for x in run.summaries], indent=1)
    try:
        (run.run_dir / "summary.json").write_text(summary + "\n", encoding="utf-8")
    except OSError as e:
        raise RunError(f"cannot write {run.run_dir / 'summary.json'} ({e.strerror})") from None


def write_json(path: Path, data: dict) -> None:
    """JSON written whole or not at all (a temporary file renamed into place)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def _ends_stage(path: Path) -> bool:
    """Whether a checkpoint ends a stage (anything unreadable is kept, as if it did)."""
    try:
        return bool(json.loads((path / "state.json").read_text(encoding="utf-8"))["stage_done"])
    except (OSError, ValueError, KeyError, TypeError):
        return True
