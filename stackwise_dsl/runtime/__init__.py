"""Running a plan: data, the stage loop, checkpoints, metrics and the loss plot.

`run(plan, run_dir)` starts a run; `resume(run_dir)` continues one from its latest
checkpoint with the plan it was started with. Problems a user can fix (data, devices, a
diverging loss) are `RunError`s with a message, never a bare traceback.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import attrs
import torch

from stackwise_dsl.core.errors import Damaged, RunError
from stackwise_dsl.core.loop import Diverged
from stackwise_dsl.core.seeds import derive
from stackwise_dsl.core.world import World
from stackwise_dsl.data import DataError, Prepared, prepare
from stackwise_dsl.ir.enums import Device
from stackwise_dsl.lower import plan as p
from stackwise_dsl.lower.dispatch import uses
from stackwise_dsl.lower.serialize import PLAN_FORMAT, to_json
from stackwise_dsl.runtime import checkpoint
from stackwise_dsl.runtime.checkpoint import load_plan
from stackwise_dsl.runtime.metrics import plot
from stackwise_dsl.runtime.train import Progress, StageSummary, Trainer
from stackwise_dsl.version import __version__

__all__ = [
    "Complete", "Elsewhere", "Progress", "RunError", "StageSummary", "World", "begin", "create",
    "finishing", "load_plan", "on_main", "reopen", "resume", "run", "start",
]  # fmt: skip


def run(plan: p.Plan, run_dir: Path, *, spec_text: str = "", info: dict | None = None,
        progress: Progress | None = None,
        world: World = World()) -> list[StageSummary]:  # fmt: skip
    """Train a plan from the start in `run_dir` (which must not hold another run)."""
    trainer = begin(plan, run_dir, spec_text=spec_text, info=info, progress=progress,
                    world=world)  # fmt: skip
    return _train(plan, trainer)


def begin(plan: p.Plan, run_dir: Path, *, spec_text: str = "", info: dict | None = None,
          progress: Progress | None = None, world: World = World()) -> Trainer:  # fmt: skip
    """A new run: its directory (`create`, by rank 0) and its trainer (`start`). If it
    cannot start (no such device, data that cannot be read), what `create` wrote is removed
    again, so the same command can be run again once the cause is fixed."""
    run_dir = Path(run_dir)
    existed = run_dir.exists()
    on_main(world, lambda: create(plan, run_dir, spec_text=spec_text, info=info))
    try:
        return start(plan, run_dir, None, progress, world)
    except RunError:
        if world.main:
            forget(run_dir, existed)
        raise


class Elsewhere(RunError):
    """Another rank's error (rank 0's, which reports it): this rank stops without a word."""


def on_main(world: World, fn):
    """`fn()` on rank 0 alone; every rank returns its result or raises its `RunError`
    (the others as `Elsewhere`), so no rank waits for one that stopped."""
    result, error = None, None
    if world.main:
        try:
            result = fn()
        except RunError as e:
            error = e
    said = world.from_main((result, None if error is None else str(error)))
    if error is not None:
        raise error
    if said[1] is not None:
        raise Elsewhere(said[1])
    return said[0]


def forget(run_dir: Path, existed: bool) -> None:
    """Remove what `create` wrote (and the directory, if it made it and nothing else came
    to be in it), as far as it can: the error that stopped the run is what gets reported."""
    for name in ("plan.json", "run.json", "spec.sw", "metrics.jsonl", "tokenizer.json"):
        with contextlib.suppress(OSError):
            (run_dir / name).unlink(missing_ok=True)
    if not existed:
        with contextlib.suppress(OSError):
            run_dir.rmdir()


def create(plan: p.Plan, run_dir: Path, *, spec_text: str = "", info: dict | None = None) -> Path:
    """A new run directory holding the spec, the plan and what started it (run.json)."""
    run_dir = Path(run_dir)
    if (run_dir / "plan.json").exists():
        raise RunError(
            f"{run_dir} already holds a run: resume it with --resume {run_dir}, "
            "or pick another --run-dir"
        )
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"{run_dir} is a file, not a directory: pick another --run-dir")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"cannot create the run directory {run_dir} ({e.strerror})") from None
    try:
        (run_dir / "spec.sw").write_text(spec_text, encoding="utf-8")
        started = {"version": __version__, "plan_format": PLAN_FORMAT, **(info or {})}
        (run_dir / "run.json").write_text(json.dumps(started, indent=1) + "\n")
        plan_text = json.dumps(to_json(plan), indent=1) + "\n"
        (run_dir / "plan.json").write_text(plan_text, encoding="utf-8")  # last: marks a run
    except OSError as e:
        raise RunError(f"cannot write the run directory {run_dir} ({e.strerror})") from None
    return run_dir


def resume(
    run_dir: Path,
    *,
    progress: Progress | None = None,
    device: Device | None = None,
    world: World = World(),
) -> list[StageSummary]:
    """Continue the run in `run_dir` from its latest checkpoint, with its own plan; the
    summaries of every stage, those done before the interruption included. Raises
    `Complete` for a run with nothing left to do (and changes nothing in it). The number of
    processes may differ from the run's before: the data stream goes on the same."""
    plan, last = reopen(run_dir, device=device)
    return _train(plan, start(plan, Path(run_dir), last, progress, world))


