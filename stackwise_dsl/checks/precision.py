"""Precision: quantized formats hold frozen weights only; fp16 needs a GPU."""

from __future__ import annotations

from collections.abc import Iterator

from stackwise_dsl import diagnostics as diag
from stackwise_dsl.ir import nodes as n
from stackwise_dsl.ir.enums import Device, Distributed, Precision, Strategy
from stackwise_dsl.ir.facts import Facts


def check_quantized_trainable(facts: Facts) -> Iterator[diag.Diagnostic]:
    """Weights that train are never quantized; adapters train on top of quantized ones."""
    for view in facts.stages:
        s = view.settings
        if view.new and s.new.precision.quantized:
            yield diag.error(
                "SW401",
                f"the new stack trains in {view.name}, so it cannot be held in {s.new.precision}",
                n.at(s.new, "precision"),
                hint="train it in bf16 or fp32; quantize the trunk instead "
                f"(`trunk {{ precision = {s.new.precision} }}`)",
            )
        if view.existing and s.trunk.strategy is Strategy.FULL and s.trunk.precision.quantized:
            yield diag.error(
                "SW401",
                f"the trunk trains fully (`full`) in {view.name}, so it cannot be held in "
                f"{s.trunk.precision}",
                n.at(s.trunk, "precision"),
                hint="use `trunk { adapters }` to train LoRA on the quantized trunk (QLoRA), "
                "or hold it in bf16 or fp32",
            )


def check_fp16_device(facts: Facts) -> Iterator[diag.Diagnostic]:
    """fp16 training needs CUDA (fp16 kernels and a loss scaler)."""
    device = facts.spec.run.device
    if device is Device.CUDA or (device is Device.AUTO and facts.host.cuda):
        return
    why = "the run's device is cpu" if device is Device.CPU else "this machine has no CUDA GPU"
    for view in facts.stages:
        s = view.settings
        parts = [("new stack uses", s.new)] if view.new else []
        parts += [("trunk stacks use", s.trunk)] if view.existing else []
        for what, part in parts:
            if part.precision is Precision.FP16:
                yield diag.warning(
                    "SW402",
                    f"the {what} fp16, and {why}",
                    n.at(part, "precision"),
                    hint="fp16 runs on CUDA only; use bf16 on the CPU",
                )


def check_bf16_cpu(facts: Facts) -> Iterator[diag.Diagnostic]:
    """bf16 that trains on a CPU without native bf16 is emulated, far slower than fp32."""
    device = facts.spec.run.device
    on_cpu = device is Device.CPU or (device is Device.AUTO and not facts.host.cuda)
    if not on_cpu or facts.host.cpu_bf16 is not False:
        return
    for view in facts.stages:
        s = view.settings
        parts = [("new stack", s.new)] if view.new else []
        if view.existing and s.trunk.strategy is Strategy.FULL:  # a frozen bf16 trunk is
            parts.append(("trunk", s.trunk))  # stored in bf16 and computed in fp32 there
        for what, part in parts:
            if part.precision is Precision.BF16:
                yield diag.warning(
                    "SW415",
                    f"the {what} uses bf16, but this CPU has no native bf16 (avx512_bf16 or "
                    "AMX): its matmuls are emulated, many times slower than fp32",
                    n.at(part, "precision"),
                    hint="use fp32 on this machine (bf16 pays off on GPUs and recent CPUs)",
                )


def check_fsdp_optimizer(facts: Facts) -> Iterator[diag.Diagnostic]:
    """Under FSDP each rank holds a shard of every weight; bitsandbytes' 8-bit AdamW would
    quantize its state in blocks of each shard, which a checkpoint cannot gather whole."""
    spec = facts.spec
    if spec.run.distributed is Distributed.FSDP and isinstance(spec.optimizer, n.AdamW8bit):
        yield diag.error(
            "SW417",
            "`adamw8bit` keeps its state in bitsandbytes' blocks, which FSDP cannot shard and "
            "gather whole (for checkpoints and resumes on other process counts)",
            n.at(spec.run, "distributed"),
            hint="use `optimizer = adamw(...)` with fsdp, or `distributed = ddp` (every rank "
            "holds the whole 8-bit state)",
            notes=(diag.Note(message="adamw8bit is chosen here", span=spec.optimizer.span),),
        )
