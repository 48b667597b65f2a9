"""`sw plan`: the plan as a table per stage (which stacks train, which are frozen, in which
precision, with which adapters) and parameter counts, or as JSON."""

from __future__ import annotations

from stackwise_dsl import estimate
from stackwise_dsl.estimate.flops import stage_flops
from stackwise_dsl.estimate.memory import StageMemory, stage_memory, step_traffic
from stackwise_dsl.ir.enums import Cache, Device, Distributed
from stackwise_dsl.lower import plan as p
from stackwise_dsl.lower.serialize import to_json

_WIDE = 10  # racks with more stacks than this are summarised per stage, not drawn


def plan_json(plan: p.Plan, nproc: int = 1) -> dict:
    """The plan and, per stage, its parameter counts, training FLOPs and peak memory per
    process (on `nproc` processes)."""
    counts = []
    for stage in plan.stages:
        c, f = estimate.stage_count(plan, stage), stage_flops(plan, stage)
        mem = memory(plan, stage, nproc)
        counts.append({
            "stage": stage.number, "total": c.total, "trainable": c.trainable,
            "adapters": c.adapters, "by_precision": c.by_precision, "weight_bytes": c.weight_bytes,
            "flops": f.total(stage.steps), "flops_per_step": f.step(),
            "flops_all_cache_hits": f.all_hits(stage.steps),
            "memory": {**mem.parts(), "peak": mem.peak},
            "traffic_per_step": step_traffic(plan, stage, nproc),
        })  # fmt: skip
    return {"plan": to_json(plan), "counts": counts, "final_params": estimate.final_params(plan),
            "sharding": sharding(plan), "processes": nproc}  # fmt: skip


def memory(plan: p.Plan, stage: p.Stage, nproc: int = 1) -> StageMemory:
    """A stage's peak memory per process, on CUDA when the spec asks for it, else as the
    CPU holds it (estimate/memory.py)."""
    return stage_memory(plan, stage, nproc, cuda=plan.run.device is Device.CUDA)


def headline(plan: p.Plan) -> str:
    m = plan.model
    steps = sum(s.steps for s in plan.stages)
    return (
        f"{plan.name}: {len(plan.stacks)} stacks, d_model {m.d_model}, vocab {m.vocab}, "
        f"context {m.context}; {len(plan.stages)} stage{'s' * (len(plan.stages) != 1)}, "
        f"{steps:,} steps of "
        f"{plan.tokens_per_step:,} tokens"
    )


def stage_table(plan: p.Plan, nproc: int = 1):
    """A rich Table: one row per stage, one column per stack (or a summary for wide racks),
    with each stage's peak memory per process."""
    from rich.table import Table

    table = Table(show_lines=False, header_style="bold")
    for name in ("Stage", "Kind", "Steps", "LR"):
        table.add_column(name, justify="right" if name in ("Steps", "LR") else "left")
    wide = len(plan.stacks) > _WIDE
    if wide:
        table.add_column("Rack (input → head)")
    else:
        for s in plan.stacks:
            end = (
                " (input)"
                if s.position == 0
                else " (head)"
                if s.position == len(plan.stacks) - 1
                else ""
            )
            table.add_column(f"{s.position}:{s.name}{end}", no_wrap=True)
    table.add_column("Trainable", justify="right")
    table.add_column("Total", justify="right")
    table.add_column("FLOPs", justify="right")
    table.add_column("Peak memory" + (" / process" if nproc > 1 else ""), justify="right")
    for stage in plan.stages:
        c, f = estimate.stage_count(plan, stage), stage_flops(plan, stage)
        cells = [_summary(stage)] if wide else _cells(plan, stage)
        kind = stage.kind.value + (" merge" if stage.merge_adapters else "") + (
            " recompute" if stage.recompute else "")  # fmt: skip
        table.add_row(
            str(stage.number), kind, f"{stage.steps:,}", f"{stage.lr:g}", *cells,
            f"{c.trainable:,}", f"{c.total:,}", si(f.total(stage.steps)),
            size(memory(plan, stage, nproc).peak),
        )  # fmt: skip
    return table


def _cells(plan: p.Plan, stage: p.Stage) -> list:
    from rich.text import Text

    parts = {part.position: part for part in stage.parts}
    out = []
    for s in plan.stacks:
        part = parts.get(s.position)
        out.append(Text("·", style="dim") if part is None else Text(*_cell(part)))
    return out


def _cell(part: p.Part) -> tuple[str, str]:
    ratio = f" r{part.mask_ratio:.2f}" if part.mask_ratio is not None else ""
    lora = f" +L{part.trunk_lora.rank}" if part.trunk_lora else ""
    if part.role is p.Role.NEW:
        return f"NEW {part.precision.value}{ratio}", "bold green"
    style = {p.Trains.FULL: "green", p.Trains.ADAPTERS: "yellow", p.Trains.NOTHING: "blue"}
    word = {p.Trains.FULL: "full", p.Trains.ADAPTERS: "adapt", p.Trains.NOTHING: "frozen"}
    return f"{part.precision.value} {word[part.trains]}{lora}{ratio}", style[part.trains]


