"""Damaged run directories: `sw run --resume` and `sw export` say which file is wrong and
what to do, never with a traceback, and change nothing. Each case damages a copy of one
small real run whose latest checkpoint is the end of stage 1 (so resuming has work to do)."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stackwise_dsl.cli import app
from tests.conftest import ROOT

runner = CliRunner()
STAGE1 = "stage001-step0000004"


@pytest.fixture(scope="module")
def finished_stage(tmp_path_factory) -> Path:
    """tiny.sw, 4 steps a stage, checkpoints every 2: stage 1 done, resumable from there."""
    run_dir = tmp_path_factory.mktemp("damaged") / "base"
    result = runner.invoke(app, [
        "run", str(ROOT / "specs" / "tiny.sw"), "--max-steps", "4", "-s",
        "run.checkpoint_every=2", "--run-dir", str(run_dir), "-q",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    (run_dir / "checkpoints" / "latest.json").write_text(json.dumps({"checkpoint": STAGE1}))
    return run_dir


def _state(run: Path) -> Path:
    return run / "checkpoints" / STAGE1 / "state.json"


def _model(run: Path) -> Path:
    return run / "checkpoints" / STAGE1 / "model.safetensors"


def _edit_state(**changes):
    def damage(run: Path) -> None:
        state = json.loads(_state(run).read_text())
        state.update(changes)
        _state(run).write_text(json.dumps(state))

    return damage


def _write(path_of, data: bytes):
    def damage(run: Path) -> None:
        path_of(run).write_bytes(data)

    return damage


def _truncate(path_of):
    def damage(run: Path) -> None:
        data = path_of(run).read_bytes()
        path_of(run).write_bytes(data[: len(data) // 2])

    return damage


def _edit_plan(edit):
    def damage(run: Path) -> None:
        plan = json.loads((run / "plan.json").read_text())
        edit(plan)
        (run / "plan.json").write_text(json.dumps(plan))

    return damage


def _set_model_width(plan):
    plan["model"]["d_model"] = "wide"


def _drop_model_key(plan):
    del plan["model"]["context"]


def _latest(name):
    def damage(run: Path) -> None:
        (run / "checkpoints" / "latest.json").write_text(json.dumps({"checkpoint": name}))

    return damage


def _replace_model_with_other_shapes(run: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(_model(run)))
    key = next(k for k in tensors if k.startswith("stack/0/") and tensors[k].dim() == 2)
    tensors[key] = tensors[key][:, :-1].contiguous()
    save_file(tensors, str(_model(run)))


def _drop_a_tensor(run: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(_model(run)))
    del tensors[next(k for k in tensors if k.startswith("shared/"))]
    save_file(tensors, str(_model(run)))


def _add_a_stranger(run: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(_model(run)))
    tensors["elsewhere/x"] = torch.zeros(2)
    save_file(tensors, str(_model(run)))


def _outside(run: Path) -> None:
    state = json.loads(_state(run).read_text())
    state["stacks_on_disk"] = {"0": "../../../../../../../etc/passwd"}
    _state(run).write_text(json.dumps(state))


def _model_is_a_directory(run: Path) -> None:
    _model(run).unlink()
    _model(run).mkdir()


CASES = {
    "model-truncated": (_truncate(_model), "model.safetensors"),
    "model-empty": (_write(_model, b""), "model.safetensors"),
    "model-garbage": (_write(_model, b"\x00garbage" * 100), "model.safetensors"),
    "model-missing": (lambda run: _model(run).unlink(), "model.safetensors"),
    "model-directory": (_model_is_a_directory, "model.safetensors"),
    "model-other-shapes": (_replace_model_with_other_shapes, "model.safetensors"),
    "model-missing-tensor": (_drop_a_tensor, "model.safetensors"),
    "model-stranger-tensor": (_add_a_stranger, "model.safetensors"),
    "state-invalid-json": (_write(_state, b"{not json"), "state.json"),
    "state-truncated": (_truncate(_state), "state.json"),
    "state-empty": (_write(_state, b""), "state.json"),
    "state-not-object": (_write(_state, b"[1, 2]"), "state.json"),
    "state-not-utf8": (_write(_state, b'{"stage": "\xff"}'), "state.json"),
    "state-stage-string": (_edit_state(stage="one"), "state.json"),
    "state-stage-beyond": (_edit_state(stage=99), "state.json"),
    "state-step-negative": (_edit_state(step=-1), "state.json"),
    "state-done-string": (_edit_state(stage_done="yes"), "state.json"),
    "state-global-null": (_edit_state(global_step=None), "state.json"),
    "state-missing-key": (lambda run: _edit_state()(run) or _drop_state_key(run), "state.json"),
    "state-rng-not-base64": (_edit_state(rng="!!! not base64 !!!"), "state.json"),
    "state-rng-short": (_edit_state(rng="AAAA"), "state.json"),
    "state-stream-string": (_edit_state(stream="bad"), "state.json"),
    "state-stream-wrong": (_edit_state(stream={"epoch": "x", "offset": -5}), "state.json"),
    "state-metrics-lines": (_edit_state(metrics_lines="many"), "state.json"),
    "state-summaries": (_edit_state(summaries=[1, 2]), "state.json"),
    "state-optimizer": (_edit_state(optimizer="adam"), "state.json"),
    "state-on-disk-outside": (_outside, "state.json"),
    "state-on-disk-type": (_edit_state(stacks_on_disk=[1]), "state.json"),
    "latest-garbage": (
        lambda run: (run / "checkpoints" / "latest.json").write_text("}{"),
        "latest.json",
    ),
    "latest-outside": (_latest("../../../../../../etc"), "latest.json"),
    "latest-missing-checkpoint": (_latest("stage009-step0000001"), "latest.json"),
    "plan-string-number": (_edit_plan(_set_model_width), "plan.json"),
    "plan-missing-key": (_edit_plan(_drop_model_key), "plan.json"),
    "plan-garbage": (lambda run: (run / "plan.json").write_text("{"), "plan.json"),
}


def _drop_state_key(run: Path) -> None:
    state = json.loads(_state(run).read_text())
    del state["global_step"]
    _state(run).write_text(json.dumps(state))


def _snapshot(run: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(run)): (p.read_bytes() if p.is_file() else b"<dir>")
        for p in sorted(run.rglob("*"))
    }


@pytest.fixture(scope="module")
def script(tmp_path_factory) -> Path:
    """tiny.sw's compiled script, for the plan `finished_stage` ran."""
    out = tmp_path_factory.mktemp("script") / "train.py"
    result = runner.invoke(app, ["compile", str(ROOT / "specs" / "tiny.sw"), "-s",
                                 "run.checkpoint_every=2", "-o", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


def _script_resume(script: Path, run: Path):
    """(exit code, what it printed) of the compiled script resuming `run`."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(script), "--resume", str(run)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    return done.returncode, done.stdout + done.stderr


def _resumed(command: str, run: Path, request) -> tuple[int, str]:
    """(exit code, output) of `sw run --resume` ("resume") or the script's ("script")."""
    if command == "script":
        return _script_resume(request.getfixturevalue("script"), run)
    result = runner.invoke(app, ["run", "--resume", str(run), "-q"])
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {result.exception}"
    )
    return result.exit_code, result.output


@pytest.mark.parametrize("command", ["resume", "export", "script"])
@pytest.mark.parametrize("case", list(CASES))
def test_a_damaged_run_is_named_not_a_traceback(case, command, finished_stage, tmp_path, request):
    """`sw run --resume`, `sw export` and a compiled script's `--resume` alike (the script
    reads checkpoints with the package's own code)."""
    run = tmp_path / "run"
    shutil.copytree(finished_stage, run)
    damage, culprit = CASES[case]
    damage(run)
    before = _snapshot(run)
    if command == "script":
        code, output = _script_resume(request.getfixturevalue("script"), run)
        assert code == 1 and culprit in output and "Traceback" not in output, output
        assert _snapshot(run) == before
        return
    if command == "resume":
        result = runner.invoke(app, ["run", "--resume", str(run), "-q"])
    else:
        result = runner.invoke(app, ["export", str(run), "-o", str(tmp_path / "out.safetensors")])
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {result.exception}"
    )
    assert result.exit_code == 1, result.output
    assert culprit in result.output, result.output
    assert "Traceback" not in result.output
    assert _snapshot(run) == before  # nothing changed, nothing lost
    assert not (tmp_path / "out.safetensors").exists()


