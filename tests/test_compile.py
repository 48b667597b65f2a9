"""`sw compile`: a standalone script that trains what `sw run` trains."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from stackwise_dsl.cli import app
from tests.conftest import BRING_TEXT, ROOT

runner = CliRunner()
NOT_COMPILED = ("grow_pretrained", "pretrained_embedding")  # models from a pretrained directory
SPECS = sorted(
    p for p in (ROOT / "specs").glob("*.sw") if p.stem not in ("llama70b", *NOT_COMPILED)
)
BLOCKED = (
    "import runpy, sys\n"
    "sys.modules['stackwise_dsl'] = None  # the script must not need our package\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


def _compile(spec, out, *extra):
    result = runner.invoke(app, ["compile", str(spec), "-o", str(out), *extra])
    assert result.exit_code == 0, result.output
    return out.read_text()


def _records(run_dir) -> list:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [(r["kind"], r["stage"], r["step"], r.get("loss"), r.get("val_loss"))
            for r in map(json.loads, lines)]  # fmt: skip


def _same(a: list, b: list) -> bool:
    if [x[:3] for x in a] != [x[:3] for x in b]:
        return False
    for x, y in zip(a, b, strict=True):
        for u, v in zip(x[3:], y[3:], strict=True):
            if (u is None) != (v is None) or (u is not None and abs(u - v) > 1e-6 * abs(v)):
                return False
    return True


@pytest.mark.slow
@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_the_script_trains_what_sw_run_trains(spec, tmp_path):
    """Every shipped spec (diffusion.sw: an nf4 trunk with a stack and a trunk LoRA) runs
    three steps a stage with `sw run` and as a compiled script without our package: the
    same losses (within 1e-6 relative), the same run directory, and it exports."""
    extra = []
    if spec.stem in BRING_TEXT:
        text = tmp_path / "input.txt"
        text.write_text((ROOT / "README.md").read_text() * 4)
        extra = ["--set", f"data.source.files={text}"]
    script = tmp_path / "train.py"
    _compile(spec, script, *extra)
    ran = runner.invoke(app, ["run", str(spec), *extra, "--max-steps", "3", "--run-dir",
                              str(tmp_path / "sw"), "-q"])  # fmt: skip
    assert ran.exit_code == 0, ran.output
    result = subprocess.run(
        [sys.executable, "-c", BLOCKED, str(script), "--max-steps", "3", "--run-dir",
         str(tmp_path / "script")],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert _same(_records(tmp_path / "script"), _records(tmp_path / "sw"))
    names = {p.name for p in (tmp_path / "script").iterdir()}
    assert names == {p.name for p in (tmp_path / "sw").iterdir()}  # the same run directory
    summary = json.loads((tmp_path / "sw" / "summary.json").read_text())
    plan = json.loads((tmp_path / "sw" / "plan.json").read_text())
    assert len(summary) == len(plan["stages"]) and all(s["train_loss"] > 0 for s in summary)
    exported = runner.invoke(app, ["export", str(tmp_path / "script"), "-o", str(tmp_path / "m")])
    assert exported.exit_code == 0, exported.output  # a script's run exports like sw run's
    # it samples as `sw sample` does, with its objective's default sampler
    draw = ["--prompt", "", "--max-new-tokens", "6", "--seed", "1", "--temperature", "0.8"]
    drawn = subprocess.run(
        [sys.executable, "-c", BLOCKED, str(script), "--sample", "--run-dir",
         str(tmp_path / "script"), *draw],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert drawn.returncode == 0, drawn.stderr[-3000:]
    ours = runner.invoke(app, ["sample", str(tmp_path / "sw"), *draw])
    assert ours.exit_code == 0, ours.output
    assert drawn.stdout == ours.stdout


def test_compiling_twice_gives_the_same_bytes_and_clean_python(tmp_path):
    a = _compile(ROOT / "specs" / "diffusion.sw", tmp_path / "a.py")
    b = _compile(ROOT / "specs" / "diffusion.sw", tmp_path / "b.py")
    assert a.replace("a.py", "b.py", 2) == b  # the docstring names the script twice
    compile(a, "a.py", "exec")
    ruff = [sys.executable, "-m", "ruff"]
    for command in (
        [*ruff, "check", "--isolated", "--line-length", "100", "--select", "E,F,W,I", "a.py"],
        [*ruff, "format", "--isolated", "--line-length", "100", "--check", "a.py"],
    ):
        result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
        assert result.returncode == 0, result.stdout[-2000:]
    assert a.startswith("#!/usr/bin/env python3\n")
    assert (tmp_path / "a.py").stat().st_mode & 0o100  # executable


def test_compile_imports_no_torch_and_writes_stdout(tmp_path):
    code = (
        "import sys\nfrom stackwise_dsl.cli import main\nsys.argv = ['sw', 'compile', sys.argv[1]]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(ROOT / "specs" / "tiny.sw")],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "SPEC_SHA256 = " in result.stdout and "def main() -> None:" in result.stdout


def test_compile_reports_spec_errors_and_unwritable_outputs(tmp_path):
    bad = tmp_path / "bad.sw"
    bad.write_text((ROOT / "specs" / "tiny.sw").read_text().replace("heads = 2", "heads = 3"))
    result = runner.invoke(app, ["compile", str(bad)])
    assert result.exit_code == 1 and "SW201" in result.output
    result = runner.invoke(app, ["compile", str(ROOT / "specs" / "tiny.sw"), "-o",
                                 str(tmp_path / "missing" / "x.py")])  # fmt: skip
    assert result.exit_code == 2 and result.output.startswith("error: cannot write")


def test_the_remembered_runtime_code_is_what_extraction_gives(tmp_path, monkeypatch):
    from stackwise_dsl.emit import script

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    fresh = script.runtime_code()
    (entry,) = (tmp_path / "cache" / "stackwise-dsl" / "emit").glob("runtime-*.json")
    assert script.runtime_code() == fresh  # read back from the cache
    entry.write_text("{ damaged")
    assert script.runtime_code() == fresh  # a damaged entry is extracted again
    monkeypatch.setattr(script, "ROOTS", ("NVFP4Linear", "Device"))  # part of the key
    assert script.runtime_code() != fresh


@pytest.mark.parametrize("spec", ["tiny", "diffusion"])
def test_compiled_scripts_match_their_golden_files(spec, golden, monkeypatch):
    """Any change to what a script contains shows up here, for review
    (`pytest --update-goldens` rewrites the files)."""
    monkeypatch.chdir(ROOT)
    result = runner.invoke(app, ["compile", f"specs/{spec}.sw"])
    assert result.exit_code == 0, result.output
    golden(ROOT / "tests" / "golden" / f"{spec}_train.py", result.output)


HOSTILE = ["'", '"', "'''", '"""', "\\", "a\nb", "\r", "\x00", "__import__('os').system('x')",
           "\"); import os; (\"", "\u2028", "\u2029", "\x85", "é", "#", "{{ x }}", "{% raw %}"]  # fmt: skip


