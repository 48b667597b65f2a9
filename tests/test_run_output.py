"""What `sw run` prints when nobody watches a terminal: a flushed plain line per logged step,
and a summary table within 80 columns."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import threading

import pytest
from typer.testing import CliRunner

from stackwise_dsl.cli import app
from stackwise_dsl.cli.run_view import print_summary
from stackwise_dsl.runtime import StageSummary
from tests.conftest import ROOT

# tiny.sw with more steps, logged more often: the run goes on well after its first line
SPEC = """\
model { d_model = 32, context = 32 }
block b { attention = mha(heads = 2, mode = causal), ffn = swiglu(hidden = 64) }
stack s = 1 x b
objective = clm
grow append 2 x s { steps = 200 }
data { source = synthetic(task = copy, symbols = 16, samples = 512), batch = 8 }
optimizer = adamw(lr = 3e-3, warmup = 10)
run { seed = 0, log every 20 steps }
"""
STEP = re.compile(r"stage (\d)/2 step (\d+)/200 loss (\d+\.\d{4}) [\d,]+ tok/s eta \d+:\d\d:\d\d")
# a buffered stdout, a colour request or an inherited width would hide what is tested
DROPPED = ("PYTHONUNBUFFERED", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS")


@pytest.fixture(scope="module")
def piped(tmp_path_factory):
    """One run with stdout on a pipe: each line as read, with whether summary.json (written
    after the last stage, before the table) existed then; and the run directory."""
    tmp = tmp_path_factory.mktemp("piped")
    (tmp / "spec.sw").write_text(SPEC, encoding="utf-8")
    run_dir = tmp / "run"
    env = {k: v for k, v in os.environ.items() if k not in DROPPED}
    command = [sys.executable, "-m", "stackwise_dsl", "run", "spec.sw", "--run-dir", "run"]
    with (tmp / "stderr").open("w") as err:
        proc = subprocess.Popen(command, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=err)
        lines = []

        def read() -> None:
            for raw in proc.stdout:
                lines.append((raw.decode("utf-8"), (run_dir / "summary.json").exists()))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            code = proc.wait(timeout=120)
        finally:
            proc.kill()
        reader.join(timeout=10)
    assert code == 0, (tmp / "stderr").read_text()
    return lines, run_dir


def test_a_piped_run_prints_a_line_per_logged_step(piped):
    lines, run_dir = piped
    text = [line.rstrip("\n") for line, _ in lines]
    steps = [m.groups() for m in map(STEP.fullmatch, text) if m]
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert steps == [(str(r["stage"]), str(r["step"]), f"{r['loss']:.4f}") for r in train]
    assert [int(step) for _, step, _ in steps] == list(range(20, 201, 20)) * 2
    vals = [f"{r['val_loss']:.4f}" for r in records if r["kind"] == "eval" and r["step"] == 200]
    for stage, val in zip((1, 2), vals, strict=True):
        assert f"stage {stage}/2 grow: 200 steps" in text
        done = [x for x in text if x.startswith(f"stage {stage}/2 done in ")]
        assert len(done) == 1 and done[0].endswith(f", val loss {val}"), done
    assert text[-1] == f"run written to {run_dir}"


def test_piped_lines_arrive_as_they_happen(piped):
    lines, _ = piped
    first_step = next(i for i, (line, _) in enumerate(lines) if STEP.fullmatch(line.rstrip("\n")))
    assert first_step == 1  # after "stage 1/2 grow: 200 steps"
    assert not lines[0][1] and not lines[first_step][1]  # read while the run went on


def test_piped_output_is_plain_and_fits_80_columns(piped):
    text = "".join(line for line, _ in piped[0])
    assert "\x1b" not in text and "\r" not in text and "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "Tokens/s" in text and "Trainable" in text


def wide_summary(n: int) -> StageSummary:
    """A long end-to-end stage of a large model: every column near its widest."""
    return StageSummary(
        stage=n, kind="end_to_end", steps=12_208, train_loss=10.1234,
        val_loss=None if n == 81 else 9.8765, seconds=12_345.6, trainable=69_042_184_192,
        tokens_per_s=1_234_567.0,
    )  # fmt: skip


def test_summary_table_fits_80_columns_without_truncation():
    summaries = [wide_summary(n) for n in (1, 2, 3, 4, 5, 81)]
    out = io.StringIO()  # not a terminal
    print_summary(summaries, out)
    lines = out.getvalue().splitlines()
    assert "…" not in out.getvalue() and "\x1b" not in out.getvalue()
    assert max(len(line) for line in lines) <= 80
    header = " ".join(lines[1:3]).split()
    assert header == ["Train", "Val", "Stage", "Kind", "Steps", "loss", "loss", "Time", "Tokens/s", "Trainable"]  # fmt: skip
    rows = [line.split() for line in lines[4:]]
    assert rows[0] == ["1", "end_to_end", "12,208", "10.1234", "9.8765", "3:25:46", "1,234,567", "69,042,184,192"]  # fmt: skip
    assert rows[-1][:5] == ["81", "end_to_end", "12,208", "10.1234", "-"]
    assert len(rows) == 6 and all(len(row) == 8 for row in rows)  # one line per stage


def test_quiet_and_json_print_no_step_lines(tmp_path):
    tiny = str(ROOT / "specs" / "tiny.sw")
    runner = CliRunner()
    args = ["run", tiny, "--max-steps", "1", "--run-dir"]
    quiet = runner.invoke(app, [*args, str(tmp_path / "q"), "-q"])
    assert quiet.output == f"run written to {tmp_path / 'q'}\n"
    as_json = runner.invoke(app, [*args, str(tmp_path / "j"), "--format", "json"])
    assert [s["stage"] for s in json.loads(as_json.output)["stages"]] == [1, 2]
