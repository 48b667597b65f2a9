"""Faults while a run writes: a full disk, a read-only directory, a run killed before its
first checkpoint or between two log lines. Each ends in a clear error or resumes to exactly
the numbers of an uninterrupted run; the last good checkpoint always stays current."""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import shutil
from pathlib import Path

import pytest

from stackwise_dsl import runtime
from stackwise_dsl.runtime import checkpoint
from tests.runtime.helpers import plan_of, small

# 12 steps a stage, logs at 5, 10 and 12, checkpoints at 3, 6 and 9: a mid-stage checkpoint
# always falls between two log lines.
SPEC = (
    small("mlm", grow="append 2 x s", stage="trunk { adapters, lora(rank = 2) }")
    .replace("steps = 6", "steps = 12")
    .replace("log every 2 steps", "log every 5 steps, eval every 4 steps, checkpoint every 3 steps")
)


def _records(run_dir: Path) -> list[dict]:
    """metrics.jsonl without the timing, which no two runs share."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k != "tokens_per_s"} for x in lines]


def _summaries(run_dir: Path) -> list[dict]:
    rows = json.loads((run_dir / "summary.json").read_text())
    return [{k: v for k, v in r.items() if k not in ("seconds", "tokens_per_s")} for r in rows]


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("faults") / "straight"
    runtime.run(plan_of(SPEC), run_dir)
    return run_dir


def test_resuming_between_two_log_lines_logs_what_an_uninterrupted_run_logs(straight, tmp_path):
    """The loss of a log line averages every step since the last one, those before the
    checkpoint included (they travel in it)."""
    resumed = tmp_path / "resumed"
    shutil.copytree(straight, resumed)
    mid = "stage002-step0000009"
    assert json.loads((resumed / "checkpoints" / mid / "state.json").read_text())["window"][
        "losses"
    ]  # steps 6 to 9, logged at 10
    (resumed / "checkpoints" / "latest.json").write_text(json.dumps({"checkpoint": mid}))
    runtime.resume(resumed)
    assert _records(resumed) == _records(straight)
    assert _summaries(resumed) == _summaries(straight)


def test_a_run_killed_before_its_first_checkpoint_resumes_from_the_start(straight, tmp_path):
    killed = tmp_path / "killed"
    runtime.create(plan_of(SPEC), killed)
    (killed / "metrics.jsonl").write_text(
        '{"kind": "train", "stage": 1, "step": 1, "loss": 9.0}\n{"kind": "tr'
    )  # what it logged before it died, the last line half written
    runtime.resume(killed)
    assert _records(killed) == _records(straight)


def _failing_save_file(monkeypatch, fail_at: int, error: OSError) -> None:
    """safetensors' save_file raises `error` on its `fail_at`-th call (1-based)."""
    import safetensors.torch

    real, calls = safetensors.torch.save_file, []

    def save_file(*args, **kwargs):
        calls.append(1)
        if len(calls) == fail_at:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)


def test_a_full_disk_while_checkpointing_keeps_the_last_good_checkpoint(
    straight, tmp_path, monkeypatch
):
    run_dir = tmp_path / "full"
    # checkpoint 1 (step 3) writes model + optimizer; checkpoint 2 (step 6) fails on its model
    _failing_save_file(monkeypatch, 3, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(runtime.RunError) as e:
        runtime.run(plan_of(SPEC), run_dir)
    root = run_dir / "checkpoints"
    assert str(e.value) == (
        f"cannot write checkpoint stage001-step0000006 in {root} (No space left on device); "
        "the last good checkpoint, stage001-step0000003, is still current"
    )
    assert sorted(p.name for p in root.iterdir()) == ["latest.json", "stage001-step0000003"]
    assert checkpoint.latest(run_dir) == root / "stage001-step0000003"
    monkeypatch.undo()  # space again: the run goes on from its last good checkpoint
    runtime.resume(run_dir)
    assert _records(run_dir) == _records(straight)


def test_a_full_disk_before_any_checkpoint_says_so(tmp_path, monkeypatch):
    _failing_save_file(monkeypatch, 1, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(runtime.RunError) as e:
        runtime.run(plan_of(SPEC), tmp_path / "run")
    assert str(e.value).endswith("(No space left on device); no checkpoint was written yet")
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == []


def _read_only(monkeypatch, directory: Path) -> None:
    """Every attempt to create, change or remove a file under `directory` fails as on a
    read-only file system (chmod would not stop root, who runs CI)."""
    inside = str(directory.resolve())

    def under(path) -> bool:
        return isinstance(path, str | os.PathLike) and os.path.abspath(path).startswith(inside)

    def refuse(path):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    real_open, real_os_open = builtins.open, os.open

    def guarded_open(file, mode="r", *args, **kwargs):
        if under(file) and any(c in mode for c in "wax+"):
            refuse(file)
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(path, flags, *args, **kwargs):
        if under(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse(path)
        return real_os_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(io, "open", guarded_open)
    monkeypatch.setattr(os, "open", guarded_os_open)
    for name in ("mkdir", "replace", "rename", "unlink", "rmdir"):
        real = getattr(os, name)

        def guarded(path, *args, _real=real, **kwargs):
            if under(path):
                refuse(path)
            return _real(path, *args, **kwargs)

        monkeypatch.setattr(os, name, guarded)


def _snapshot(run_dir: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def test_resuming_a_read_only_run_directory_is_a_clear_error(straight, tmp_path, monkeypatch):
    run_dir = tmp_path / "readonly"
    shutil.copytree(straight, run_dir)
    (run_dir / "checkpoints" / "latest.json").write_text(
        json.dumps({"checkpoint": "stage001-step0000012"})
    )
    before = _snapshot(run_dir)
    _read_only(monkeypatch, run_dir)
    with pytest.raises(runtime.RunError) as e:
        runtime.resume(run_dir)
    monkeypatch.undo()
    # metrics.jsonl is cut back only when the resumed run logs: the first write is the
    # stage's first checkpoint, and the run is as it was
    assert str(e.value) == (
        f"cannot write checkpoint stage002-step0000003 in {run_dir / 'checkpoints'} (Read-only "
        "file system); the last good checkpoint, stage001-step0000012, is still current"
    )
    assert _snapshot(run_dir) == before


def test_a_run_into_a_read_only_directory_is_a_clear_error(tmp_path, monkeypatch):
    run_dir = tmp_path / "readonly"
    run_dir.mkdir()
    _read_only(monkeypatch, run_dir)
    with pytest.raises(runtime.RunError) as e:
        runtime.run(plan_of(SPEC), run_dir)
    monkeypatch.undo()
    assert str(e.value) == f"cannot write the run directory {run_dir} (Read-only file system)"
    assert list(run_dir.iterdir()) == []