def _with_strings(obj, make):
    """A copy of a plan object with every string field replaced by `make()`."""
    import attrs

    if attrs.has(type(obj)):
        changes = {
            f.name: _with_strings(getattr(obj, f.name), make) for f in attrs.fields(type(obj))
        }
        return attrs.evolve(obj, **changes)
    if isinstance(obj, tuple):
        return tuple(_with_strings(x, make) for x in obj)
    if isinstance(obj, str):
        return make()
    return obj


def _shape(source: str) -> str:
    """The script's syntax tree with every string constant blanked out, and the names of the
    configuration's constants (`BLOCK_<name>` takes a block's name, made an identifier)
    written alike."""
    import ast
    import re

    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            node.value = ""
        if isinstance(node, ast.Name) and re.fullmatch(r"BLOCK_[A-Z0-9_]*", node.id):
            node.id = "BLOCK_"
    return ast.dump(tree)


def test_hostile_strings_anywhere_in_a_spec_never_become_code():
    """Every string that reaches a script (each string field of the plan, the spec's text and
    path, the overrides, the output name) set to quotes, triple quotes, backslashes,
    newlines, `__import__`, unicode separators or template syntax: the script's statements
    are exactly those of a benign compile; only string constants differ."""
    import itertools

    from stackwise_dsl.emit.script import render
    from stackwise_dsl.frontend import check_file
    from stackwise_dsl.lower import to_plan

    spec = ROOT / "specs" / "diffusion.sw"
    plan = to_plan(check_file(spec, []).spec, name="diffusion")
    cycle = itertools.cycle(HOSTILE)
    hostile_plan = _with_strings(plan, lambda: next(cycle) * 2)
    hostile = render(hostile_plan, spec_text="".join(HOSTILE), spec_file="".join(HOSTILE),
                     overrides=[f"run.dir={h}" for h in HOSTILE], script_name="".join(HOSTILE))  # fmt: skip
    for raw in ("\u2028", "\u2029", "\x85", "\x00", "\r", "é"):
        assert raw not in hostile  # escaped, never written raw
    benign = itertools.cycle([f"s{i}" for i in range(len(HOSTILE))])  # equal where hostile is
    with_benign_lists = render(_with_strings(plan, lambda: next(benign)), spec_text="x",
                               spec_file="x", overrides=["x"] * len(HOSTILE))  # fmt: skip
    assert _shape(hostile) == _shape(with_benign_lists)  # the same statements, only data differ


