"""FLOPs accounting: the plan's count (estimate/flops.py, no torch) against torch's own
counter on every shipped spec, and the cumulative tokens and FLOPs a run logs."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import numpy as np
import pytest
import torch
from torch.utils import flop_counter as fc

from stackwise_dsl import runtime
from stackwise_dsl.core import loop
from stackwise_dsl.core.batches import Stream
from stackwise_dsl.core.objectives import IGNORE
from stackwise_dsl.core.stage_model import StageModel
from stackwise_dsl.data import plan_spec, prepare
from stackwise_dsl.estimate.flops import stage_flops
from stackwise_dsl.frontend import check_file
from stackwise_dsl.runtime import checkpoint
from stackwise_dsl.runtime.weights import Store
from tests.conftest import BRING_TEXT, ROOT
from tests.runtime.helpers import plan_of, small

_ATEN = torch.ops.aten


def _sdpa(q, k, v, *args, out_shape=None, **kwargs):
    return fc.sdpa_flop_count(q, k, v)


def _sdpa_backward(grad, q, k, v, *args, out_shape=None, **kwargs):
    return fc.sdpa_backward_flop_count(grad, q, k, v)


# torch counts scaled_dot_product_attention's CUDA kernels; on the CPU it runs the flash
# kernel for CPU, which it does not list: count it with torch's own formula for the others
CPU_SDPA = {_ATEN._scaled_dot_product_flash_attention_for_cpu: _sdpa,
            _ATEN._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_backward}  # fmt: skip

SPECS = ["tiny", "gpt", "diffusion", "baseline", "bert", "attention", "shakespeare", "progressive"]
VARIANTS = [
    "kernels_adapters",
    "mla_prepend_time",
    "mlm_trunk_full",
    "embedding_adapter",
    "embedding_tied",
]


def _measured(plan, tmp_path):
    """(stage, torch's count, ours) for one micro-batch of each stage, each stage's model
    built from the checkpoint a one-step run of the stages before it wrote."""
    stages = tuple(attrs.evolve(s, steps=1) for s in plan.stages)
    plan = attrs.evolve(plan, stages=stages, data=attrs.evolve(plan.data, batch=2),
                        run=attrs.evolve(plan.run, dir=str(tmp_path), eval_batches=1))  # fmt: skip
    runtime.run(plan, tmp_path)
    data = prepare(plan.data, plan.run.seed)
    ends = sorted(x for x in (tmp_path / "checkpoints").iterdir() if x.is_dir())
    out = []
    for stage in plan.stages:
        store = checkpoint.load(ends[stage.number - 2], plan)[0] if stage.number > 1 else Store()
        model = StageModel(plan, stage, store, torch.device("cpu")).train()
        batch = loop.batch_for(plan, stage, data, data.train[:2], draw=0)
        with fc.FlopCounterMode(display=False, custom_mapping=CPU_SDPA) as counter:
            loop.stage_loss(model, batch).backward()
        predicted = int((batch.targets != IGNORE).sum())
        trained = [x for g in loop.param_groups(model, stage, plan.optimizer) for x in g["params"]]
        idle = sum(x.grad is None for x in trained)
        out.append((stage.number, counter.get_total_flops(),
                    stage_flops(plan, stage).batch(2, predicted), idle))  # fmt: skip
    return out


@pytest.mark.parametrize("name", SPECS + VARIANTS)
def test_the_plans_flops_are_what_torch_counts(name, tmp_path):
    """And every weight that trains takes part in the loss: DDP (core/world.py) relies on it."""
    path = ROOT / "specs" / f"{name}.sw"
    if not path.exists():
        path = ROOT / "tests" / "fixtures" / "flops" / f"{name}.sw"
    text = tmp_path / "input.txt"
    text.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 300)
    report = check_file(path, [f"data.source.files={text}"] if name in BRING_TEXT else [])
    assert report.ok, [d.message for d in report.diagnostics if d.is_error]
    plan = plan_spec(report.spec, name)
    for stage, counted, ours, idle in _measured(plan, tmp_path / "run"):
        # the goal is 5%; the count is exact (every matrix product, counted as torch does)
        assert ours == pytest.approx(counted, rel=1e-12), (stage, counted, ours)
        assert idle == 0, (stage, idle)


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_run_logs_its_tokens_and_flops_so_far(tmp_path):
    plan = plan_of(small("clm", grow="append 2 x s"))
    runtime.run(plan, tmp_path)
    per_step = [stage_flops(plan, s).step() for s in plan.stages]
    assert per_step[0] < per_step[1]  # stage 2 also runs the frozen stack 0
    done = {1: 0, 2: plan.stages[0].steps}
    for r in _records(tmp_path):
        stage_steps = r["global_step"] - done[r["stage"]]
        spent = sum(per_step[: r["stage"] - 1]) * plan.stages[0].steps
        assert r["tokens"] == r["global_step"] * 4 * 16
        assert r["flops"] == spent + stage_steps * per_step[r["stage"] - 1]


def test_masked_objectives_count_the_positions_they_predict(tmp_path):
    plan = plan_of(small("mlm", grow="append 2 x s"))
    runtime.run(plan, tmp_path)
    data = prepare(plan.data, plan.run.seed)
    stream, flops, logged = Stream.of(data, plan.run.seed), 0.0, {}
    for stage in plan.stages:
        cost = stage_flops(plan, stage)
        for step in range(1, stage.steps + 1):
            ids = stream.take(4)
            batch = loop.batch_for(plan, stage, data, ids, draw=step - 1)
            flops += cost.batch(4, int((batch.targets != IGNORE).sum()))
            logged[(stage.number, step)] = flops
    records = [r for r in _records(tmp_path) if r["kind"] == "train"]
    assert records and all(r["flops"] == logged[(r["stage"], r["step"])] for r in records)
    # the expected count (plan) and the drawn one differ by the masks' luck only
    assert flops == pytest.approx(sum(stage_flops(plan, s).total(s.steps)
                                      for s in plan.stages), rel=0.05)  # fmt: skip


CACHED = small("clm", grow="append 2 x s", data="synthetic(task = copy, symbols = 8, samples = 40)",
               stage="cache = memory, trunk { frozen }, embeddings = frozen",
               extra="run { seed = 0, log every 1 steps, checkpoint every 4 steps }\n",
               ).replace("steps = 6", "steps = 12").replace("run { seed = 0, log every 2 steps }\n", "")  # fmt: skip


def test_a_cache_hit_saves_the_trunks_forward_and_a_resumed_run_counts_the_same(tmp_path):
    plan = plan_of(CACHED)
    runtime.run(plan, tmp_path / "straight")
    uncached = plan_of(CACHED.replace("cache = memory, ", ""))
    runtime.run(uncached, tmp_path / "plain")
    first, second = plan.stages
    cost = stage_flops(plan, second)
    assert cost.cached > 0 and stage_flops(plan, first).cached == 0
    data = prepare(plan.data, plan.run.seed)
    stream = Stream.of(data, plan.run.seed)
    stream.take(4 * first.steps)
    windows = [stream.take(4) for _ in range(second.steps)]
    computed = len(set(np.concatenate(windows).tolist()))  # the trunk runs once per window
    assert computed < 4 * second.steps  # windows come back: some steps hit the cache
    straight, plain = _records(tmp_path / "straight"), _records(tmp_path / "plain")
    saved = plain[-1]["flops"] - straight[-1]["flops"]
    assert saved == (4 * second.steps - computed) * cost.cached

    class Interrupting(runtime.Progress):
        steps = 0

        def stepped(self, *args) -> None:
            self.steps += 1
            if self.steps == first.steps + 6:  # stage 2 step 6: after its step-4 checkpoint
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runtime.run(plan, tmp_path / "resumed", progress=Interrupting())
    runtime.resume(tmp_path / "resumed")  # the cache starts empty again, the count does not
    resumed = _records(tmp_path / "resumed")
    assert [(r["kind"], r["step"], r.get("flops")) for r in resumed] == [
        (r["kind"], r["step"], r.get("flops")) for r in straight
    ]
