"""How `sw run` looks: a progress bar per stage (loss, tokens/s, ETA) and a summary table."""

from __future__ import annotations

from stackwise_dsl.lower import plan as p
from stackwise_dsl.runtime import Progress, StageSummary


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


def summary_table(summaries: list[StageSummary]):
    from rich.table import Table

    table = Table(title="Stages", header_style="bold")
    for name in (
        "Stage",
        "Kind",
        "Steps",
        "Train loss",
        "Val loss",
        "Time",
        "Tokens/s",
        "Trainable",
    ):
        table.add_column(name, justify="left" if name in ("Stage", "Kind") else "right")
    for s in summaries:
        val = f"{s.val_loss:.4f}" if s.val_loss is not None else "-"
        table.add_row(
            str(s.stage), s.kind, f"{s.steps:,}", f"{s.train_loss:.4f}", val,
            f"{s.seconds:.1f}s", f"{s.tokens_per_s:,.0f}", f"{s.trainable:,}",
        )  # fmt: skip
    return table