def test_a_script_resumes_a_run_stage_by_stage_and_knows_when_it_is_complete(tmp_path):
    """A tiny.sw run written by its script, rewound to the end of stage 1 (as if it had been
    stopped there), resumes with the script: stage 1 is skipped, stage 2 logs what the
    uninterrupted run logged, and summary.json holds both stages. Resuming a finished run
    says so and changes nothing."""
    import shutil

    script = tmp_path / "train.py"
    _compile(ROOT / "specs" / "tiny.sw", script)
    whole = tmp_path / "whole"
    command = [sys.executable, str(script), "--max-steps", "4"]
    assert subprocess.run([*command, "--run-dir", str(whole)], capture_output=True).returncode == 0
    cut = tmp_path / "cut"
    shutil.copytree(whole, cut)
    shutil.rmtree(cut / "checkpoints" / "stage002-step0000004")
    (cut / "checkpoints" / "latest.json").write_text('{"checkpoint": "stage001-step0000004"}')
    (cut / "summary.json").unlink()
    resumed = subprocess.run([sys.executable, str(script), "--resume", str(cut)],
                             capture_output=True, text=True)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "stage 1 (grow)" in resumed.stdout and "stage 2 (grow)" in resumed.stdout
    assert _records(cut) == _records(whole)
    done, again = (
        json.loads((whole / "summary.json").read_text()),
        json.loads((cut / "summary.json").read_text()),
    )
    assert [s["stage"] for s in again] == [1, 2]
    assert [s["train_loss"] for s in again] == [s["train_loss"] for s in done]
    before = (cut / "summary.json").read_bytes()
    finished = subprocess.run([sys.executable, str(script), "--resume", str(cut)],
                              capture_output=True, text=True)  # fmt: skip
    assert finished.returncode == 0 and "is already complete" in finished.stdout
    assert (cut / "summary.json").read_bytes() == before


def test_main_describes_each_stage_and_groups_wide_racks():
    from stackwise_dsl.emit.script import describe_stage, position_ranges
    from stackwise_dsl.frontend import check_file
    from stackwise_dsl.lower import to_plan

    assert position_ranges([0, 1, 2, 5, 7, 8]) == "0-2, 5, 7-8" and position_ranges([4]) == "4"
    plan = to_plan(check_file(ROOT / "specs" / "llama70b.sw", []).spec, name="llama70b")
    assert describe_stage(plan, plan.stages[-1]) == [
        "Stage 81 of 81: fuse, 4,883 steps, clm, lr 0.0001",
        "  stacks 0-79: trunk, nf4, adapters train, LoRA r16 trunk",
    ]
    assert describe_stage(plan, plan.stages[9])[1:] == [  # more than 8 stacks: grouped
        "  stacks 0-8: trunk, nf4, frozen",
        "  stack 9: new, bf16, random init",
    ]
    assert describe_stage(plan, plan.stages[2])[1:] == [  # a stack per line
        "  stack 0 (layer): trunk, nf4, frozen",
        "  stack 1 (layer): trunk, nf4, frozen",
        "  stack 2 (layer): new, bf16, random init",
    ]


def test_compile_never_replaces_its_spec_a_fifo_or_a_symlink(tmp_path):
    spec = tmp_path / "tiny.sw"
    spec.write_text((ROOT / "specs" / "tiny.sw").read_text())
    result = runner.invoke(app, ["compile", str(spec), "-o", str(spec)])
    assert result.exit_code == 2
    assert result.output == f"error: {spec} is the spec being compiled: name another file\n"
    assert spec.read_text() == (ROOT / "specs" / "tiny.sw").read_text()
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    result = runner.invoke(app, ["compile", str(spec), "-o", str(fifo)])
    assert result.exit_code == 2 and "is a FIFO, not a file" in result.output
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    target, link = tmp_path / "real.py", tmp_path / "link.py"
    target.write_text("")
    link.symlink_to(target)
    assert runner.invoke(app, ["compile", str(spec), "-o", str(link)]).exit_code == 0
    assert link.is_symlink() and target.read_text().startswith("#!/usr/bin/env python")


