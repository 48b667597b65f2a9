"""Plans for runtime tests, built from spec text."""

from __future__ import annotations

from stackwise_dsl.frontend import check_text
from stackwise_dsl.lower import to_plan


def plan_of(text: str, name: str = "t", vocab: int | None = None):
    report = check_text(text, f"{name}.sw")
    assert report.ok, [(d.code, d.message) for d in report.diagnostics if d.is_error]
    return to_plan(report.spec, name=name, vocab=vocab)


def spec_with(attention: str, *, objective: str = "mlm", d: int = 32, extra: str = "") -> str:
    return (
        f"model {{ d_model = {d}, context = 16, vocab = 300 }}\n"
        f"block b {{ attention = {attention}, ffn = swiglu(hidden = {2 * d}) }}\n"
        "stack s = 2 x b\n"
        f"objective = {objective}\n"
        "grow append 2 x s { steps = 4 }\n" + extra
    )


def small(objective: str = "clm", *, grow: str = "append 3 x s", stage: str = "", mode: str | None = None,
          data: str = "synthetic(task = reverse, symbols = 12, samples = 400)", extra: str = "",
          d: int = 32, block: str = "") -> str:  # fmt: skip
    """A spec of a few thousand parameters that trains in a second or two."""
    mode = mode or ("causal" if objective == "clm" else "bidirectional")
    block = block or f"attention = mha(heads = 2, mode = {mode}), ffn = swiglu(hidden = {2 * d})"
    return (
        f"model {{ d_model = {d}, context = 16 }}\n"
        f"block b {{ {block} }}\n"
        "stack s = 1 x b\n"
        f"objective = {objective}\n"
        f"grow {grow} {{ steps = 6, {stage} }}\n"
        f"data {{ source = {data}, batch = 4 }}\n"
        "optimizer = adamw(lr = 3e-3, warmup = 0)\n"
        "run { seed = 0, log every 2 steps }\n" + extra
    )


def trainer_for(text: str, run_dir, name: str = "t"):
    """A Trainer over a freshly lowered plan and its prepared data (CPU)."""
    import torch

    from stackwise_dsl.core.seeds import derive
    from stackwise_dsl.data import prepare
    from stackwise_dsl.runtime.train import Trainer

    plan = plan_of(text, name)
    torch.manual_seed(derive(plan.run.seed, "global"))
    run_dir.mkdir(parents=True, exist_ok=True)
    return Trainer(
        plan=plan,
        data=prepare(plan.data, plan.run.seed),
        run_dir=run_dir,
        device=torch.device("cpu"),
    )


def peak_allocated(fn) -> int:
    """The most bytes of tensor memory `fn()` held at once beyond what existed before it: the
    torch profiler's CPU allocation records (the CPU's `max_memory_allocated`)."""
    import json
    import tempfile
    from pathlib import Path

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    records = sorted((e for e in events if e.get("name") == "[memory]"), key=lambda e: e["ts"])
    if not records:
        return 0
    # the allocator's running total carries what earlier profiles saw freed outside them
    before = records[0]["args"]["Total Allocated"] - records[0]["args"]["Bytes"]
    return max(e["args"]["Total Allocated"] - before for e in records)