def reopen(run_dir: Path, *, device: Device | None = None) -> tuple[p.Plan, Path | None]:
    """The plan a run was started with (on `device` when given) and its latest checkpoint
    (None for a run stopped before its first: resuming it starts it again)."""
    run_dir = Path(run_dir)
    plan = load_plan(run_dir)
    if device is not None:
        plan = attrs.evolve(plan, run=attrs.evolve(plan.run, device=device))
    last = checkpoint.latest(run_dir)
    if last is None:  # killed before its first checkpoint: it starts again, from its plan
        return plan, None
    state = checkpoint.read_state(last, plan)
    if state["stage_done"] and state["stage"] >= len(plan.stages):
        raise Complete(f"the run in {run_dir} is already complete")
    return plan, last


class Complete(RunError):
    """A run asked to resume has finished its last stage: nothing is left to do."""


def _train(plan: p.Plan, trainer: Trainer) -> list[StageSummary]:
    with finishing(trainer):
        for stage in plan.stages:
            trainer.stage(stage.number)
    return trainer.summaries


def start(plan: p.Plan, run_dir: Path, resume_from: Path | None = None,
          progress: Progress | None = None, world: World = World()) -> Trainer:  # fmt: skip
    """What comes before the first stage (`setting_up`), and the trainer, restored from
    `resume_from` when given."""

    def shared() -> None:
        if plan.data.batch % world.size:
            raise RunError(
                f"data.batch is {plan.data.batch}, which {world.size} processes cannot share "
                f"equally: make it a multiple of {world.size}, or run on fewer processes"
            )

    on_main(world, shared)
    device, data = setting_up(plan, world)
    on_main(world, lambda: keep_tokenizer(run_dir, data.tokenizer))
    trainer = Trainer(plan=plan, data=data, run_dir=run_dir, device=device,
                      progress=progress or Progress(), world=world)  # fmt: skip
    if resume_from is not None:
        trainer.restore(resume_from)
        return trainer
    if uses("pretrained") and (plan.model.pretrained or plan.model.embedding) is not None:
        trainer.store = _pretrained(plan)
    if world.main:  # from the start, in a new directory or one whose run never reached one
        trainer.metrics.truncate(0)
    return trainer


def _pretrained(plan: p.Plan):
    """The weight store a model that starts from a Hugging Face directory starts with."""
    from stackwise_dsl.hf import HfError
    from stackwise_dsl.hf.load import pretrained_store

    try:
        return pretrained_store(plan)
    except (HfError, OSError) as e:
        field = "model.pretrained" if plan.model.pretrained is not None else "model.embedding"
        raise RunError(f"{field}: {e}") from None


