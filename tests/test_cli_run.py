"""`sw run` and `sw plan` from the command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from stackwise_dsl.cli import app
from tests.conftest import ROOT

runner = CliRunner()
TINY = str(ROOT / "specs" / "tiny.sw")


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_run_writes_the_run_directory(tmp_path):
    result = run("run", TINY, "--run-dir", tmp_path / "r", "--max-steps", "6", "--quiet")
    assert result.exit_code == 0, result.output
    r = tmp_path / "r"
    for name in ("spec.sw", "plan.json", "run.json", "metrics.jsonl", "loss.png", "summary.json"):
        assert (r / name).exists(), name
    assert (r / "spec.sw").read_text() == (ROOT / "specs" / "tiny.sw").read_text()
    plan = json.loads((r / "plan.json").read_text())
    assert [s["steps"] for s in plan["stages"]] == [6, 6]  # --max-steps is part of the plan
    records = [json.loads(x) for x in (r / "metrics.jsonl").read_text().splitlines()]
    train = [x for x in records if x["kind"] == "train"]
    assert {"stage", "step", "loss", "lr", "tokens_per_s"} <= train[0].keys()
    assert any("val_loss" in x for x in records)
    assert (r / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (r / "checkpoints").iterdir() if p.is_dir()) == [
        "stage001-step0000006", "stage002-step0000006",
    ]  # fmt: skip


def test_run_json_summary_and_refusing_to_overwrite(tmp_path):
    result = run("run", TINY, "--run-dir", tmp_path, "--max-steps", "3", "--format", "json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert [s["stage"] for s in summary["stages"]] == [1, 2]
    assert all(s["train_loss"] > 0 and s["trainable"] > 0 for s in summary["stages"])
    again = run("run", TINY, "--run-dir", tmp_path, "--max-steps", "3", "--quiet")
    assert again.exit_code == 1 and "already holds a run" in again.output
    before = (tmp_path / "summary.json").read_bytes()
    finished = run("run", "--resume", tmp_path)
    assert finished.exit_code == 0 and "already complete" in finished.output
    as_json = json.loads(run("run", "--resume", tmp_path, "--format", "json").output)
    assert as_json["complete"] is True and as_json["run_dir"] == str(tmp_path)
    assert (tmp_path / "summary.json").read_bytes() == before  # nothing rewritten


def test_running_a_spec_again_keeps_the_earlier_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for _ in range(3):
        assert run("run", TINY, "--max-steps", "1", "--quiet").exit_code == 0
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["tiny", "tiny-2", "tiny-3"]
    assert all((tmp_path / "runs" / n / "summary.json").exists() for n in ("tiny", "tiny-2"))


def test_run_usage_and_spec_errors(tmp_path):
    assert run("run").exit_code == 2
    assert run("run", TINY, "--resume", tmp_path).exit_code == 2
    bad = tmp_path / "bad.sw"
    bad.write_text((ROOT / "specs" / "tiny.sw").read_text().replace("heads = 2", "heads = 3"))
    result = run("run", bad)
    assert result.exit_code == 1 and "SW201" in result.output
    assert run("run", "--resume", tmp_path / "nothing").exit_code == 1


def test_run_reports_data_problems_without_a_traceback(tmp_path):
    result = run("run", ROOT / "specs" / "shakespeare.sw", "--run-dir", tmp_path, "--quiet")
    assert result.exit_code == 1
    assert "there is no file" in result.output and "input.txt" in result.output
    assert "Traceback" not in result.output


def test_plan_json_counts_and_text():
    result = run("plan", ROOT / "specs" / "diffusion.sw", "--format", "json")
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert [c["stage"] for c in data["counts"]] == [1, 2, 3, 4, 5]
    stack = 2 * (128 * 128 * 2 + 128 * 64 * 2 + 3 * 128 * 512 + 2 * 128)  # two blocks, by hand
    stage2 = data["counts"][1]
    assert stage2["by_precision"] == {"fp32": stack, "nf4": stack}  # the new stack and the trunk
    assert stage2["trainable"] == stack  # the embedding is frozen after stage 1 in prepend
    assert data["plan"]["stages"][4]["kind"] == "fuse"
    text = run("plan", ROOT / "specs" / "diffusion.sw")
    assert (
        "NEW fp32" in text.output
        and "nf4 frozen +L8" in text.output
        and "final model:" in text.output
    )


@pytest.mark.parametrize(("spec", "whole"), [
    ("diffusion", "the nf4 weights of stacks 0-3 (stages 2-5; their adapters are sharded)"),
    ("gpt", "the frozen, cached stacks 0-2 (stages 2-4)"),
    ("tiny", "nothing"),
])  # fmt: skip
def test_plan_says_what_fsdp_keeps_whole_on_every_process(spec, whole):
    text = run("plan", ROOT / "specs" / f"{spec}.sw", "--set", "run.distributed=fsdp").output
    assert text.rstrip().endswith(
        "fsdp on several processes: weights, gradients and optimizer state sharded per stack; "
        f"whole on every process: {whole}"
    ), text[-600:]
    assert "fsdp" not in run("plan", ROOT / "specs" / f"{spec}.sw").output


def test_plan_marks_the_stages_that_recompute():
    text = run("plan", ROOT / "specs" / "tiny.sw", "--set", "grow.recompute=true").output
    assert text.count("grow recompute") == 2, text


def test_plan_never_imports_torch():
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom stackwise_dsl.cli import app\n"
        "assert CliRunner().invoke(app, ['plan', sys.argv[1]]).exit_code == 0\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\nprint('light')\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(ROOT / "specs" / "diffusion.sw")],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)  # fmt: skip
    assert result.stdout == "light\n", result.stderr


def test_export_writes_merged_weights_and_refuses_what_is_not_a_run(tmp_path):
    from safetensors import safe_open

    spec = tmp_path / "adapt.sw"
    spec.write_text(
        (ROOT / "specs" / "tiny.sw")
        .read_text()
        .replace(
            "{ steps = 150 }",
            "{ steps = 150, trunk { adapters, precision = nf4, lora(rank = 2) } }",
        )
    )
    assert run("run", spec, "--run-dir", tmp_path / "r", "--max-steps", "3", "-q").exit_code == 0
    result = run("export", tmp_path / "r", "--format", "json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["merged"] == ["0/trunk"] and info["stage"] == 2 and info["stage_done"]
    with safe_open(info["file"], framework="pt") as f:
        assert f.get_tensor("stack/0/blocks.0.attn.q.weight").dtype.is_floating_point
        assert len(list(f.keys())) == 2 * 9 + 2  # 7 linears + 2 norms a stack; embedding, norm
    missing = run("export", tmp_path / "nothing")
    assert missing.exit_code == 1
    assert missing.output.startswith("error: ") and "Traceback" not in missing.output


def test_max_steps_cuts_the_run_and_trial_steps_compresses_it(tmp_path):
    """--max-steps N stops each stage after N steps at the full run's learning rates (the
    full run's first N losses, exactly); --trial-steps N runs each stage's whole schedule
    (warmup 10, cosine to 0) in N steps."""
    every = ["--set", "run.log_every=1", "-q"]
    full = run("run", TINY, "--run-dir", tmp_path / "full", *every)  # 2 x 150 steps
    cut = run("run", TINY, "--run-dir", tmp_path / "cut", "--max-steps", "12", *every)
    trial = run("run", TINY, "--run-dir", tmp_path / "trial", "--trial-steps", "12", *every)
    assert full.exit_code == cut.exit_code == trial.exit_code == 0, cut.output + trial.output

    def train(name):
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        return [(r["stage"], r["step"], r["loss"], r["lr"]) for r in map(json.loads, lines)
                if r["kind"] == "train"]  # fmt: skip

    whole, cut_ = train("full"), train("cut")
    first = [x for x in whole if x[1] <= 12]
    assert [x for x in cut_ if x[0] == 1] == first[:12]  # the same losses and rates
    assert [x[3] for x in cut_] == [x[3] for x in first]  # stage 2 too: its own schedule
    plan = json.loads((tmp_path / "cut" / "plan.json").read_text())
    assert [(s["steps"], s["schedule_steps"]) for s in plan["stages"]] == [(12, 150), (12, 150)]
    lrs = [x[3] for x in train("trial") if x[0] == 1]
    assert lrs[9] == pytest.approx(3e-3) and lrs[-1] == pytest.approx(0.0, abs=1e-12)
    assert [x[3] for x in first if x[0] == 1][9] == pytest.approx(3e-3)
    both = run("run", TINY, "--max-steps", "3", "--trial-steps", "3")
    assert both.exit_code == 2 and "not both" in both.output
