"""Merging LoRA adapters into full-precision weights, and exporting a run's model.

An adapter adds (alpha / rank) · B A to the weight it wraps (peft's LoRA without rsLoRA).
Merging adds that product to the stack's fp32 master from the weight store, never to the
quantized copy a stage computed with, so a 4-bit trunk merges without its rounding error.
Used by a fuse stage with `merge = true` (before it trains) and by `sw export`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from stackwise_dsl.lower import plan as p
from stackwise_dsl.runtime import checkpoint
from stackwise_dsl.runtime.weights import Store


class MergeError(Exception):
    """Adapters that cannot be folded into the weights, with the reason."""


def lora_of(plan: p.Plan, position: int, name: str, upto_stage: int) -> p.Lora:
    """The configuration an adapter was last attached with, up to stage `upto_stage`."""
    if name == "stack":
        lora = plan.stacks[position].stack_lora
    else:
        lora = None
        for stage in plan.stages[:upto_stage]:
            for part in stage.parts:
                if part.position == position and part.trunk_lora is not None:
                    lora = part.trunk_lora
    if lora is None:
        raise MergeError(f"the plan has no `{name}` LoRA for stack {position}")
    return lora


def merged(
    master: dict[str, torch.Tensor], adapter: dict[str, torch.Tensor], scale: float
) -> dict[str, torch.Tensor]:
    """A master with W + scale · B A for every layer the adapter wraps (new tensors)."""
    out = dict(master)
    for key_a in sorted(k for k in adapter if ".lora_A." in k):
        layer = key_a.split(".lora_A.")[0]
        key_b = key_a.replace(".lora_A.", ".lora_B.")
        base = f"{layer}.weight"
        if base not in out:
            raise MergeError(
                f"`{layer}` has no plain weight to merge into (spectral_norm keeps its weight "
                "as a parametrization, and a normalized weight plus an update is not linear)"
            )
        delta = adapter[key_b].double() @ adapter[key_a].double()
        out[base] = (out[base].double() + scale * delta).to(out[base].dtype)
    return out


def merge_store(store: Store, plan: p.Plan, upto_stage: int) -> list[tuple[int, str]]:
    """Fold every adapter that has trained into its stack's master and drop it from the
    store. Returns the (position, adapter name) pairs merged."""
    done = []
    for (position, name), adapter in sorted(store.adapters.items()):
        if not any(bool(v.any()) for k, v in adapter.items() if ".lora_B." in k):
            continue  # never trained: exactly zero
        lora = lora_of(plan, position, name, upto_stage)
        master = dict(store.stacks[position].items())
        store.stacks[position] = merged(master, adapter, lora.alpha / lora.rank)
        done.append((position, name))
    for key in list(store.adapters):
        del store.adapters[key]
    return done


RUN_FILES = ("plan.json", "run.json", "spec.sw", "metrics.jsonl", "summary.json", "loss.png")


def _export_target(run_dir: Path, out: Path) -> Path:
    """The file an export writes: `out`, through its symlinks; never a device or FIFO, and
    never one of the run's own files or anything under its checkpoints."""
    from stackwise_dsl.machine.outputs import OutputError, output_target

    if out.is_dir():
        return out  # said in export's own words
    try:
        target = Path(output_target(out))
    except OutputError as e:
        raise MergeError(str(e)) from None
    run = run_dir.resolve()
    if target.is_relative_to(run / "checkpoints") or target in {run / n for n in RUN_FILES}:
        raise MergeError(f"{out} is a file of the run being exported: name another file")
    return target


def export(run_dir: Path, out: Path) -> dict:
    """Write the latest checkpoint's model with its adapters merged, as one safetensors file
    of plain weights (`shared/...`, `stack/N/...`). Returns what was written."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    from stackwise_dsl.lower.serialize import to_json

    plan = checkpoint.load_plan(run_dir)
    last = checkpoint.latest(Path(run_dir))
    if last is None:
        raise MergeError(f"{run_dir} has no checkpoint to export")
    store, _, state, _ = checkpoint.load(last, plan, optimizer=False)
    adapters = merge_store(store, plan, state["stage"])
    tensors = store.flat(with_on_disk=True)
    out = _export_target(Path(run_dir), Path(out))
    if out.is_dir():
        raise MergeError(
            f"{out} is a directory: give the file to write, e.g. {out / 'model.safetensors'}"
        )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MergeError(
            f"cannot write {out}: its folder {out.parent} cannot be made ({e.strerror})"
        ) from None
    tmp = out.with_name(out.name + ".tmp")
    info = {
        "checkpoint": last.name,
        "stage": state["stage"],
        "stage_done": state["stage_done"],
        "merged": [f"{pos}/{name}" for pos, name in adapters],
        "parameters": sum(t.numel() for t in tensors.values()),
    }
    metadata = {"plan": json.dumps(to_json(plan)), "export": json.dumps(info)}
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        tmp.chmod(0o666 & ~_umask())  # safetensors writes 0600; an export is for sharing
        tmp.replace(out)
    except (OSError, SafetensorError) as e:
        tmp.unlink(missing_ok=True)
        raise MergeError(f"cannot write {out} ({e})") from None
    return {"file": str(out), **info}


def _umask() -> int:
    """The process's umask (read by setting it, then putting it back)."""
    import os

    mask = os.umask(0o022)
    os.umask(mask)
    return mask
