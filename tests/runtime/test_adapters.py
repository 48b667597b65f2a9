"""Adapters, trunk strategies, per-group learning rates, 8-bit AdamW, merging adapters into
the fp32 masters (fuse `merge = true`, `sw export`), and masters that stay on disk."""

from __future__ import annotations

import json

import pytest
import torch

from stackwise_dsl.core import adapters, loop, optim
from stackwise_dsl.core.stage_model import StageModel
from stackwise_dsl.runtime import checkpoint
from stackwise_dsl.runtime.merge import export, lora_of, merged
from stackwise_dsl.runtime.weights import OnDisk
from tests.runtime.helpers import small, trainer_for

CPU = torch.device("cpu")


def _copy(state) -> dict:
    return {k: v.clone() for k, v in state.items()}


def _equal(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _adapters_of(store, position):
    return {name: _copy(s) for (pos, name), s in store.adapters.items() if pos == position}


def _lora_b_nonzero(state) -> bool:
    return any(bool(v.any()) for k, v in state.items() if ".lora_B." in k)


@pytest.mark.parametrize("precision", ["fp32", "nf4", "nvfp4"])
def test_adapters_strategy_trains_only_the_trunks_adapters(tmp_path, precision):
    stage = (f"new {{ lora(rank = 2) }}, trunk {{ adapters, precision = {precision}, "
             "lora(rank = 4, targets = [q, v, o, gate, down]) }")  # fmt: skip
    trainer = trainer_for(small("mlm", grow="append 2 x s", stage=stage), tmp_path)
    first, second = trainer.plan.stages
    trainer.train_stage(first)
    base = _copy(trainer.store.stacks[0])
    assert trainer.store.adapters == {}  # a new stack trains whole; its LoRA waits
    trainer.train_stage(second)
    assert _equal(base, _copy(trainer.store.stacks[0]))  # trunk base weights: bit-identical
    trained = _adapters_of(trainer.store, 0)
    assert sorted(trained) == ["stack", "trunk"]  # both adapters, side by side
    assert all(_lora_b_nonzero(s) for s in trained.values())  # and both changed
    layers = {k.split(".lora_A.")[0] for k in trained["trunk"] if ".lora_A." in k}
    assert layers == {
        f"blocks.0.{x}" for x in ("attn.q", "attn.v", "attn.o", "ffn.gate", "ffn.down")
    }  # attention *and* ffn, exactly the targets
    assert {v.shape[0] for k, v in trained["trunk"].items() if ".lora_A." in k} == {4}
    assert {v.shape[0] for k, v in trained["stack"].items() if ".lora_A." in k} == {2}


def test_frozen_strategy_changes_nothing_in_the_trunk(tmp_path):
    stage = "new { lora(rank = 2) }, trunk { frozen, precision = nf4, lora(rank = 4) }"
    extra = "fuse { steps = 3, trunk { adapters } }\n"
    trainer = trainer_for(small("mlm", grow="append 3 x s", stage=stage, extra=extra), tmp_path)
    stages = trainer.plan.stages
    trainer.train_stage(stages[0])
    trainer.train_stage(stages[1])
    base, shared = _copy(trainer.store.stacks[0]), _copy(trainer.store.shared)
    trainer.train_stage(stages[2])
    assert _equal(base, _copy(trainer.store.stacks[0]))
    assert trainer.store.adapters == {}  # no adapter ever trained, so none is stored
    assert not _equal(shared, trainer.store.shared)  # (append trains the embeddings)
    trainer.train_stage(stages[3])  # the fuse stage trains every stack's adapters
    assert sorted(trainer.store.adapters) == [(p, n) for p in range(3) for n in ("stack", "trunk")]
    assert _equal(base, _copy(trainer.store.stacks[0]))


def test_rank_and_alpha_follow_the_pattern_per_stack(tmp_path):
    stage = "trunk { adapters, lora(rank = 8, alpha = 16, pattern = decreasing) }"
    trainer = trainer_for(small("mlm", grow="append 4 x s", stage=stage), tmp_path)
    *earlier, last = trainer.plan.stages
    for stage_ in earlier:
        trainer.train_stage(stage_)
    model = StageModel(trainer.plan, last, trainer.store, CPU)
    for position, rank in zip(range(3), (8, 4, 2), strict=True):
        lora = lora_of(trainer.plan, position, "trunk", last.number)
        assert (lora.rank, lora.alpha) == (rank, 2 * rank)
        layer = adapters.lora_layers(model.stack(position))["blocks.0.attn.q"]
        assert layer.lora_A["trunk"].weight.shape[0] == rank
        assert layer.scaling["trunk"] == pytest.approx(2.0)


def test_learning_rates_per_group_reach_the_optimizer(tmp_path):
    stage = "trunk { adapters, lora(rank = 2) }"
    extra_opt = "optimizer = adamw(lr = 1e-3, adapter_lr = 5e-3, embedding_lr = 2e-4, warmup = 0, schedule = constant)\n"  # fmt: skip
    text = small("mlm", grow="append 2 x s", stage=stage).replace(
        "optimizer = adamw(lr = 3e-3, warmup = 0)\n", extra_opt
    )
    trainer = trainer_for(text, tmp_path)
    trainer.train_stage(trainer.plan.stages[0])
    stage2 = trainer.plan.stages[1]
    model = StageModel(trainer.plan, stage2, trainer.store, CPU)
    opt = optim.build(
        trainer.plan.optimizer, loop.param_groups(model, stage2, trainer.plan.optimizer)
    )
    optim.set_lr(opt, trainer.plan.optimizer, 1, stage2.steps)
    lr_of = {id(x): g["lr"] for g in opt.param_groups for x in g["params"]}
    lora = adapters.adapter_parameters(model.stack(0))
    new = [x for x in model.stack(1).parameters()]
    embedding = model.rack.embed.weight
    assert lora and {lr_of[id(x)] for x in lora} == {5e-3}
    assert {lr_of[id(x)] for x in new} == {1e-3}
    assert lr_of[id(embedding)] == 2e-4
    lora_ids = {id(x) for x in lora}
    frozen = [x for x in model.stack(0).parameters() if id(x) not in lora_ids]
    assert frozen and all(id(x) not in lr_of for x in frozen)  # trunk base: no optimizer entry


def test_adamw8bit_trains_the_tiny_spec(tmp_path):
    from tests.conftest import ROOT

    text = (ROOT / "specs" / "tiny.sw").read_text().replace("adamw(", "adamw8bit(")
    probe = trainer_for(text, tmp_path / "probe")
    first = probe.plan.stages[0]
    model = StageModel(probe.plan, first, probe.store, CPU).train()
    opt = optim.build(probe.plan.optimizer, loop.param_groups(model, first, probe.plan.optimizer))
    assert type(opt).__name__ == "AdamW8bit"
    ids = probe.data.train[: probe.plan.data.batch]
    loop.stage_loss(model, loop.batch_for(probe.plan, first, probe.data, ids, draw=0)).backward()
    opt.step()
    state = [v for s in opt.state.values() for v in s.values()]
    assert any(isinstance(v, torch.Tensor) and v.dtype == torch.uint8 for v in state)  # 8-bit

    trainer = trainer_for(text, tmp_path / "run")
    summaries = trainer.run()
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    losses = [r["loss"] for r in map(json.loads, metrics) if r["kind"] == "train"]
    assert losses[0] > 4.0  # near ln 259 = 5.56 after the first window
    assert summaries[0].val_loss < 3.0 and summaries[1].val_loss < 3.0  # the task's level


def test_merged_weights_compute_what_the_adapters_computed(tmp_path):
    stage = "trunk { adapters, lora(rank = 4, alpha = 8) }"
    trainer = trainer_for(small("mlm", grow="append 2 x s", stage=stage), tmp_path)
    for stage_ in trainer.plan.stages:
        trainer.train_stage(stage_)
    plan, store = trainer.plan, trainer.store
    with_adapters = StageModel(plan, plan.stages[-1], store, CPU).eval()
    state = store.adapters[(0, "trunk")]
    master = merged(dict(store.stacks[0].items()), state, 8 / 4)
    a = state["blocks.0.attn.q.lora_A.trunk.weight"]
    b = state["blocks.0.attn.q.lora_B.trunk.weight"]
    expected = store.stacks[0]["blocks.0.attn.q.weight"] + 2.0 * (b @ a)
    assert torch.allclose(master["blocks.0.attn.q.weight"], expected, rtol=0, atol=1e-7)
    h = torch.randn(2, 16, 32, generator=torch.Generator().manual_seed(0))
    stack = with_adapters.stack(0)
    with torch.no_grad():
        reference = stack(h, with_adapters.rack.ropes(CPU))
        for layer in adapters.lora_layers(stack).values():
            layer.lora_B["trunk"].weight.zero_()  # the adapter off, its product folded in
        folded = {f"{n}.base_layer.weight": master[f"{n}.weight"]
                  for n in adapters.lora_layers(stack)}  # fmt: skip
        stack.load_state_dict(folded, strict=False)
        out = stack(h, with_adapters.rack.ropes(CPU))
    assert torch.allclose(out, reference, rtol=1e-5, atol=1e-5)


def test_fuse_merge_folds_adapters_into_fp32_masters_not_the_4bit_copy(tmp_path):
    stage = "trunk { adapters, precision = nf4, lora(rank = 4) }"
    extra = "fuse { steps = 2, merge = true, trunk { full, precision = fp32 } }\n"
    text = small("mlm", grow="append 2 x s", stage=stage, extra=extra)
    trainer = trainer_for(text, tmp_path)
    *growth, fuse = trainer.plan.stages
    assert fuse.merge_adapters
    for stage_ in growth:
        trainer.train_stage(stage_)
    master = _copy(trainer.store.stacks[0])
    adapter = _copy(trainer.store.adapters[(0, "trunk")])
    expected = merged(master, adapter, 4 / 4)
    from stackwise_dsl.runtime.merge import merge_store

    done = merge_store(trainer.store, trainer.plan, fuse.number - 1)
    assert (0, "trunk") in done and trainer.store.adapters == {}
    assert _equal(_copy(trainer.store.stacks[0]), expected)  # exact: from the fp32 master
    # A whole run merges the same way before its fuse stage, which here changes nothing more:
    # its learning rates are too small to move an fp32 weight.
    tiny = text.replace("fuse { steps = 2,", "fuse { steps = 2, lr = 1e-30, embedding_lr = 1e-30,")
    again = trainer_for(tiny, tmp_path / "again")
    again.run()
    assert _equal(_copy(again.store.stacks[0]), expected)


def test_export_merges_every_adapter_from_the_masters(tmp_path):
    from safetensors import safe_open

    stage = (
        "new { lora(rank = 2) }, trunk { adapters, precision = nvfp4, lora(rank = 4, alpha = 8) }"
    )
    trainer = trainer_for(small("mlm", grow="append 3 x s", stage=stage), tmp_path / "run")
    from stackwise_dsl.lower.serialize import to_json

    (tmp_path / "run" / "plan.json").write_text(json.dumps(to_json(trainer.plan)))
    trainer.run()
    store = trainer.store
    result = export(tmp_path / "run", tmp_path / "model.safetensors")
    assert result["merged"] == ["0/stack", "0/trunk", "1/stack", "1/trunk"]
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
        assert not any("lora_" in k for k in keys)
        got = f.get_tensor("stack/0/blocks.0.ffn.down.weight")
        meta = f.metadata()
    expected = merged(dict(store.stacks[0].items()), store.adapters[(0, "stack")], 2 / 2)
    expected = merged(expected, store.adapters[(0, "trunk")], 8 / 4)
    assert torch.equal(got, expected["blocks.0.ffn.down.weight"])
    assert json.loads(meta["export"])["parameters"] == result["parameters"]
    assert {k.split("/")[1] for k in keys if k.startswith("stack/")} == {"0", "1", "2"}


def test_frozen_masters_stay_on_disk_and_checkpoints_refer_to_them(tmp_path):
    trainer = trainer_for(small(grow="append 3 x s", stage="trunk { frozen, precision = nf4 }"),
                          tmp_path)  # fmt: skip
    for stage in trainer.plan.stages:
        trainer.train_stage(stage)
    on_disk = trainer.store.on_disk()
    root = tmp_path / "checkpoints"
    assert on_disk == {
        0: root / "stage001-step0000006" / "model.safetensors",
        1: root / "stage002-step0000006" / "model.safetensors",
    }
    assert isinstance(trainer.store.stacks[0], OnDisk)
    last = checkpoint.latest(tmp_path)
    state = json.loads((last / "state.json").read_text())
    assert state["stacks_on_disk"] == {
        "0": "stage001-step0000006/model.safetensors",
        "1": "stage002-step0000006/model.safetensors",
    }
    from safetensors import safe_open

    with safe_open(str(last / "model.safetensors"), framework="pt") as f:
        assert {k.split("/")[1] for k in f.keys() if k.startswith("stack/")} == {"2"}  # noqa: SIM118
    store, *_ = checkpoint.load(last, trainer.plan)
    assert _equal(_copy(store.stacks[0]), _copy(trainer.store.stacks[0]))
