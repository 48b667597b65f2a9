"""`sw eval`: scoring a run's checkpoints on a file or on its own validation windows (the
measures are use/scoring.py's).

On the run's own validation windows a row also holds `val_loss`, training's own measure
recomputed (core/loop.py `evaluate`: the same windows and noise), and `recorded_val_loss`, the
value the run wrote at that point in metrics.jsonl.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from stackwise_dsl.core import loop
from stackwise_dsl.core.batches import eval_ids
from stackwise_dsl.data import DataError, prepare
from stackwise_dsl.use import Trained, find_checkpoint, load, read_text
from stackwise_dsl.use.errors import UseError
from stackwise_dsl.use.scoring import score, windows_of


def evaluate_run(run_dir: Path, *, data: Path | None = None, checkpoint=None,
                 all_stages: bool = False, windows: int | None = None,
                 device: str = "cpu") -> list[dict]:  # fmt: skip
    """One row per checkpoint scored (the one named, or every stage's end with
    `all_stages`): on `data` (a text file; its first `windows` windows, default all), or on
    the run's own validation windows (`windows` of them spread over the validation set,
    default those training scores: eval_batches x batch, core/batches.py `eval_ids`)."""
    if windows is not None and windows < 1:
        raise UseError(f"windows must be at least 1, not {windows}")
    run_dir = Path(run_dir)
    first = load(run_dir, checkpoint, device=device)
    chosen = [first]
    if all_stages:
        done = [s.number for s in first.plan.stages if _finished(run_dir, s.number, first)]
        chosen = [load(run_dir, number, device=device) for number in done]
        if not chosen:
            raise UseError(f"no stage of {run_dir} has finished yet")
    if data is not None:
        ids = np.asarray(first.encode(read_text(data), what=str(data), masks=False), dtype=np.int64)
        scored, window_ids, prepared = (
            windows_of(ids, first.plan.data.seq_len)[:windows],
            None,
            None,
        )
    else:
        prepared = _own_data(run_dir, first)
        run, batch = first.plan.run, first.plan.data.batch
        chosen_ids = eval_ids(prepared.val, 1, windows) if windows else eval_ids(
            prepared.val, batch, run.eval_batches)  # fmt: skip
        window_ids = np.concatenate(chosen_ids)
        scored = list(prepared.windows[window_ids])
    rows = []
    for trained in chosen:
        row = {"checkpoint": trained.checkpoint.name, "stage": trained.stage.number,
               "step": trained.step, "stage_done": trained.stage_done,
               "data": str(data) if data is not None else "validation"}  # fmt: skip
        row |= score(trained, scored, window_ids)
        if prepared is not None:
            row["val_loss"] = loop.evaluate(trained.model, trained.plan, trained.stage, prepared)
            trained.model.eval()
            row["recorded_val_loss"] = _recorded(run_dir, trained)
        rows.append(row)
    return rows


def _finished(run_dir: Path, number: int, trained: Trained) -> bool:
    try:
        find_checkpoint(run_dir, number, trained.plan)
    except UseError:
        return False
    return True


def _own_data(run_dir: Path, trained: Trained):
    """The run's data again, with the vocabulary it trained with."""
    try:
        data = prepare(trained.plan.data, trained.plan.run.seed)
    except DataError as e:
        raise UseError(f"the run's data cannot be read again ({e}): score a file with "
                       "--data instead") from None  # fmt: skip
    if data.tokenizer.saved() != trained.tokenizer.saved():
        raise UseError("the run's data now gives another vocabulary than it trained with: "
                       "score a file with --data instead")  # fmt: skip
    if len(data.val) == 0:
        raise UseError("the run holds out no validation data: score a file with --data")
    return data


def _recorded(run_dir: Path, trained: Trained) -> float | None:
    """The val_loss metrics.jsonl holds for the checkpoint's stage and step, if any."""
    try:
        lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    found = None
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if (isinstance(record, dict) and record.get("kind") == "eval"
                and record.get("stage") == trained.stage.number
                and record.get("step") == trained.step):  # fmt: skip
            found = record.get("val_loss")
    return found if isinstance(found, float) else None
