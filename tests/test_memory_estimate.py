"""`sw plan`'s peak-memory estimate from the plan alone (estimate/memory.py): pinned figures
for the shipped specs, how it follows recompute, precision and the process count, and what
`sw plan` prints. (tests/runtime/test_memory_measured.py holds it against measured peaks.)"""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import pytest
from typer.testing import CliRunner

from stackwise_dsl.cli import app
from stackwise_dsl.data import plan_spec
from stackwise_dsl.estimate.memory import stage_memory
from stackwise_dsl.frontend import check_file, check_text
from stackwise_dsl.ir.enums import Distributed

ROOT = Path(__file__).resolve().parent.parent
GIB = 2**30


def _plan(name: str, overrides=()):
    report = check_file(ROOT / "specs" / f"{name}.sw", list(overrides))
    assert report.ok
    return plan_spec(report.spec, name)


@pytest.fixture(scope="module")
def llama():
    return _plan("llama70b")


def test_tiny_pinned():
    plan = _plan("tiny")  # measured on the CPU: 1,783,876 and 2,222,420 bytes
    assert [stage_memory(plan, s).peak for s in plan.stages] == [1_783_808, 2_222_336]


def test_the_70b_plan_per_stage_on_one_gpu(llama):
    peaks = {n: stage_memory(llama, llama.stages[n - 1], cuda=True) for n in (1, 2, 80, 81)}
    assert {n: m.peak for n, m in peaks.items()} == {
        1: 14_833_566_464, 2: 13_882_615_705, 80: 48_312_651_366, 81: 51_732_557_823,
    }  # fmt: skip
    last = peaks[80]  # 79 nf4 layers and a new one training with fp32 weights under bf16
    assert last.weights == 40_391_248_742
    assert last.cache == 256 * 2**20  # a disk cache's unwritten shard, in host memory
    assert max(m.peak for m in peaks.values()) < 80 * 10**9  # fits an 80 GB GPU
    # the masters stay in host memory: not part of the device's peak
    assert last.peak == (last.weights + last.optimizer + last.activations + last.backward)


def test_recompute_is_what_lets_the_70b_fuse_stage_fit(llama):
    fuse = llama.stages[-1]
    assert fuse.recompute
    without = attrs.evolve(fuse, recompute=False)
    assert stage_memory(llama, without, cuda=True).peak == 208_662_933_503  # 194 GiB
    assert stage_memory(llama, fuse, cuda=True).peak < stage_memory(llama, without).peak / 4


def test_processes_share_activations_and_fsdp_shards_what_trains(llama):
    plan = attrs.evolve(llama, data=attrs.evolve(llama.data, batch=8))
    stage = plan.stages[79]
    one = stage_memory(plan, stage, cuda=True)
    ddp = stage_memory(plan, stage, 8, cuda=True)
    assert ddp.peak == 52_783_877_734
    assert ddp.weights == one.weights and ddp.optimizer == one.optimizer
    assert ddp.gradients == one.gradients == ddp.buckets  # DDP's buckets: a second copy
    # each process holds one sequence of the 8: as one process with a batch of 1 does
    assert ddp.activations == stage_memory(llama, llama.stages[79], cuda=True).activations
    fsdp_plan = attrs.evolve(plan, run=attrs.evolve(plan.run, distributed=Distributed.FSDP))
    fsdp = stage_memory(fsdp_plan, stage, 8, cuda=True)
    assert fsdp.gradients == pytest.approx(one.gradients / 8, rel=1e-6)
    assert fsdp.optimizer == pytest.approx(one.optimizer / 8, rel=1e-6)
    # the nf4 trunk stays whole (FSDP cannot shard bitsandbytes' packed buffers); the new
    # layer (fp32) and the shared parts are sharded; the root's stay gathered from forward to
    # backward, and the one sharded layer is gathered while it computes
    layer, shared = 4 * 855_654_400, 4 * 524_296_192  # weights of a layer; of the shared parts
    assert fsdp.weights - one.weights == pytest.approx(layer / 8 + shared / 8, rel=1e-9)


def test_dropout_keeps_a_noise_tensor_on_the_cpu_and_a_byte_mask_on_cuda():
    text = (ROOT / "specs" / "tiny.sw").read_text()
    report = check_text(text, "tiny.sw", ["model.dropout=0.1"])
    plan = plan_spec(report.spec, "tiny")
    stage = plan.stages[0]
    cpu, cuda = stage_memory(plan, stage), stage_memory(plan, stage, cuda=True)
    tokens = plan.data.batch * plan.data.seq_len
    masks = 3  # the embeddings' and each block's two
    assert cpu.activations - cuda.activations == masks * 3 * tokens * plan.model.d_model


def test_a_cache_holds_no_more_windows_than_the_data_has():
    plan = _plan("gpt")
    stage = plan.stages[1]
    drawn = stage.steps * plan.data.batch
    one = plan.data.seq_len * plan.model.d_model * 4
    assert stage_memory(plan, stage).cache == drawn * one
    assert stage_memory(plan, stage, windows=100).cache == 100 * one


def _run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_sw_plan_prints_each_stages_peak_and_the_largest_part_by_part():
    result = _run("plan", ROOT / "specs" / "tiny.sw")
    assert result.exit_code == 0, result.output
    assert "Peak memory" in result.output
    assert "1.7 MiB" in result.output and "2.1 MiB" in result.output
    line = " ".join(result.output.split())
    assert "peak training memory of the run: 2.1 MiB in stage 2 on the CPU: weights 113 KiB" in line
    assert "besides: gradients 72 KiB (all of them at the optimizer step" in line


@pytest.mark.parametrize("name", ["tiny", "gpt", "diffusion", "llama70b"])
def test_the_peak_is_the_sum_of_the_parts_it_names(name):
    plan = _plan(name)
    for stage in plan.stages[:3] + plan.stages[-2:]:
        for cuda in (False, True):
            mem = stage_memory(plan, stage, cuda=cuda)
            assert mem.peak == sum(mem.parts()[k] for k in mem.at_peak)
            assert ("masters" in mem.at_peak) is not cuda


def test_sw_plan_json_and_nproc(tmp_path):
    result = _run("plan", ROOT / "specs" / "tiny.sw", "--format", "json")
    counts = json.loads(result.output)["counts"]
    assert counts[1]["memory"]["peak"] == 2_222_336
    assert set(counts[1]["memory"]) == {"weights", "masters", "gradients", "optimizer", "buckets",
                                        "activations", "cache", "backward", "peak"}  # fmt: skip
    two = _run("plan", ROOT / "specs" / "tiny.sw", "--format", "json", "--nproc", "2")
    assert json.loads(two.output)["processes"] == 2
    assert json.loads(two.output)["counts"][1]["memory"]["peak"] < 2_222_336
    refused = _run("plan", ROOT / "specs" / "llama70b.sw", "--nproc", "8")
    assert refused.exit_code == 1 and "SW607" in refused.output