def test_run_dir_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    result = runner.invoke(app, ["run", str(ROOT / "specs" / "tiny.sw"), "--run-dir", str(target)])
    assert result.exit_code == 1
    assert result.output == f"error: {target} is a file, not a directory: pick another --run-dir\n"
    assert target.read_text() == "keep me"


def test_run_dir_under_a_file_is_refused(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    result = runner.invoke(
        app, ["run", str(ROOT / "specs" / "tiny.sw"), "--run-dir", str(target / "run")]
    )
    assert result.exit_code == 1
    assert result.output.startswith(f"error: cannot create the run directory {target / 'run'}")


@pytest.mark.parametrize("what", ["missing", "file"])
def test_resuming_what_is_not_a_run_directory(tmp_path, what):
    target = tmp_path / "run"
    if what == "file":
        target.write_text("x")
    result = runner.invoke(app, ["run", "--resume", str(target)])
    assert result.exit_code == 1
    why = "is a file, not a run directory" if what == "file" else (
        "is not a run directory (there is no such directory)")  # fmt: skip
    assert result.output == f"error: {target} {why}\n"


def test_export_to_a_directory_is_refused_and_leaves_nothing(finished_stage, tmp_path):
    out = tmp_path / "exported"
    out.mkdir()
    result = runner.invoke(app, ["export", str(finished_stage), "-o", str(out)])
    assert result.exit_code == 1
    assert result.output == (
        f"error: {out} is a directory: give the file to write, e.g. {out / 'model.safetensors'}\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported"]
    assert list(out.iterdir()) == []


def test_export_under_a_file_is_refused_and_leaves_nothing(finished_stage, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = runner.invoke(
        app, ["export", str(finished_stage), "-o", str(blocker / "m.safetensors")]
    )
    assert result.exit_code == 1
    assert (
        result.output == f"error: {blocker / 'm.safetensors'} cannot be written (Not a directory)\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def _latest_to_zero(run: Path) -> None:
    pointer = run / "checkpoints" / "latest.json"
    pointer.unlink()
    pointer.symlink_to("/dev/zero")


def _optimizer_null_mid_stage(run: Path) -> None:
    (run / "checkpoints" / "latest.json").write_text(json.dumps({"checkpoint": MID}))
    state_file = run / "checkpoints" / MID / "state.json"
    state = json.loads(state_file.read_text())
    state["optimizer"] = None
    state_file.write_text(json.dumps(state))


def _metrics_directory(run: Path) -> None:
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").mkdir()


MID = "stage002-step0000002"
MORE = {
    "latest-symlink-to-dev-zero": (_latest_to_zero, "latest.json"),
    "state-mid-stage-without-optimizer": (_optimizer_null_mid_stage, "state.json"),
    "metrics-a-directory": (_metrics_directory, "metrics.jsonl"),
}


@pytest.mark.parametrize("case", list(MORE))
def test_more_damage_is_named_and_nothing_hangs(case, finished_stage, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_stage, run)
    damage, culprit = MORE[case]
    damage(run)
    before = _snapshot(run)
    result = runner.invoke(app, ["run", "--resume", str(run), "-q"])
    assert result.exit_code == 1, result.output
    assert culprit in result.output and "Traceback" not in result.output
    assert _snapshot(run) == before


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[: len(text) // 2],  # cut mid-line by a kill
        lambda text: "not json\n" + text,
        lambda text: "[1, 2, 3]\n" + text,
        lambda text: '{"no": "kind"}\n' + text,
    ],
    ids=["cut", "not-json", "a-list", "no-kind"],
)
def test_a_damaged_metrics_file_does_not_stop_a_resume(damage, finished_stage, tmp_path):
    """Lines that are not records are dropped; the run goes on and finishes its summary."""
    run = tmp_path / "run"
    shutil.copytree(finished_stage, run)
    metrics = run / "metrics.jsonl"
    metrics.write_text(damage(metrics.read_text()))
    result = runner.invoke(app, ["run", "--resume", str(run), "-q"])
    assert result.exit_code == 0, result.output
    assert len(json.loads((run / "summary.json").read_text())) == 2
    for line in metrics.read_text().splitlines():
        assert isinstance(json.loads(line), dict)  # nothing appended onto a cut line


def test_export_needs_no_optimizer_state(finished_stage, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_stage, run)
    (run / "checkpoints" / "latest.json").write_text(json.dumps({"checkpoint": MID}))
    (run / "checkpoints" / MID / "optimizer.safetensors").unlink()
    result = runner.invoke(app, ["export", str(run), "-o", str(tmp_path / "m.safetensors")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m.safetensors").stat().st_size > 0
    mask = os.umask(0o027)
    try:  # the file is for sharing: its mode follows the umask (safetensors alone gives 0600)
        runner.invoke(app, ["export", str(run), "-o", str(tmp_path / "g.safetensors")])
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "g.safetensors").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "m.safetensors").stat().st_mode) == 0o666 & ~mask


def test_export_never_replaces_a_fifo_or_a_file_of_the_run(finished_stage, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    result = runner.invoke(app, ["export", str(finished_stage), "-o", str(fifo)])
    assert result.exit_code == 1
    assert result.output == f"error: {fifo} is a FIFO, not a file: name a file to write\n"
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    pointer = finished_stage / "checkpoints" / "latest.json"
    before = pointer.read_bytes()
    result = runner.invoke(app, ["export", str(finished_stage), "-o", str(pointer)])
    assert result.exit_code == 1
    assert "is a file of the run being exported" in result.output
    assert pointer.read_bytes() == before


def test_export_through_a_symlink_writes_the_file_it_names(finished_stage, tmp_path):
    target = tmp_path / "real.safetensors"
    target.write_text("old")
    link = tmp_path / "link.safetensors"
    link.symlink_to(target)
    result = runner.invoke(app, ["export", str(finished_stage), "-o", str(link)])
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and target.stat().st_size > 100


@pytest.mark.parametrize("flag", [["-s", "optimizer.lr=1"], ["--max-steps", "2"]])
def test_a_resumed_run_takes_no_changes(flag, finished_stage):
    result = runner.invoke(app, ["run", "--resume", str(finished_stage), *flag])
    assert result.exit_code == 2
    assert "cannot change a run being resumed" in result.output


def test_an_empty_run_dir_is_a_usage_error(tmp_path):
    result = runner.invoke(app, ["run", str(ROOT / "specs" / "tiny.sw"), "--run-dir", ""])
    assert (result.exit_code, result.output) == (2, "error: --run-dir is empty: name a directory\n")


def test_a_run_that_cannot_start_leaves_nothing_behind(tmp_path):
    """Its data cannot be read: the same command runs once the data is fixed."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("")
    command = ["run", str(ROOT / "specs" / "tiny.sw"), "--max-steps", "2", "-q",
               "--run-dir", str(tmp_path / "run"), "-s", f'data.source=text("{corpus}")']  # fmt: skip
    failed = runner.invoke(app, command)
    assert failed.exit_code == 1 and "Traceback" not in failed.output
    assert not (tmp_path / "run").exists()
    corpus.write_text("the quick brown fox jumps over the lazy dog\n" * 200)
    assert runner.invoke(app, command).exit_code == 0


def test_running_out_of_memory_is_a_clear_error(tmp_path, monkeypatch):
    from stackwise_dsl.core import stage_model

    def no_memory(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't "
                           "allocate memory: you tried to allocate 1024000000000000 bytes")  # fmt: skip

    monkeypatch.setattr(stage_model.StageModel, "__init__", no_memory)
    result = runner.invoke(
        app, ["run", str(ROOT / "specs" / "tiny.sw"), "--run-dir", str(tmp_path / "r"), "-q"]
    )
    assert result.exit_code == 1
    assert result.output.startswith("error: out of memory ([enforce fail at alloc_cpu.cpp:117] ")
    assert result.output.endswith("no checkpoint was written yet\n")


def test_a_run_started_with_an_older_plan_format_says_so(finished_stage, tmp_path):
    """A run directory from before the plan was typed (its plan.json says `"position":
    "rope"`, its run.json names no plan format): not "damaged", but which format it has."""
    run = tmp_path / "old"
    shutil.copytree(finished_stage, run)
    plan = json.loads((run / "plan.json").read_text())
    plan["model"]["position"] = "rope"
    (run / "plan.json").write_text(json.dumps(plan))
    info = json.loads((run / "run.json").read_text())
    assert info.pop("plan_format") == 5
    (run / "run.json").write_text(json.dumps(info))
    result = runner.invoke(app, ["run", "--resume", str(run), "-q"])
    assert result.exit_code == 1, result.output
    assert "plans have format 1; this one reads format 5" in result.output
    assert "damaged" not in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(("old", "section", "missing"), [
    (2, "data", "split"), (3, "data", "specials"), (4, "run", "distributed"),
])  # fmt: skip
def test_a_run_of_an_earlier_plan_format_says_so(finished_stage, tmp_path, old, section,
                                                 missing):  # fmt: skip
    """Format 3 added data.split; 4 data.specials (and validation_data, windows); 5
    run.distributed (and stage.recompute)."""
    run = tmp_path / "old"
    shutil.copytree(finished_stage, run)
    plan = json.loads((run / "plan.json").read_text())
    del plan[section][missing]
    (run / "plan.json").write_text(json.dumps(plan))
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "plan_format": old}))
    result = runner.invoke(app, ["run", "--resume", str(run), "-q"])
    assert result.exit_code == 1
    assert f"plans have format {old}; this one reads format 5" in result.output


def test_a_resumed_run_takes_no_other_directory(finished_stage, tmp_path):
    result = runner.invoke(app, ["run", "--resume", str(finished_stage), "--run-dir",
                                 str(tmp_path / "elsewhere")])  # fmt: skip
    assert result.exit_code == 2 and "a resumed run goes on in its own" in result.output
    assert not (tmp_path / "elsewhere").exists()


def _drop_a_moment(run: Path) -> None:
    from safetensors.torch import load_file, save_file

    middle = run / "checkpoints" / "stage002-step0000002"
    tensors = load_file(str(middle / "optimizer.safetensors"))
    del tensors[next(k for k in tensors if k.endswith("/exp_avg"))]
    save_file(tensors, str(middle / "optimizer.safetensors"))
    _latest("stage002-step0000002")(run)


def _latest_missing(run: Path) -> None:
    (run / "checkpoints" / "latest.json").unlink()


LATE = {
    "optimizer-moment-missing": (_drop_a_moment, "optimizer state does not fit"),
    "metrics-directory": (_metrics_directory, "metrics.jsonl is not a regular file"),
}


@pytest.mark.parametrize("command", ["resume", "script"])
@pytest.mark.parametrize("case", list(LATE))
def test_what_would_fail_later_is_refused_before_anything_changes(case, command,
                                                                  finished_stage, tmp_path,
                                                                  request):  # fmt: skip
    """An optimizer file missing a moment (which would fail inside the optimizer's step), a
    metrics.jsonl that is a directory."""
    run = tmp_path / "run"
    shutil.copytree(finished_stage, run)
    damage, said = LATE[case]
    damage(run)
    before = _snapshot(run)
    code, output = _resumed(command, run, request)
    assert code == 1 and said in output and "Traceback" not in output, output
    assert _snapshot(run) == before


@pytest.mark.parametrize("command", ["resume", "script"])
def test_a_missing_metrics_file_is_no_reason_not_to_resume(command, finished_stage, tmp_path,
                                                            request):  # fmt: skip
    run = tmp_path / "run"
    shutil.copytree(finished_stage, run)
    (run / "metrics.jsonl").unlink()
    code, output = _resumed(command, run, request)
    assert code == 0, output
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["stage"]) for r in records] == [("train", 2), ("eval", 2)]


@pytest.mark.parametrize("command", ["resume", "script"])
def test_without_latest_json_a_run_resumes_from_its_newest_checkpoint(command, finished_stage,
                                                                        tmp_path, request):  # fmt: skip
    """A kill between a checkpoint and its pointer, or a deleted latest.json: the run goes
    on from the newest complete checkpoint (never starts over them), to the same losses."""
    run = tmp_path / "run"
    shutil.copytree(finished_stage, run)
    for later in (run / "checkpoints").glob("stage002-*"):
        shutil.rmtree(later)
    _latest_missing(run)
    code, output = _resumed(command, run, request)
    assert code == 0, output

    def losses(where):
        return [(r["kind"], r["stage"], r["step"], r.get("loss"), r.get("val_loss"))
                for r in map(json.loads, (where / "metrics.jsonl").read_text().splitlines())]  # fmt: skip

    assert losses(run) == losses(finished_stage) and len(losses(run)) >= 4
