"""`sw compare`: several runs' validation loss against steps, tokens, FLOPs or seconds, every
run scored on the same windows.

The points come from one of two places:
- The runs' own evaluations (metrics.jsonl `eval` records), when every run scored the same
  windows the same way: the same validation text and held-out windows (source, validation
  data, split, fraction, seq_len, tokenizer.json), as many evaluation windows, and the same
  objective measured the same way (for masked diffusion with time as depth each stage scores
  its own ratio, so its runs compare only through `--data`). Otherwise compare refuses and
  says what differs.
- `data`: every checkpoint of every run scored on the same windows of a text file with `sw
  eval`'s measure (use/scoring.py `headline`: the loss; for masked diffusion the mean over
  the ratios 0.15 to 0.9). The runs must share their tokenizer, so the windows are the same
  tokens.

x is the run's position at the point: `steps` (global steps), `tokens` and `flops` (as
metrics.jsonl counts them: estimate/flops.py), or `seconds` of training (each log window's
tokens over its tokens/s, summed; evaluation and checkpoints left out). `at` is the largest x
every run reaches; each run's loss there is interpolated linearly between its points.
"""

from __future__ import annotations

import enum
import itertools
import json
import math
from pathlib import Path

import attrs

from stackwise_dsl.lower import plan as p
from stackwise_dsl.lower.serialize import to_json
from stackwise_dsl.runtime import checkpoint as checkpoints
from stackwise_dsl.runtime import metrics
from stackwise_dsl.use.errors import UseError


class Axis(enum.Enum):
    STEPS = "steps"
    TOKENS = "tokens"
    FLOPS = "flops"
    SECONDS = "seconds"


@attrs.frozen
class Curve:
    run: str
    name: str  # the plan's name
    points: tuple[tuple[float, float], ...]  # (x, validation loss), x increasing

    def at(self, x: float) -> float | None:
        """The loss at x, interpolated between the two points around it (None outside)."""
        pts = self.points
        if not pts or x < pts[0][0] or x > pts[-1][0]:
            return None
        for (x0, y0), (x1, y1) in itertools.pairwise(pts):
            if x0 <= x <= x1:
                return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
        return pts[-1][1]


@attrs.frozen
class Comparison:
    axis: Axis
    source: str  # "validation" (the runs' own evaluations) or the data file scored
    curves: tuple[Curve, ...]

    @property
    def common(self) -> float | None:
        """The largest x every run reaches."""
        ends = [c.points[-1][0] for c in self.curves if c.points]
        return min(ends) if len(ends) == len(self.curves) else None

    def rows(self) -> list[dict]:
        at = self.common
        return [{
            "run": c.run, "name": c.name, "points": len(c.points),
            "last_x": c.points[-1][0] if c.points else None,
            "last_loss": c.points[-1][1] if c.points else None,
            "best_loss": min(y for _, y in c.points) if c.points else None,
            "loss_at_common_x": c.at(at) if at is not None else None,
        } for c in self.curves]  # fmt: skip

    def to_json(self) -> dict:
        return {"x": self.axis.value, "source": self.source, "common_x": self.common,
                "runs": [{**row, "curve": [list(pt) for pt in c.points]}
                         for row, c in zip(self.rows(), self.curves, strict=True)]}  # fmt: skip


def compare(runs: list[Path], axis: Axis = Axis.STEPS, *, data: Path | None = None,
            windows: int | None = None, device: str = "cpu") -> Comparison:  # fmt: skip
    """The curves of `runs` (module docstring); UseError when they cannot be compared."""
    if len(runs) < 1:
        raise UseError("name at least one run directory")
    seen = {}
    for run in runs:
        key = Path(run).resolve()
        if key in seen:
            raise UseError(f"{run} is named twice")
        seen[key] = run
    plans = [checkpoints.load_plan(Path(run)) for run in runs]
    if data is None:
        _same_validation(runs, plans)
        curves = [_recorded(Path(run), plan, axis) for run, plan in zip(runs, plans, strict=True)]
        source = "validation"
    else:
        _same_tokenizer(runs)
        lengths = {plan.data.seq_len for plan in plans}
        if len(lengths) > 1:
            raise UseError(f"the runs read windows of other lengths (seq_len {sorted(lengths)}): "
                           "the same text would be other windows for each")  # fmt: skip
        _readable_text(data)
        curves = [_rescored(Path(run), plan, axis, data, windows, device)
                  for run, plan in zip(runs, plans, strict=True)]  # fmt: skip
        source = str(data)
    return Comparison(axis=axis, source=source, curves=tuple(curves))


