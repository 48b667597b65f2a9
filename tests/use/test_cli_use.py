"""`sw sample` and `sw eval` from the command line, and the Python example in docs/using.md."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil

import pytest
from typer.testing import CliRunner

from stackwise_dsl.cli import app
from tests.conftest import ROOT

runner = CliRunner()


def sw(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


def test_sample_prints_samples_and_json(trained_runs):
    run = trained_runs["clm"]
    one = sw("sample", run, "--prompt", "abc", "--max-new-tokens", "5", "--temperature", "0")
    assert one.exit_code == 0, one.output
    assert one.stdout.startswith("abc") and len(one.stdout.rstrip("\n")) <= 8
    many = sw("sample", run, "--max-new-tokens", "5", "--num-samples", "2", "--format", "json")
    data = json.loads(many.stdout)
    assert data["checkpoint"] == "stage002-step0000006" and data["sampler"] == "autoregressive"
    assert len(data["samples"]) == 2 and data["network_calls"] == 5 and data["seed"] == 0
    again = sw("sample", run, "--max-new-tokens", "5", "--num-samples", "2", "--format", "json")
    assert json.loads(again.stdout)["samples"] == data["samples"]
    text = sw("sample", run, "--max-new-tokens", "5", "--num-samples", "2")
    assert text.stdout.splitlines()[0] == "--- sample 1 ---"


def test_sample_a_stage_and_a_prompt_file(trained_runs, tmp_path):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("ab<mask>d<mask>", encoding="utf-8")
    result = sw("sample", trained_runs["depth"], "--checkpoint", "2", "--prompt-file", prompt,
                "--format", "json", "--temperature", "0")  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["stage"] == 2 and data["sampler"] == "depth" and data["network_calls"] == 2
    sample = data["samples"][0]
    assert len(sample.encode()) >= 5 and sample[:2] == "ab"


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--checkpoint", "9"], 2, "the run has stages 1 to 2, not 9"),
    (["--sampler", "ancestral"], 2, "does not fit this run's objective: use autoregressive"),
    (["--max-new-tokens", "100"], 2, "must fit the model's context of 16"),
    (["--top-p", "0"], 2, "top_p must be in (0, 1]"),
    (["--steps", "4"], 2, "steps is only for masked diffusion"),
    (["--prompt", "a", "--prompt-file", "x"], 2, "give --prompt or --prompt-file, not both"),
    (["--prompt", "a<mask>"], 2, "has no `<mask>` to fill"),
    (["--device", "tpu"], 2, "device 'tpu' is not one of cpu, cuda"),
])  # fmt: skip
def test_sample_refuses_what_does_not_fit(trained_runs, args, code, message):
    result = sw("sample", trained_runs["clm"], *args)
    assert result.exit_code == code and message in result.output, result.output


def test_sample_and_eval_of_runs_that_are_not_there_or_damaged(trained_runs, tmp_path):
    for command in ("sample", "eval"):
        missing = sw(command, tmp_path / "nothing")
        assert missing.exit_code == 1 and "is not a run directory" in missing.output
    prompt_dir = sw("sample", trained_runs["clm"], "--prompt-file", tmp_path)
    assert prompt_dir.exit_code == 2 and "is not a regular file" in prompt_dir.output
    run = tmp_path / "damaged"
    shutil.copytree(trained_runs["clm"], run)
    weights = run / "checkpoints" / "stage002-step0000006" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    for command in ("sample", "eval"):
        result = sw(command, run)
        assert result.exit_code == 1 and str(weights) in result.output, result.output
    (run / "tokenizer.json").write_text("{")
    result = sw("sample", run, "--checkpoint", "1")
    assert result.exit_code == 1 and "tokenizer.json cannot be read" in result.output


def test_eval_table_json_and_files(trained_runs, tmp_path):
    run = trained_runs["clm"]
    table = sw("eval", run, "--all-stages")
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["stage", "checkpoint", "loss", "ppl", "bits/token", "bits/byte",
                                "bits/char", "val", "loss", "recorded"]  # fmt: skip
    assert [x.split()[0] for x in lines[1:3]] == ["1", "2"]
    assert lines[-1].startswith("scored on the run's validation windows")
    rows = json.loads(sw("eval", run, "--all-stages", "--format", "json").stdout)["rows"]
    for line, row in zip(lines[1:3], rows, strict=True):  # the table shows the JSON's values
        assert line.split()[2] == f"{row['loss']:.4f}"
        assert line.split()[-1] == f"{row['recorded_val_loss']:.4f}"
    text = tmp_path / "t.txt"
    text.write_text("abcdabcd|" * 10, encoding="utf-8")
    scored = json.loads(sw("eval", run, "--data", text, "--windows", "2",
                           "--format", "json").stdout)["rows"][0]  # fmt: skip
    assert scored["data"] == str(text) and scored["windows"] == 2 and scored["tokens"] == 32
    assert "val_loss" not in scored
    diffusion = sw("eval", trained_runs["input"])
    assert "NELBO bits/token" in diffusion.stdout.splitlines()[0]
    both = sw("eval", run, "--all-stages", "--checkpoint", "1")
    assert both.exit_code == 2 and "not both" in both.output
    missing = sw("eval", run, "--data", tmp_path / "none.txt")
    assert missing.exit_code == 2 and "none.txt" in missing.output


def test_the_python_example_in_the_docs_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ran = sw("run", ROOT / "specs" / "tiny.sw", "--run-dir", "runs/tiny", "--max-steps", "10",
             "-q")  # fmt: skip
    assert ran.exit_code == 0, ran.output
    doc = (ROOT / "docs" / "using.md").read_text(encoding="utf-8")
    code = re.search(r"## Python.*?```python\n(.*?)```", doc, re.S).group(1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "docs/using.md", "exec"), {})
    lines = out.getvalue().splitlines()
    assert lines[0] == "2 ('autoregressive',)"
    assert lines[1].startswith("['abc") and lines[2].count("'abc") == 2
    assert lines[3].endswith(" nats per token") and float(lines[3].split()[0]) > 0
    assert float(lines[4]) > 0
