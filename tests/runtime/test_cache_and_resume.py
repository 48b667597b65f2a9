"""Activation caching, checkpoints and resume: the same numbers, however the run gets there."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from stackwise_dsl import runtime
from stackwise_dsl.core import loop
from stackwise_dsl.core.batches import Stream
from stackwise_dsl.core.stage_model import StageModel
from stackwise_dsl.runtime import checkpoint
from stackwise_dsl.runtime.cache import ActivationCache
from tests.conftest import ROOT
from tests.runtime.helpers import plan_of, small, trainer_for

CACHED = small("clm", grow="append 2 x s", data="synthetic(task = copy, symbols = 8, samples = 40)",
               stage="cache = memory, trunk { frozen }, embeddings = frozen")  # fmt: skip


def _losses(run_dir) -> list[tuple]:
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [
        (r["kind"], r["stage"], r["step"], r.get("loss"), r.get("val_loss"), r.get("lr"))
        for r in records
    ]


def test_the_trunk_runs_once_per_window(tmp_path):
    trainer = trainer_for(CACHED.replace("steps = 6", "steps = 30"), tmp_path)
    stage1, stage2 = trainer.plan.stages
    trainer.train_stage(stage1)
    before = Stream(trainer.data.train, 0)
    before.restore(trainer.state.stream)
    seen = np.concatenate([before.take(4) for _ in range(stage2.steps)])
    model = StageModel(trainer.plan, stage2, trainer.store, torch.device("cpu")).train()
    cache = ActivationCache(None)
    loop.train_stage(trainer.plan, stage2, model, trainer.data, trainer.state, cache=cache)
    assert len(seen) == 120 and len(set(seen.tolist())) < len(seen)  # windows come back
    assert cache.computed == len(set(seen.tolist()))  # ...and the trunk ran once for each


@pytest.mark.parametrize("kind", ["memory", "disk"])
def test_cached_training_equals_uncached_training(tmp_path, kind):
    plain = CACHED.replace("cache = memory, ", "")
    cached = CACHED.replace("cache = memory", f"cache = {kind}")
    a, b = trainer_for(plain, tmp_path / "a"), trainer_for(cached, tmp_path / "b")
    a.run(), b.run()
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")
    for pos in a.store.stacks:
        for k, v in a.store.stacks[pos].items():
            assert torch.equal(v, b.store.stacks[pos][k]), (pos, k)
    if kind == "disk":
        assert list((tmp_path / "b" / "cache" / "stage002").glob("shard-*.safetensors"))


RESUMABLE = small(
    "mlm", grow="append 2 x s", stage="trunk { adapters, lora(rank = 2) }",
    extra="run { seed = 3, log every 1 steps, eval every 3 steps, checkpoint every 2 steps }\n",
).replace("run { seed = 0, log every 2 steps }\n", "").replace("context = 16", "context = 16, dropout = 0.1")  # fmt: skip


def _final_weights(run_dir) -> dict:
    return load_file(str(checkpoint.latest(run_dir) / "model.safetensors"))


@pytest.mark.parametrize("optimizer", ["adamw", "adamw8bit"])
def test_resume_mid_stage_is_bitwise_identical(tmp_path, monkeypatch, optimizer):
    plan = plan_of(RESUMABLE.replace("adamw(", f"{optimizer}("))  # 8-bit: nested state
    runtime.run(plan, tmp_path / "straight")
    stop_at = {"global": 9}  # stage 2, step 3: after the step-2 checkpoint, before the next

    class Interrupting(runtime.Progress):
        steps = 0

        def stepped(self, *args) -> None:  # after a step's log line, before its checkpoint
            self.steps += 1
            if self.steps == stop_at["global"]:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runtime.run(plan, tmp_path / "resumed", progress=Interrupting())
    assert (
        json.loads((checkpoint.latest(tmp_path / "resumed") / "state.json").read_text())["step"]
        == 2
    )
    runtime.resume(tmp_path / "resumed")
    assert _losses(tmp_path / "resumed") == _losses(tmp_path / "straight")
    a, b = _final_weights(tmp_path / "straight"), _final_weights(tmp_path / "resumed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(k.startswith("adapter/") for k in a)  # the trunk's adapters trained and were saved


def test_a_killed_run_resumes_to_the_same_result(tmp_path):
    spec = tmp_path / "spec.sw"
    # logs every 5 steps, checkpoints every 2: the kill falls between two log lines, whose
    # averages must still match (the losses since the last log travel in checkpoints)
    spec.write_text(
        RESUMABLE.replace("steps = 6", "steps = 150").replace(
            "log every 1 steps", "log every 5 steps"
        )
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    sw = [sys.executable, "-m", "stackwise_dsl", "run", str(spec), "--quiet"]
    subprocess.run(
        [*sw, "--run-dir", str(tmp_path / "straight")], check=True, env=env, cwd=ROOT, timeout=300
    )
    victim = subprocess.Popen([*sw, "--run-dir", str(tmp_path / "killed")], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline:
        latest = checkpoint.latest(tmp_path / "killed")
        if (
            latest is not None
            and json.loads((latest / "state.json").read_text())["global_step"] >= 40
        ):
            break
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = json.loads((checkpoint.latest(tmp_path / "killed") / "state.json").read_text())[
        "global_step"
    ]
    assert killed_at < 300  # it really stopped before the end
    subprocess.run([sys.executable, "-m", "stackwise_dsl", "run", "--resume", str(tmp_path / "killed"), "--quiet"],
                   check=True, env=env, cwd=ROOT, timeout=300)  # fmt: skip
    assert _losses(tmp_path / "killed") == _losses(tmp_path / "straight")
    a, b = _final_weights(tmp_path / "straight"), _final_weights(tmp_path / "killed")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_half_written_checkpoint_never_becomes_current(tmp_path):
    plan = plan_of(RESUMABLE)
    runtime.run(plan, tmp_path)
    good = checkpoint.latest(tmp_path)
    junk = tmp_path / "checkpoints" / ".tmp-crashed"
    junk.mkdir()
    (junk / "model.safetensors").write_bytes(b"\x00\x01 truncated")
    assert checkpoint.latest(tmp_path) == good
    _, opt, state, rng = checkpoint.load(good, plan)
    assert state["stage_done"] and opt is None and rng.dtype == torch.uint8


def test_a_diverging_run_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    text = RESUMABLE.replace("steps = 6,", "steps = 6, stage 2 { lr = 1e30 },")
    with pytest.raises(runtime.RunError) as e:
        runtime.run(plan_of(text), tmp_path)
    message = str(e.value)
    assert "in stage 2 at step " in message and "the last good checkpoint is" in message
    assert message.startswith(
        ("the loss became nan", "the loss became inf", "the weights became non-finite")
    )
    last = checkpoint.latest(tmp_path)
    for tensor in load_file(str(last / "model.safetensors")).values():
        assert torch.isfinite(tensor).all()
    state = json.loads((last / "state.json").read_text())
    assert (state["stage"], state["stage_done"]) in ((1, True), (2, False))


def test_no_pickle_anywhere_in_the_runtime():
    for path in (ROOT / "stackwise_dsl").rglob("*.py"):
        text = path.read_text()
        assert "import pickle" not in text and "torch.load(" not in text, path