# --- the runs' own evaluations ------------------------------------------------------------


def _records(run: Path) -> list[dict]:
    file = run / "metrics.jsonl"
    if file.exists() and not file.is_file():
        raise UseError(f"{file} is not a regular file: compare reads the run's records there")
    return metrics.read(file)


def _recorded(run: Path, plan: p.Plan, axis: Axis) -> Curve:
    records = _records(run)
    seconds = _seconds(records, plan)
    points = []
    for r in records:
        if r.get("kind") != "eval" or not _number(r.get("val_loss")):
            continue
        x = _x(r, axis, plan, seconds)
        if x is not None:
            points.append((float(x), float(r["val_loss"])))
    if not points:
        raise UseError(
            f"{run} has no validation loss to place on the {axis.value} axis: its metrics.jsonl "
            "holds no evaluation record with a finite val_loss"
            + (" and flops (a run from before FLOPs were logged?)" if axis is Axis.FLOPS else "")
            + "; evaluate it with `eval every N steps`, or compare checkpoints with --data FILE"
        )
    return Curve(run=str(run), name=plan.name, points=_increasing(points))


def _x(record: dict, axis: Axis, plan: p.Plan, seconds: dict[int, float]) -> float | None:
    step = record.get("global_step")
    if not (isinstance(step, int) and not isinstance(step, bool)):
        return None
    if axis is Axis.STEPS:
        return step
    if axis is Axis.TOKENS:
        return step * plan.tokens_per_step
    if axis is Axis.FLOPS:
        flops = record.get("flops")
        return flops if _number(flops) else None
    return _between(seconds, step)


def _between(seconds: dict[int, float], step: int) -> float | None:
    """The training seconds at `step`: at a logged step as logged, between two as their
    window's steady rate puts it (None past the last)."""
    if step in seconds:
        return seconds[step]
    later = [s for s in seconds if s > step]
    if not later:
        return None
    b = min(later)
    a = max(s for s in seconds if s < step)
    return seconds[a] + (step - a) * (seconds[b] - seconds[a]) / (b - a)


def _seconds(records: list[dict], plan: p.Plan) -> dict[int, float]:
    """Training seconds at each logged global step: each train record's window (the steps
    since the one before) took its tokens over its tokens/s."""
    out, total, last = {0: 0.0}, 0.0, 0
    for r in records:
        step, rate = r.get("global_step"), r.get("tokens_per_s")
        if r.get("kind") != "train" or not isinstance(step, int) or not _number(rate):
            continue
        if step <= last or rate <= 0:
            continue
        total += (step - last) * plan.tokens_per_step / rate
        out[step], last = total, step
    return out


def _same_validation(runs: list[Path], plans: list[p.Plan]) -> None:
    """Refuse runs whose own evaluations scored other windows, or scored them otherwise."""
    first = _validation_key(runs[0], plans[0])
    for run, plan in zip(runs[1:], plans[1:], strict=True):
        key = _validation_key(run, plan)
        differ = [name for name in first if key[name] != first[name]]
        if differ:
            also = (
                "; they have other vocabularies, so no text is the same windows for both"
                if "the tokenizer" in differ
                else ": score both on one text with --data FILE"
            )
            raise UseError(
                f"{runs[0]} and {run} did not score the same validation windows the same way "
                f"(they differ in: {', '.join(differ)}){also}"
            )


def _validation_key(run: Path, plan: p.Plan) -> dict:
    d = to_json(plan)["data"]
    sources = (plan.data.source, plan.data.validation_data)
    # synthetic problems are drawn from the run's seed: other seeds, other text
    seeded = plan.run.seed if any(isinstance(s, p.Synthetic) for s in sources) else None
    return {
        "the data": (d["source"], d["validation_data"], seeded),
        "the split": (d["validation"], d["split"]),
        "seq_len": d["seq_len"],
        "the tokenizer": _tokenizer_text(run),
        "the number of evaluation windows": plan.data.batch * plan.run.eval_batches,
        "the objective's measure": _measure(plan),
    }


def _measure(plan: p.Plan) -> tuple:
    """How a run's evaluations score, stage by stage: its objectives as the plan states them.
    Time as depth scores each stage at its own ratios (so the stages' lengths and ratios
    belong to the measure); time as input at noise levels drawn from the seed."""
    stages = to_json(plan)["stages"]
    out = []
    for stage, written in zip(plan.stages, stages, strict=True):
        o = stage.objective
        measure = json.dumps(written["objective"], sort_keys=True)
        if isinstance(o, p.MaskedDiffusion) and isinstance(o.time, p.DepthTime):
            ratios = tuple(part.mask_ratio for part in stage.parts)
            out.append((measure, stage.steps, stage.mask_ratio, ratios))
        elif isinstance(o, p.MaskedDiffusion):
            out.append((measure, stage.number, plan.run.seed))
        else:
            out.append((measure,))
    return tuple(sorted(set(out), key=repr)) if all(len(x) == 1 for x in out) else tuple(out)