def test_compile_to_dash_writes_standard_output(tmp_path):
    result = runner.invoke(app, ["compile", str(ROOT / "specs" / "tiny.sw"), "-o", "-"])
    assert result.exit_code == 0 and result.output.startswith("#!/usr/bin/env python")
    assert not (ROOT / "-").exists()


@pytest.mark.parametrize("steps", ["0", "-3", "x"])
def test_a_script_refuses_a_cap_below_one_step(steps, tmp_path):
    script = tmp_path / "train.py"
    _compile(ROOT / "specs" / "tiny.sw", script)
    result = subprocess.run([sys.executable, str(script), "--max-steps", steps,
                             "--run-dir", str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2
    assert f"expected a whole number of at least 1, got {steps!r}" in result.stderr
    assert not (tmp_path / "run").exists()


def _script(tmp_path, *extra):
    script = tmp_path / "train.py"
    _compile(ROOT / "specs" / "tiny.sw", script, *extra)
    return script


def _python(*args, cwd=None):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)  # fmt: skip


def test_a_script_resumes_mid_stage_and_reads_runs_sw_run_started(tmp_path):
    """The script's harness writes and reads sw run's formats: it resumes its own run from a
    mid-stage checkpoint (optimizer, RNG and log window restored) to the uninterrupted
    losses, and it resumes a run `sw run` started (whose stage-end checkpoint keeps the
    frozen trunk by reference, `stacks_on_disk`) to the losses `sw run` logs."""
    import shutil

    every = ["--set", "run.checkpoint_every=2", "--set", "run.log_every=3"]
    script = _script(tmp_path, *every)
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert _python(script, "--max-steps", "5", "--run-dir", whole).returncode == 0
    shutil.copytree(whole, cut)
    points = sorted(p.name for p in (cut / "checkpoints").iterdir() if p.is_dir())
    # stage ends stay, and the newest step checkpoint
    assert points == ["stage001-step0000005", "stage002-step0000004", "stage002-step0000005"]
    shutil.rmtree(cut / "checkpoints" / "stage002-step0000005")
    (cut / "summary.json").unlink()
    (cut / "checkpoints" / "latest.json").write_text('{"checkpoint": "stage002-step0000004"}')
    resumed = _python(script, "--resume", cut)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _records(cut) == _records(whole) and len(_records(whole)) == 6  # 2 logs, 1 eval

    theirs = tmp_path / "sw"
    ran = runner.invoke(app, ["run", str(ROOT / "specs" / "tiny.sw"), *every, "--max-steps", "5",
                              "--run-dir", str(theirs), "-q"])  # fmt: skip
    assert ran.exit_code == 0, ran.output
    state = json.loads((theirs / "checkpoints" / "stage002-step0000004" / "state.json").read_text())
    assert state["stacks_on_disk"] == {"0": "stage001-step0000005/model.safetensors"}
    assert not state["stage_done"] and state["optimizer"] is not None
    shutil.rmtree(theirs / "checkpoints" / "stage002-step0000005")
    (theirs / "checkpoints" / "latest.json").write_text('{"checkpoint": "stage002-step0000004"}')
    (theirs / "summary.json").unlink()
    resumed = _python(script, "--resume", theirs)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _same(_records(theirs), _records(whole))
    assert json.loads((theirs / "summary.json").read_text())[1]["steps"] == 5


def test_a_script_refuses_runs_it_cannot_resume_with_a_message(tmp_path):
    """Another plan's run, a damaged checkpoint, a missing directory: a message, exit 1,
    no traceback, and nothing in the run changed."""
    script = _script(tmp_path)
    run = tmp_path / "run"
    assert _python(script, "--max-steps", "2", "--run-dir", run).returncode == 0
    (tmp_path / "other").mkdir()
    other = _script(tmp_path / "other", "--set", "optimizer.lr=0.01")
    refused = _python(other, "--resume", run)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "plan.json is not this script's plan (a run of another plan" in refused.stderr
    (run / "checkpoints" / "latest.json").write_text('{"checkpoint": "stage001-step0000002"}')
    (run / "summary.json").unlink()
    (run / "checkpoints" / "stage001-step0000002" / "model.safetensors").write_bytes(b"\x00" * 9)
    before = (run / "metrics.jsonl").read_text()
    damaged = _python(script, "--resume", run)
    assert damaged.returncode == 1 and "Traceback" not in damaged.stderr
    assert "stage001-step0000002/model.safetensors is damaged (" in damaged.stderr
    assert (run / "metrics.jsonl").read_text() == before
    import torch
    from safetensors.torch import save_file

    save_file({"shared/embed.weight": torch.zeros(3, 5)},
              str(run / "checkpoints" / "stage001-step0000002" / "model.safetensors"))  # fmt: skip
    other_shape = _python(script, "--resume", run)
    assert other_shape.returncode == 1 and "Traceback" not in other_shape.stderr
    assert "holds `shared/embed.weight` of shape (3, 5), but the plan's model" in other_shape.stderr
    missing = _python(script, "--resume", tmp_path / "nowhere")
    assert missing.returncode == 1 and "is not a run directory" in missing.stderr


def test_a_script_without_validation_data_reports_its_stages(tmp_path):
    """`validation = 0` is a valid spec: the summary shows no val loss, as sw run's does."""
    script = _script(tmp_path, "--set", "data.validation=0")
    ran = _python(script, "--max-steps", "1", "--run-dir", tmp_path / "run")
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "stage 2 (grow): 1 steps, train loss" in ran.stdout and "val loss -," in ran.stdout


def test_a_script_refuses_an_empty_directory_and_stops_quietly_on_ctrl_c(tmp_path):
    import signal

    script = _script(tmp_path)
    empty = _python(script, "--run-dir", "", "--max-steps", "1", cwd=tmp_path)
    assert empty.returncode == 2 and "the directory is empty: name a directory" in empty.stderr
    assert not (tmp_path / "plan.json").exists()
    run = tmp_path / "run"
    # SIGINT as a terminal sends it, even when the tests run as a background job (which
    # starts with SIGINT ignored, and Python then installs no KeyboardInterrupt)
    proc = subprocess.Popen([sys.executable, str(script), "--run-dir", str(run)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    assert proc.stdout.readline().startswith("stage 1 (grow), 150 steps")  # training began
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err
    assert err.strip() == f"interrupted; continue with --resume {run}"


def test_a_spec_with_crlf_line_ends_is_kept_byte_for_byte(tmp_path):
    """SPEC_SHA256 is the SHA-256 of the spec file's bytes, and the run directory's spec.sw
    is those bytes, whatever the line ends."""
    import hashlib

    spec = tmp_path / "crlf.sw"
    spec.write_bytes((ROOT / "specs" / "tiny.sw").read_bytes().replace(b"\n", b"\r\n"))
    text = _compile(spec, tmp_path / "train.py")
    assert f'SPEC_SHA256 = "{hashlib.sha256(spec.read_bytes()).hexdigest()}"' in text
    ran = runner.invoke(app, ["run", str(spec), "--max-steps", "1", "--run-dir",
                              str(tmp_path / "run"), "-q"])  # fmt: skip
    assert ran.exit_code == 0, ran.output
    assert (tmp_path / "run" / "spec.sw").read_bytes() == spec.read_bytes()


def test_a_scripts_sampling_options_and_refusals(tmp_path):
    script, run_dir = _script(tmp_path), tmp_path / "r"
    assert _python(script, "--max-steps", "3", "--run-dir", run_dir).returncode == 0
    two = ["--num-samples", "2", "--max-new-tokens", "4", "--seed", "3"]
    drawn = _python(script, "--sample", "--run-dir", run_dir, *two)
    ours = runner.invoke(app, ["sample", str(run_dir), *two])
    assert drawn.returncode == 0 and drawn.stdout == ours.stdout  # with sw sample's separators
    assert drawn.stdout.splitlines()[0] == "--- sample 1 ---"
    for args, code, message in [
        (["--prompt", "abc"], 2, "--prompt is for sampling: add --sample"),
        (["--sample", "--run-dir", run_dir, "--top-k", "0"], 2, "top_k must be a whole number"),
        (["--sample", "--run-dir", run_dir, "--temperature", "inf"], 2, "temperature must be"),
        (["--sample", "--run-dir", run_dir, "--prompt", "a<mask>"], 2, "no `<mask>` to fill"),
        (["--sample", "--run-dir", tmp_path / "none"], 1, "is not a run directory"),
        (["--sample", "--max-steps", "2"], 2, "leave out --max-steps"),
    ]:  # fmt: skip
        result = _python(script, *args)
        assert result.returncode == code and message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
