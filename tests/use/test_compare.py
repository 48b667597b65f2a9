"""`sw compare`: curves of several runs on the same windows, against steps, tokens, FLOPs or
seconds; refusals when the runs did not score the same windows the same way."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from stackwise_dsl import runtime
from stackwise_dsl.cli import app
from stackwise_dsl.use import load
from stackwise_dsl.use.compare import Axis, Curve, compare
from stackwise_dsl.use.errors import UseError
from stackwise_dsl.use.evaluation import evaluate_run
from stackwise_dsl.use.scoring import headline
from tests.conftest import ROOT
from tests.runtime.helpers import plan_of, small

runner = CliRunner()
EVERY = "run { seed = SEED, log every 2 steps, eval every 2 steps }\n"
TEXT = f'text("{ROOT / "docs" / "language.md"}")'  # the same text whatever the seed
SYNTHETIC = small("clm", grow="append 2 x s").replace("run { seed = 0, log every 2 steps }\n", "")
CLM = SYNTHETIC.replace("synthetic(task = reverse, symbols = 12, samples = 400)", TEXT)
END_TO_END = CLM.replace("grow append 2 x s { steps = 6,", "grow end_to_end 2 x s { steps = 12,")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    out = {}
    for name, text in {"a": CLM + EVERY.replace("SEED", "0"),
                       "b": CLM + EVERY.replace("SEED", "1"),
                       "e2e": END_TO_END + EVERY.replace("SEED", "0"),
                       "tail": CLM.replace("batch = 4", "batch = 4, split = tail")
                       + EVERY.replace("SEED", "0"),
                       "syn0": SYNTHETIC + EVERY.replace("SEED", "0"),
                       "syn1": SYNTHETIC + EVERY.replace("SEED", "1")}.items():  # fmt: skip
        runtime.run(plan_of(text, name), root / name, spec_text=text)
        out[name] = root / name
    return out


def _evals(run):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == "eval"]


@pytest.mark.parametrize("axis", ["steps", "tokens", "flops"])
def test_the_curves_are_the_runs_own_evaluations(runs, axis):
    result = compare([runs["a"], runs["b"], runs["e2e"]], Axis(axis))
    for curve, run in zip(result.curves, ["a", "b", "e2e"], strict=True):
        evals = _evals(runs[run])
        key = {"steps": "global_step"}.get(axis, axis)
        assert curve.points == tuple((float(r[key]), r["val_loss"]) for r in evals)
    if axis == "steps":  # stage-wise: 12 steps in two stages; end to end: 12 in one
        assert [c.points[-1][0] for c in result.curves] == [12, 12, 12]
    if axis == "flops":  # end to end trains both stacks every step: more FLOPs per step
        a, _, e2e = (c.points[-1][0] for c in result.curves)
        assert e2e > a and result.common == a
        assert result.rows()[2]["loss_at_common_x"] == result.curves[2].at(a)


def test_a_curve_interpolates_between_its_points():
    curve = Curve(run="r", name="n", points=((10.0, 3.0), (20.0, 2.0), (40.0, 1.0)))
    assert curve.at(15.0) == 2.5 and curve.at(30.0) == 1.5 and curve.at(40.0) == 1.0
    assert curve.at(5.0) is None and curve.at(41.0) is None and curve.at(20.0) == 2.0


def test_seconds_come_from_the_logged_rates(runs, tmp_path):
    run = tmp_path / "a"
    shutil.copytree(runs["a"], run)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    tokens = plan_of(CLM + EVERY.replace("SEED", "0")).tokens_per_step
    for r in lines:  # a record every 2 steps at 16 steps/s: 0.125 s per record
        if r["kind"] == "train":
            r["tokens_per_s"] = 16.0 * tokens
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    result = compare([run], Axis.SECONDS)
    assert [x for x, _ in result.curves[0].points] == [0.0625 * k for k in (2, 4, 6, 8, 10, 12)]


def test_runs_that_scored_other_windows_are_refused_with_what_differs(runs, tmp_path):
    with pytest.raises(UseError, match=r"differ in: the split.*--data FILE"):
        compare([runs["a"], runs["tail"]])
    with pytest.raises(UseError, match="named twice"):
        compare([runs["a"], runs["a"]])
    other = tmp_path / "other"
    shutil.copytree(runs["b"], other)
    (other / "tokenizer.json").write_text(json.dumps({"kind": "bytes", "specials": []}))
    with pytest.raises(UseError, match="the tokenizer"):
        compare([runs["a"], other])
    with pytest.raises(UseError, match="other vocabularies"):
        compare([runs["a"], other], data=runs["a"] / "spec.sw")


def test_with_data_every_checkpoint_is_scored_on_the_same_text(runs, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("12+34=46 <mask> reverse: abc=cba\n" * 40)  # <mask> here is text
    result = compare([runs["a"], runs["tail"]], Axis.FLOPS, data=text, windows=8)
    for curve, run in zip(result.curves, [runs["a"], runs["tail"]], strict=True):
        ends = [r for r in _evals(run) if r["step"] == 6]  # stage ends: the checkpoints kept
        rows = evaluate_run(run, data=text, all_stages=True, windows=8)
        assert [x for x, _ in curve.points] == [float(r["flops"]) for r in ends]
        assert [y for _, y in curve.points] == pytest.approx([headline(r) for r in rows],
                                                             rel=1e-12)  # fmt: skip
    assert result.source == str(text)
    assert load(runs["a"]).loss(text.read_text()) == pytest.approx(
        evaluate_run(runs["a"], data=text)[0]["loss"], rel=1e-9
    )


def test_the_command_prints_a_table_writes_json_and_a_plot(runs, tmp_path):
    plot = tmp_path / "cmp.png"
    args = ["compare", str(runs["a"]), str(runs["e2e"]), "--x", "flops", "-o", str(plot)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:6] == ["run", "name", "points", "last", "flops", "last"]
    assert len(lines) == 5 and lines[-1] == f"plot written to {plot}"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = runner.invoke(app, [*args[:5], "--format", "json"])
    data = json.loads(out.output)
    assert data["x"] == "flops" and [r["name"] for r in data["runs"]] == ["a", "e2e"]
    assert data["common_x"] == min(r["last_x"] for r in data["runs"])


@pytest.mark.parametrize(("args", "message"), [
    (["--windows", "3"], "--windows needs --data"),
    (["-o", "plot.svg"], "the plot is a PNG"),
    (["--x", "epochs"], "Invalid value"),
])  # fmt: skip
def test_the_command_refuses_bad_flags_in_words(runs, args, message):
    result = runner.invoke(app, ["compare", str(runs["a"]), *args])
    assert result.exit_code == 2 and message in result.output
    assert "Traceback" not in result.output


def test_what_is_not_a_run_is_refused_in_words(tmp_path):
    result = runner.invoke(app, ["compare", str(tmp_path / "nothing")])
    assert result.exit_code == 1 and "is not a run directory" in result.output


def test_time_as_depth_compares_only_runs_that_score_the_same_ratios_at_the_same_steps(tmp_path):
    depth = small("masked_diffusion(time = depth)", grow="prepend 2 x s", data=TEXT)
    depth = depth.replace("run { seed = 0, log every 2 steps }\n", "")
    texts = {"s0": depth + EVERY.replace("SEED", "0"), "s1": depth + EVERY.replace("SEED", "1"),
             "long": depth.replace("steps = 6", "steps = 8") + EVERY.replace("SEED", "0")}  # fmt: skip
    for name, text in texts.items():
        runtime.run(plan_of(text, name), tmp_path / name, spec_text=text)
    seeds = compare([tmp_path / "s0", tmp_path / "s1"])  # other seeds: the same measure
    assert [len(c.points) for c in seeds.curves] == [6, 6]
    with pytest.raises(UseError, match="differ in: the objective's measure"):
        compare([tmp_path / "s0", tmp_path / "long"])


def test_damaged_or_unplaceable_records_are_refused_in_words(runs, tmp_path):
    run = tmp_path / "a"
    shutil.copytree(runs["a"], run)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    for r in lines:
        r.pop("flops")  # a run from before FLOPs were logged
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    with pytest.raises(UseError, match="no validation loss to place on the flops axis"):
        compare([run], Axis.FLOPS)
    assert len(compare([run]).curves[0].points) == 6  # steps need no flops
    (run / "tokenizer.json").write_bytes(b"\xff")
    with pytest.raises(UseError, match=r"tokenizer\.json is damaged"):
        compare([run, runs["b"]])
    shutil.copy(runs["a"] / "tokenizer.json", run / "tokenizer.json")
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").mkdir()
    with pytest.raises(UseError, match="is not a regular file"):
        compare([run])
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(UseError, match="holds no text to score"):
        compare([runs["a"]], data=empty)
    result = runner.invoke(app, ["compare", str(runs["a"]), "-o", str(tmp_path / "no" / "x.png")])
    assert result.exit_code == 2 and "cannot write the plot into" in result.output


def test_runs_of_other_seeds_on_synthetic_data_hold_other_text(runs, tmp_path):
    """The windows' text itself is drawn from the seed: the runs cannot share windows."""
    with pytest.raises(UseError, match=r"differ in: the data\)"):
        compare([runs["syn0"], runs["syn1"]])
    assert len(compare([runs["syn0"]]).curves[0].points) == 6