def _tokenizer_text(run: Path) -> str:
    file = run / "tokenizer.json"
    try:
        text = file.read_text(encoding="utf-8")
        saved = json.loads(text)
    except OSError as e:
        raise UseError(f"{file} cannot be read ({e.strerror}): compare needs each run's "
                       "vocabulary") from None  # fmt: skip
    except ValueError:
        saved = None
    if not isinstance(saved, dict) or not isinstance(saved.get("kind"), str):
        raise UseError(f"{file} is damaged (not a tokenizer stackwise-dsl writes): it is the "
                       "run's vocabulary; restore it")  # fmt: skip
    return text


def _same_tokenizer(runs: list[Path]) -> None:
    first = _tokenizer_text(runs[0])
    for run in runs[1:]:
        if _tokenizer_text(run) != first:
            raise UseError(f"{runs[0]} and {run} have other vocabularies (tokenizer.json): "
                           "the same text would be other windows for each")  # fmt: skip


# --- rescoring on one text ---------------------------------------------------------------


def _readable_text(data: Path) -> None:
    """The text to score, read before any model is: a non-empty UTF-8 file."""
    from stackwise_dsl.use import read_text

    if not read_text(data).strip():
        raise UseError(f"{data} holds no text to score")


def _rescored(run: Path, plan: p.Plan, axis: Axis, data: Path, windows: int | None,
              device: str) -> Curve:  # fmt: skip
    """Every complete checkpoint of a run scored on the windows of `data`."""
    import numpy as np

    from stackwise_dsl.use import load, read_text
    from stackwise_dsl.use.scoring import headline, score, windows_of

    records = _records(run)
    seconds = _seconds(records, plan)
    root = run / "checkpoints"
    names = checkpoints.complete(root) if root.is_dir() else []
    if not names:
        raise UseError(f"{run} has no checkpoint to score")
    points, scored = [], None
    for name in names:
        trained = load(run, root / name, device=device)
        if scored is None:
            text = read_text(data)
            ids = np.asarray(trained.encode(text, what=str(data), masks=False), dtype=np.int64)
            scored = windows_of(ids, plan.data.seq_len)[:windows]
            if not scored:
                raise UseError(f"{data} holds no text to score")
        state = checkpoints.state_of(root / name)
        record = {"global_step": state.get("global_step"), "flops": state.get("flops")}
        x = _x(record, axis, plan, seconds)
        if x is not None:
            points.append((float(x), headline(score(trained, scored))))
    if not points:
        raise UseError(f"{run}'s checkpoints do not say where they stand on the {axis.value} "
                       "axis (checkpoints from before FLOPs were kept?)")  # fmt: skip
    return Curve(run=str(run), name=plan.name, points=_increasing(points))


# --- small helpers ---------------------------------------------------------------------------


def _number(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _increasing(points: list[tuple[float, float]]) -> tuple[tuple[float, float], ...]:
    """Points by x; of several at one x (a resumed run logs some twice), the last."""
    by_x: dict[float, float] = {}
    for x, y in points:
        by_x[x] = y
    return tuple(sorted(by_x.items()))


def draw(comparison: Comparison, out: Path) -> None:
    """One line per run (dots at its points), validation loss against the axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for c in comparison.curves:
        if c.points:
            xs, ys = zip(*c.points, strict=True)
            ax.plot(xs, ys, "o-", ms=3, lw=1.2, label=f"{c.name} ({Path(c.run).name})")
    if comparison.common is not None:
        ax.axvline(comparison.common, color="grey", ls="--", lw=0.8)
    label = {Axis.STEPS: "steps", Axis.TOKENS: "tokens", Axis.FLOPS: "training FLOPs",
             Axis.SECONDS: "training seconds"}[comparison.axis]  # fmt: skip
    ax.set_xlabel(label)
    where = "validation" if comparison.source == "validation" else Path(comparison.source).name
    ax.set_ylabel(f"loss on {where}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = out.with_name(out.name + ".tmp.png")
    try:
        fig.savefig(tmp)
        tmp.replace(out)
    except OSError as e:
        raise UseError(f"cannot write {out} ({e.strerror})") from None
    finally:
        plt.close(fig)
