"""`run { tensorboard = true }`: the metrics as TensorBoard scalars, written by the
tensorboard package (no TensorFlow), equal after a resume; refused without the package."""

from __future__ import annotations

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from typer.testing import CliRunner

from stackwise_dsl import runtime
from stackwise_dsl.cli import app
from stackwise_dsl.frontend import check_text
from stackwise_dsl.machine.host import Host
from stackwise_dsl.runtime import RunError
from tests.runtime.helpers import plan_of, small

SPEC = small("clm", grow="append 2 x s").replace(
    "run { seed = 0, log every 2 steps }",
    "run { seed = 0, log every 1 steps, eval every 3 steps, checkpoint every 2 steps, "
    "tensorboard = true }",
)


def _scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)]
            for tag in events.Tags()["scalars"]}  # fmt: skip


def test_the_event_files_hold_the_metrics_records(tmp_path):
    runtime.run(plan_of(SPEC), tmp_path)
    got = _scalars(tmp_path)
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert sorted(got) == ["train/flops", "train/loss", "train/lr", "train/tokens",
                           "train/tokens_per_s", "val/loss"]  # fmt: skip
    for key in ("loss", "lr", "tokens", "flops"):
        assert got[f"train/{key}"] == [(r["global_step"], pytest.approx(r[key], rel=1e-6))
                                       for r in train]  # fmt: skip
    assert got["val/loss"] == [(r["global_step"], pytest.approx(r["val_loss"], rel=1e-6))
                               for r in evals]  # fmt: skip
    assert [s for s, _ in got["val/loss"]] == [3, 6, 9, 12]


def test_a_resumed_run_leaves_the_scalars_of_an_uninterrupted_one(tmp_path):
    plan = plan_of(SPEC)
    runtime.run(plan, tmp_path / "straight")

    class Interrupting(runtime.Progress):
        steps = 0

        def stepped(self, *args) -> None:  # stage 2, step 3: after the step-2 checkpoint
            self.steps += 1
            if self.steps == 9:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runtime.run(plan, tmp_path / "resumed", progress=Interrupting())
    runtime.resume(tmp_path / "resumed")
    straight, resumed = _scalars(tmp_path / "straight"), _scalars(tmp_path / "resumed")
    assert straight.keys() == resumed.keys()
    for tag in straight:
        if tag != "train/tokens_per_s":  # a rate: the wall clock's
            assert resumed[tag] == straight[tag], tag


def test_without_the_package_check_warns_and_run_refuses(tmp_path, monkeypatch):
    report = check_text(SPEC, "t.sw", host=Host(cuda=False, data=(), tensorboard=False))
    assert [d.code for d in report.diagnostics] == ["SW606"]
    monkeypatch.setattr("stackwise_dsl.runtime.train.tensorboard_present", lambda: False)
    with pytest.raises(RunError, match="tensorboard package is not installed"):
        runtime.run(plan_of(SPEC), tmp_path / "run")
    spec = tmp_path / "t.sw"
    spec.write_text(SPEC)
    monkeypatch.setattr("stackwise_dsl.machine.host.tensorboard_present", lambda: False)
    result = CliRunner().invoke(app, ["run", str(spec), "--run-dir", str(tmp_path / "cli")])
    assert result.exit_code == 1 and "SW606" in result.output
    assert "cannot start on this machine" in result.output and "Traceback" not in result.output
