"""The core's loop on its own: a researcher's script that builds a stage's model and calls
`core.loop.train_stage` trains what `sw run` trains, step for step."""

from __future__ import annotations

import json

import torch

from stackwise_dsl import runtime
from stackwise_dsl.core import loop
from stackwise_dsl.core.seeds import derive
from stackwise_dsl.core.stage_model import StageModel
from stackwise_dsl.data import prepare
from stackwise_dsl.runtime.weights import Store
from tests.runtime.helpers import plan_of, small

SPEC = small("clm", grow="append 2 x s").replace("log every 2 steps", "log every 1 steps")


def test_train_stage_alone_gives_the_losses_of_sw_run(tmp_path):
    plan = plan_of(SPEC)
    runtime.run(plan, tmp_path / "run")
    records = [
        json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().split("\n") if x
    ]
    logged = [r["loss"] for r in records if r["kind"] == "train" and r["stage"] == 1]

    torch.manual_seed(derive(plan.run.seed, "global"))  # as `sw run` starts
    data = prepare(plan.data, plan.run.seed)
    stage = plan.stages[0]
    model = StageModel(plan, stage, Store(), torch.device("cpu")).train()
    seen = []
    state, last = loop.train_stage(plan, stage, model, data, loop.RunState(),
                                   on_step=lambda now, loss, lr, snapshot: seen.append(loss))  # fmt: skip
    assert len(logged) == stage.steps == 6
    assert seen == logged and last == logged[-1]  # exactly, not approximately
    assert (state.stage, state.step, state.global_step) == (1, 6, 6)
    assert state.stream == {"epoch": 0, "offset": 6 * plan.data.batch}
    assert state.optimizer is None and state.rng is None  # a snapshot adds them on request


def test_a_snapshot_resumes_the_loop_where_it_stood(tmp_path):
    """Stop after step 3 with a snapshot (optimizer, scaler, RNG, data position), rebuild the
    model from its weights, and go on: steps 4 to 6 are the uninterrupted run's."""
    plan = plan_of(SPEC)
    stage = plan.stages[0]
    torch.manual_seed(derive(plan.run.seed, "global"))
    data = prepare(plan.data, plan.run.seed)
    store = Store()
    model = StageModel(plan, stage, store, torch.device("cpu")).train()
    straight, kept = [], {}

    def record(now, loss, lr, snapshot):
        straight.append(loss)
        if now.step == 3:
            model.capture(store)
            kept["state"] = snapshot()
            kept["weights"] = {
                k: {n: t.clone() for n, t in v.items()} for k, v in store.stacks.items()
            }
            kept["shared"] = {n: t.clone() for n, t in store.shared.items()}

    loop.train_stage(plan, stage, model, data, loop.RunState(), on_step=record)
    assert kept["state"].step == 3 and kept["state"].optimizer is not None

    again = Store()
    again.stacks.update(kept["weights"])
    again.shared.update(kept["shared"])
    rebuilt = StageModel(plan, stage, again, torch.device("cpu")).train()
    rest = []
    loop.train_stage(plan, stage, rebuilt, data, kept["state"],
                     on_step=lambda now, loss, lr, snapshot: rest.append(loss))  # fmt: skip
    assert rest == straight[3:]
