"""Measured peak memory of each stage of a run, to check `sw plan`'s estimate against
(estimate/memory.py; bench/memory.py and the tests use it).

On the CPU: the most tensor memory held at once while the stage runs, from the torch
profiler's records of the CPU allocator (torch has no `max_memory_allocated` for the CPU),
counting every tensor allocated since the run began (the data set's tokens, read before, are
not tensors of the run; the allocator's running total is taken relative to its value then),
and the weights the store already held then (a pretrained model's).
On CUDA: `torch.cuda.max_memory_allocated` over the stage.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from stackwise_dsl.lower import plan as p


def stage_peaks(plan: p.Plan, run_dir: Path, world=None) -> list[int]:
    """Train `plan` from the start in `run_dir` and return each stage's peak, in bytes, on
    this process (of `world`'s, when several train it)."""
    import torch

    from stackwise_dsl import runtime
    from stackwise_dsl.core.world import World

    trainer = runtime.begin(plan, run_dir, world=world or World())
    if trainer.device.type == "cuda":
        peaks = []
        for stage in plan.stages:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            trainer.stage(stage.number)
            peaks.append(torch.cuda.max_memory_allocated())
        return peaks
    from torch.profiler import ProfilerActivity, profile, record_function

    already = sum(x.nbytes for x in trainer.store.flat().values())

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        for stage in plan.stages:
            with record_function(f"stage {stage.number}"):
                trainer.stage(stage.number)
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    spans = {e["name"]: (e["ts"], e["ts"] + e["dur"]) for e in events
             if str(e.get("name", "")).startswith("stage ") and "dur" in e}  # fmt: skip
    records = [e for e in events if e.get("name") == "[memory]"]
    if not records:
        return [0] * len(plan.stages)
    # the allocator's running total carries what earlier profiles saw freed outside them
    first = min(records, key=lambda e: e["ts"])["args"]
    before = first["Total Allocated"] - first["Bytes"]
    # and what the store held before the profile began (a pretrained model's weights): the
    # running total drops when the stage frees them
    held = [(e["ts"], e["args"]["Total Allocated"] - before + already) for e in records]
    peaks = []
    for stage in plan.stages:
        start, end = spans[f"stage {stage.number}"]
        peaks.append(max((n for t, n in held if start <= t <= end), default=0))
    return peaks