def _summary(stage: p.Stage) -> str:
    groups: dict[str, int] = {}
    for part in stage.parts:
        text, _ = _cell(part)
        key = text.split(" r")[0]
        groups[key] = groups.get(key, 0) + 1
    return ", ".join(f"{k} x {v}" if v > 1 else k for k, v in groups.items())


def memory_lines(plan: p.Plan, nproc: int = 1) -> str:
    """The largest stage's peak, as the parts it is the sum of (estimate/memory.py)."""
    stage = max(plan.stages, key=lambda s: memory(plan, s, nproc).peak)
    mem = memory(plan, stage, nproc)
    cuda = plan.run.device is Device.CUDA
    parts = mem.parts()
    summed = " + ".join(f"{k} {size(parts[k])}" for k in mem.at_peak if parts[k])
    why = {"masters": "in host memory", "cache": "in host memory",
           "gradients": "all of them at the optimizer step; those made by then are in backward",
           "activations": "freed before the optimizer step", "backward": "likewise"}  # fmt: skip
    aside = [f"{k} {size(v)} ({why[k]})" for k, v in parts.items() if v and k not in mem.at_peak]
    aside_text = f"; besides: {', '.join(aside)}" if aside else ""
    where = "the CUDA device" if cuda else "the CPU"
    who = f"on each of {nproc} processes ({plan.run.distributed.value})" if nproc > 1 else ""
    cache = (" (the cache counts one window per sequence drawn: at most)"
             if "cache" in mem.at_peak and mem.cache else "")  # fmt: skip
    sent = step_traffic(plan, stage, nproc)
    traffic = f"; in stage {stage.number} each process sends {size(sent)} a step" if sent else ""
    return (
        f"peak training memory {who or 'of the run'}: {size(mem.peak)} in stage {stage.number} "
        f"on {where}: {summed}{cache}{aside_text}{traffic}"
    )


def size(n: float) -> str:
    """Bytes, in binary units: 812 KiB, 3.4 MiB, 71.2 GiB (from 1,000 of the unit below)."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if n >= 1000 * scale / 1024:
            return f"{n / scale:,.1f} {unit}"
    return f"{n / 2**10:,.0f} KiB"


def totals(plan: p.Plan) -> str:
    final = plan.stages[-1]
    c = estimate.stage_count(plan, final)
    precisions = ", ".join(f"{k} {v:,}" for k, v in sorted(c.by_precision.items()))
    flops = [(stage_flops(plan, s), s.steps) for s in plan.stages]
    total = sum(f.total(steps) for f, steps in flops)
    saved = total - sum(f.all_hits(steps) for f, steps in flops)
    cache = f" (an activation cache saves up to {si(saved)} of it)" if saved else ""
    return (
        f"final model: {estimate.final_params(plan):,} parameters; in the last stage "
        f"{c.total:,} weights ({precisions}; adapters {c.adapters:,}) hold {size(c.weight_bytes)}\n"
        f"training: {si(total)}FLOPs, forward and backward{cache}"
    )


def sharding(plan: p.Plan) -> str | None:
    """Under `distributed = fsdp`: what stays whole on every process (core/world.py); None
    for ddp (every process holds the whole model)."""
    if plan.run.distributed is not Distributed.FSDP:
        return None
    quantized: dict[str, tuple[set, set]] = {}  # precision -> (stacks, stages)
    cached: tuple[set, set] = (set(), set())
    for stage in plan.stages:
        for part in stage.parts:
            if part.precision.quantized:
                stacks, stages = quantized.setdefault(part.precision.value, (set(), set()))
                stacks.add(part.position)
                stages.add(stage.number)
            elif stage.cache is not Cache.OFF and part.trains is p.Trains.NOTHING:
                cached[0].add(part.position)
                cached[1].add(stage.number)
    whole = [f"the {name} weights of stacks {_span(stacks)} (stages {_span(stages)}; their "
             "adapters are sharded)" for name, (stacks, stages) in quantized.items()]  # fmt: skip
    if cached[0]:
        whole.append(f"the frozen, cached stacks {_span(cached[0])} (stages {_span(cached[1])})")
    return (
        "fsdp on several processes: weights, gradients and optimizer state sharded per stack; "
        f"whole on every process: {'; '.join(whole) if whole else 'nothing'}"
    )


def _span(numbers: set[int]) -> str:
    low, high = min(numbers), max(numbers)
    return (
        f"{low}"
        if low == high
        else f"{low}-{high}"
        if len(numbers) == high - low + 1
        else (", ".join(map(str, sorted(numbers))))
    )


def si(x: float) -> str:
    """FLOPs with an SI prefix: 3.05 G, 812 M, 1.20 P."""
    for prefix, size in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6),
                         ("k", 1e3)):  # fmt: skip
        if x >= size:
            return f"{x / size:.3g} {prefix}"
    return f"{x:.3g} "