def setting_up(plan: p.Plan, world: World = World()) -> tuple[torch.device, Prepared]:
    """The device (a rank's own GPU), the seed, and the data (read, tokenized, windowed and
    split)."""
    device = device_for(plan.run.device)
    if device.type == "cuda" and world.size > 1:
        device = torch.device("cuda", world.local_rank)
    torch.manual_seed(derive(plan.run.seed, "global"))
    try:
        data = prepare(plan.data, plan.run.seed)
    except DataError as e:
        raise RunError(str(e)) from None
    if data.tokenizer.vocab_size > plan.model.vocab:
        raise RunError(
            f"the tokenizer has {data.tokenizer.vocab_size} ids, but the model's vocab is "
            f"{plan.model.vocab}"
        )
    return device, data


def keep_tokenizer(run_dir: Path, tokenizer) -> None:
    """tokenizer.json: the run's exact vocabulary, which sampling and evaluation read. A
    resumed run's data must give the same one (a changed data file could shift every id)."""
    file = run_dir / "tokenizer.json"
    saved = tokenizer.saved()
    if file.exists():
        try:
            kept = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise Damaged(
                f"{file} cannot be read ({e}); it is the run's vocabulary: "
                "restore it, or delete it for the data to give it again"
            ) from None
        if kept != saved:
            raise RunError(
                f"the data now gives another vocabulary than the run was trained "
                f"with ({file}): restore the data the run started with"
            )
        return
    try:
        file.write_text(json.dumps(saved) + "\n", encoding="utf-8")
    except OSError as e:
        raise RunError(f"cannot write {file} ({e.strerror})") from None


@contextlib.contextmanager
def finishing(trainer: Trainer):
    """Around the stages: draw loss.png whatever happens, write summary.json when every
    stage is done, and turn a diverged run into a message naming its last good checkpoint."""
    run_dir = trainer.run_dir
    try:
        yield trainer
    except Diverged as e:  # on every rank alike (the loss is summed over them): rank 0 says it
        if not trainer.world.main:
            raise Elsewhere(str(e)) from None
        raise RunError(f"{e}; {_last_good(run_dir)}") from None
    except (torch.OutOfMemoryError, MemoryError) as e:
        raise _out_of_memory(e, run_dir) from None
    except RuntimeError as e:  # the CPU allocator's way of saying it
        if "can't allocate memory" not in str(e):
            raise
        raise _out_of_memory(e, run_dir) from None
    finally:
        if trainer.world.main and (run_dir / "metrics.jsonl").exists():
            _plot(run_dir)
    if not trainer.world.main:
        return
    summary = json.dumps([attrs.asdict(x) for x in trainer.summaries], indent=1)
    try:
        (run_dir / "summary.json").write_text(summary + "\n", encoding="utf-8")
    except OSError as e:
        raise RunError(f"cannot write {run_dir / 'summary.json'} ({e.strerror})") from None


def _last_good(run_dir: Path) -> str:
    last = checkpoint.latest(run_dir)
    return f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"


def _out_of_memory(e: Exception, run_dir: Path) -> RunError:
    said = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return RunError(
        f"out of memory ({said[:200]}): `sw plan` shows what each stage holds; make the "
        f"model or the batch smaller, or hold the trunk in fewer bits; {_last_good(run_dir)}"
    )


def _plot(run_dir: Path) -> None:
    """loss.png from metrics.jsonl; a failure to write it is reported unless the run is
    already stopping for another reason (which it would hide)."""
    try:
        plot(run_dir / "metrics.jsonl", run_dir / "loss.png")
    except OSError as e:
        if sys.exc_info()[0] is None:
            raise RunError(f"cannot write {run_dir / 'loss.png'} ({e.strerror})") from None


def device_for(device: Device) -> torch.device:
    if device is Device.CUDA and not torch.cuda.is_available():
        raise RunError(
            "the run asks for device cuda, but this machine has no CUDA GPU (use --device cpu)"
        )
    if device is Device.CPU or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")
