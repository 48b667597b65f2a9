"""metrics.jsonl (one JSON object per logged step or evaluation), loss.png, and with
`run.tensorboard` the same records as TensorBoard scalars (the tensorboard package's writer,
through torch.utils.tensorboard; no TensorFlow)."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from stackwise_dsl.core.errors import Damaged, RunError


class Metrics:
    def __init__(self, path: Path, events: Path | None = None) -> None:
        self.path = path
        self.lines = 0  # records written; a run sets it with `truncate` before it logs
        self.pending: list[str] | None = None  # what `truncate(..., later=True)` keeps
        self.events = events  # TensorBoard's folder, if the run writes event files
        self.writer = None

    def write(self, record: dict) -> None:
        if self.pending is not None:
            self._replace(self.pending)
            self.pending = None
        try:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:
            raise RunError(f"cannot write {self.path} ({e.strerror})") from None
        self.lines += 1
        if self.events is not None:
            self._event(record)

    def _event(self, record: dict) -> None:
        """The record as scalars at its global step: train/loss, lr, tokens_per_s, tokens
        and flops; val/loss. The writer starts at this process's first record, purging what
        an interrupted attempt wrote from that step on (as metrics.jsonl is truncated)."""
        step = record["global_step"]
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            try:
                self.writer = SummaryWriter(str(self.events), purge_step=step)
            except OSError as e:
                raise RunError(f"cannot write {self.events} ({e.strerror})") from None
        if record["kind"] == "eval":
            self.writer.add_scalar("val/loss", record["val_loss"], step)
        for key, value in record.items():
            if record["kind"] == "train" and key not in ("kind", "stage", "step", "global_step"):
                self.writer.add_scalar(f"train/{key}", value, step)
        self.writer.flush()

    def truncate(self, lines: int, *, later: bool = False) -> None:
        """Keep the first `lines` records (a resumed run rewrites what came after). A line
        cut short by a kill, or one that is not a record, is dropped. `later`: only when the
        first record is written, so a resume that fails before then changes nothing."""
        kept = [x for x in _complete_lines(self.path)[:lines] if _record(x) is not None]
        self.lines = len(kept)
        if later:
            self.pending = kept
        else:
            self._replace(kept)

    def _replace(self, kept: list[str]) -> None:
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text("".join(kept), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise RunError(f"cannot write {self.path} ({e.strerror})") from None


def _complete_lines(path: Path) -> list[str]:
    """The newline-terminated lines of a metrics file ([] when there is none). Anything but
    a regular file there (a directory, a FIFO, a device) is `Damaged`: never read."""
    if not path.exists():
        return []
    if not path.is_file():
        raise Damaged(f"{path} is not a regular file: move it away, and the run goes on")
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise Damaged(f"{path} cannot be read ({e.strerror})") from None
    return [line for line in text.splitlines(keepends=True) if line.endswith("\n")]


def _record(line: str) -> dict | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def read(path: Path) -> list[dict]:
    """The records of a metrics file (lines that are not records are left out)."""
    return [r for r in map(_record, _complete_lines(path)) if r is not None]


def plot(metrics_path: Path, out: Path) -> None:
    """Training loss per global step, one colour per stage, dashed lines at stage boundaries,
    validation loss as markers. Without matplotlib (a compiled script's machine may lack
    it) there is no plot; `sw run` always has it."""
    draw(read(metrics_path), out)


def draw(records: list[dict], out: Path) -> None:
    """The plot of `plot`, from records already read."""
    try:
        import matplotlib
    except ImportError:
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if r.get("kind") == "train" and _plottable(r, "loss")]
    evals = [r for r in records if r.get("kind") == "eval" and _plottable(r, "val_loss")]
    if not train:  # stopped before its first log line: nothing to draw
        return
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
    stages = sorted({r["stage"] for r in train})
    for stage in stages:
        rs = [r for r in train if r["stage"] == stage]
        (line,) = ax.plot(
            [r["global_step"] for r in rs], [r["loss"] for r in rs], lw=1.2, label=f"stage {stage}"
        )
        es = [r for r in evals if r["stage"] == stage]
        if es:
            ax.plot(
                [r["global_step"] for r in es],
                [r["val_loss"] for r in es],
                "o",
                color=line.get_color(),
                ms=4,
            )
        if rs and stage != stages[0]:  # after the previous stage's last step
            start = rs[0]["global_step"] - rs[0]["step"]
            ax.axvline(start + 0.5, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (lines: train, dots: validation)")
    ax.legend(fontsize=8, ncol=min(len(stages), 6))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, out)


def _plottable(record: dict, value: str) -> bool:
    """A record the plot can place: whole stage, step and global step numbers, and a value."""
    numbers = [record.get(k) for k in ("stage", "step", "global_step")]
    return all(isinstance(x, int) and not isinstance(x, bool) for x in numbers) and isinstance(
        record.get(value), int | float
    )
