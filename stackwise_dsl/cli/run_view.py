"""How `sw run` looks. On a terminal: a progress bar per stage (loss, tokens/s, ETA). Piped or
redirected (nohup, a batch scheduler, `| tee`): one plain line per stage start, logged step
and stage end, each flushed as it happens. Then a summary table, within 80 columns off a
terminal."""

from __future__ import annotations

import time
from typing import TextIO

from stackwise_dsl.lower import plan as p
from stackwise_dsl.runtime import Progress, StageSummary

COLUMNS = ("Stage", "Kind", "Steps", "Train loss", "Val loss", "Time", "Tokens/s", "Trainable")


class RichProgress(Progress):
    def __init__(self, plan: p.Plan) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
        from rich.progress import Progress as Bars

        self.plan = plan
        self.bars = Bars(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[rate]} tok/s"),
            TimeRemainingColumn(),
        )  # fmt: skip
        self.task = None

    def __enter__(self) -> RichProgress:
        self.bars.start()
        return self

    def __exit__(self, *exc) -> None:
        self.bars.stop()

    def stage_started(self, stage: p.Stage, done: int) -> None:
        total = len(self.plan.stages)
        label = f"stage {stage.number}/{total} {stage.kind.value:<10}"
        self.task = self.bars.add_task(label, total=stage.steps, completed=done, loss="-", rate="-")

    def stepped(
        self, stage: p.Stage, step: int, loss: float | None, tokens_per_s: float | None
    ) -> None:
        fields = {}
        if loss is not None:
            fields = {"loss": f"{loss:.4f}", "rate": f"{tokens_per_s:,.0f}"}
        self.bars.update(self.task, completed=step, **fields)

    def stage_finished(self, summary: StageSummary) -> None:
        self.bars.update(self.task, completed=summary.steps)


class PlainProgress(Progress):
    """Lines for a log file, flushed one by one, with no escapes or carriage returns:
        stage 1/2 grow: 150 steps
        stage 1/2 step 25/150 loss 4.4047 58,311 tok/s eta 0:00:02
        stage 1/2 done in 1.8s: train loss 2.9696, val loss 2.9713
    The ETA is the stage's time per step so far times the steps left."""

    def __init__(self, plan: p.Plan, out: TextIO) -> None:
        self.plan = plan
        self.out = out
        self.started = 0.0  # when the stage's first step began (perf_counter)
        self.first = 0  # the step the stage started after (a resumed stage's checkpoint)

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def stage_started(self, stage: p.Stage, done: int) -> None:
        self.started, self.first = time.perf_counter(), done
        where = f"resumed at step {done}/{stage.steps}" if done else f"{stage.steps} steps"
        self._line(f"{self._stage(stage.number)} {stage.kind.value}: {where}")

    def stepped(
        self, stage: p.Stage, step: int, loss: float | None, tokens_per_s: float | None
    ) -> None:
        if loss is None:  # not a logged step
            return
        per_step = (time.perf_counter() - self.started) / (step - self.first)
        eta = _clock(per_step * (stage.steps - step))
        rate = f"{tokens_per_s:,.0f}"
        self._line(
            f"{self._stage(stage.number)} step {step}/{stage.steps} loss {loss:.4f} "
            f"{rate} tok/s eta {eta}"
        )

    def stage_finished(self, summary: StageSummary) -> None:
        val = f"{summary.val_loss:.4f}" if summary.val_loss is not None else "-"
        self._line(
            f"{self._stage(summary.stage)} done in {_duration(summary.seconds)}: "
            f"train loss {summary.train_loss:.4f}, val loss {val}"
        )

    def _stage(self, number: int) -> str:
        return f"stage {number}/{len(self.plan.stages)}"

    def _line(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()


def print_summary(summaries: list[StageSummary], out: TextIO) -> None:
    """The summary table on `out`: boxed at the terminal's width, or within 80 columns when
    `out` is not a terminal (a log file, a pipe)."""
    from rich.console import Console

    terminal = out.isatty()
    console = Console(file=out) if terminal else Console(file=out, width=80)
    console.print(summary_table(summaries, compact=not terminal))


def summary_table(summaries: list[StageSummary], *, compact: bool = False):
    """One row per stage. `compact` fits 80 columns for any realistic run (81 stages, kind
    end_to_end, 100k steps, billions of trainable weights): no vertical rules, loss headers
    on two lines. A value still too wide folds onto a second line; none is cut short."""
    from rich import box
    from rich.table import Table

    if compact:  # rules under the header only; two spaces between columns
        table = Table(
            title="Stages", header_style="bold", box=box.SIMPLE_HEAD, show_edge=False,
            pad_edge=False, padding=(0, 1, 0, 0),
        )  # fmt: skip
    else:
        table = Table(title="Stages", header_style="bold")
    for name in COLUMNS:
        header = name.replace(" ", "\n") if compact and name.endswith("loss") else name
        left = name in ("Stage", "Kind")
        table.add_column(header, justify="left" if left else "right", overflow="fold")
    for s in summaries:
        val = f"{s.val_loss:.4f}" if s.val_loss is not None else "-"
        table.add_row(
            str(s.stage), s.kind, f"{s.steps:,}", f"{s.train_loss:.4f}", val,
            _duration(s.seconds), f"{s.tokens_per_s:,.0f}", f"{s.trainable:,}",
        )  # fmt: skip
    return table


def _duration(seconds: float) -> str:
    """Seconds under a minute (`6.7s`), a clock above (`1:02:03`)."""
    return f"{seconds:.1f}s" if seconds < 60 else _clock(seconds)


def _clock(seconds: float) -> str:
    minutes, s = divmod(round(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02}:{s:02}"
