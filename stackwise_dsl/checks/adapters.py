"""LoRA adapters: ranks fit the layers they adapt, targets exist, tables cover the stacks,
and a merge has plain weights to fold them into."""

from __future__ import annotations

from collections.abc import Iterator

from stackwise_dsl import diagnostics as diag
from stackwise_dsl.ir import nodes as n
from stackwise_dsl.ir.enums import Strategy
from stackwise_dsl.ir.facts import Facts
from stackwise_dsl.ir.walk import layer_shapes, lora_rank


def adapted(facts: Facts) -> Iterator[tuple[n.Lora, int, str]]:
    """(lora, rack position, role) for every adapter the schedule attaches, each pair once.

    A stack LoRA goes on each stack a stage creates. A trunk LoRA goes over the trunk, which
    only grows, so each distinct trunk LoRA (stage overrides repeat equal ones) covers the
    longest trunk of the stages using it.
    """
    longest: dict[n.Lora, tuple[n.Lora, int]] = {}
    for view in facts.stages:
        s = view.settings
        if not view.fuse and s.new.lora is not None:
            for p in view.new:
                yield s.new.lora, p, "stack"
        lora = s.trunk.lora
        if lora is not None and view.existing > longest.get(lora, (lora, 0))[1]:
            longest[lora] = (longest.get(lora, (lora, 0))[0], view.existing)
    for lora, existing in longest.values():
        for p in facts.order[:existing]:
            yield lora, p, "trunk"


def check_lora_rank(facts: Facts) -> Iterator[diag.Diagnostic]:
    """Each adapter's rank is at most min(in, out) of every layer it wraps."""
    d = facts.spec.model.d_model
    shapes: dict[str, dict] = {}
    seen: set[tuple[int, str, int]] = set()
    for lora, position, role in adapted(facts):
        k = facts.created[position]
        rank = lora_rank(lora, k)
        for block in facts.blocks[position]:
            if (id(lora), block.name, rank) in seen:
                continue
            seen.add((id(lora), block.name, rank))
            if block.name not in shapes:
                shapes[block.name] = layer_shapes(block, d)
            limits = {
                t: min(shapes[block.name][t]) for t in lora.targets if t in shapes[block.name]
            }
            if not limits:
                continue
            target, limit = min(limits.items(), key=lambda kv: kv[1])
            if rank > limit:
                yield diag.error(
                    "SW405",
                    f"{role} LoRA rank {rank} on {_ordinal(k)} stack grown exceeds the {limit} "
                    f"features of `{target}` in block `{block.name}`",
                    n.at(lora, "rank"),
                    hint=f"use a rank of at most {limit}" + _pattern_note(lora),
                )
                break


def _pattern_note(lora: n.Lora) -> str:
    if isinstance(lora.rank, tuple) or lora.pattern.value == "constant":
        return ""
    return f"; the `{lora.pattern}` pattern grows the rank with each stack"


def check_lora_targets(facts: Facts) -> Iterator[diag.Diagnostic]:
    """Every target names a layer the adapted blocks have (gelu has no gate)."""
    d = facts.spec.model.d_model
    seen: set[tuple[int, str]] = set()
    for lora, position, role in adapted(facts):
        for block in facts.blocks[position]:
            if (id(lora), block.name) in seen:
                continue
            seen.add((id(lora), block.name))
            present = layer_shapes(block, d)
            for t in lora.targets:
                if t not in present:
                    yield diag.error(
                        "SW406",
                        f"{role} LoRA target `{t}` has no layer in block `{block.name}` "
                        f"({block.ffn.sw_name} ffn)",
                        n.at(lora, "targets"),
                        hint=f"remove `{t}` from `targets`; a gelu ffn has only up and down",
                    )


def check_lora_tables(facts: Facts) -> Iterator[diag.Diagnostic]:
    """An explicit rank or alpha table lists one value per stack."""
    count = len(facts.spec.grow.stacks)
    seen: set[int] = set()
    for lora, _, _ in adapted(facts):
        if id(lora) in seen:
            continue
        seen.add(id(lora))
        for field in ("rank", "alpha"):
            table = getattr(lora, field)
            if isinstance(table, tuple) and len(table) != count:
                yield diag.error(
                    "SW409",
                    f"the LoRA {field} table lists {len(table)} values for {count} stacks",
                    n.at(lora, field),
                    hint="list one value per stack, in the order the stacks are created",
                )


def check_merge_spectral_norm(facts: Facts) -> Iterator[diag.Diagnostic]:
    """`fuse { merge = true }` adds trained adapters to plain weights; spectral norm has none."""
    fuse = facts.spec.fuse
    if fuse is None or not fuse.merge:
        return
    normalised: dict[str, tuple[n.Block, int]] = {}
    for position in _trained_before_fuse(facts):
        for block in facts.blocks[position]:
            if block.spectral_norm:
                normalised.setdefault(block.name, (block, position))
    if not normalised:
        return
    block, position = next(iter(normalised.values()))
    yield diag.error(
        "SW416",
        f"`merge = true` folds the adapters trained on `{facts.spec.grow.stacks[position].name}` "
        f"into its weights, but its block `{block.name}` is spectrally normalised: a normalised "
        "weight has no plain matrix to add an update to",
        n.at(fuse, "merge"),
        hint="drop `merge = true` (the fuse stage then trains with the adapters as they are), "
        "or drop `spectral_norm`",
        notes=tuple(
            diag.Note(message=f"`{b.name}` is spectrally normalised here",
                      span=n.at(b, "spectral_norm"))
            for b, _ in normalised.values()
        ),
    )  # fmt: skip


def _trained_before_fuse(facts: Facts) -> list[int]:
    """Rack positions whose adapters train in a growth stage, so that a merge finds them
    trained: an adapter trains where its stack is trunk and the trunk is not frozen (the
    stack LoRA from its creation on, the trunk LoRA from the first stage that asks for it)."""
    stack_lora = {p: v.settings.new.lora for v in facts.stages if not v.fuse for p in v.new}
    trunk_lora: set[int] = set()
    found: dict[int, None] = {}
    for view in facts.stages:
        if view.fuse:
            break
        trunk = view.settings.trunk
        if trunk.lora is not None:
            trunk_lora.update(view.trunk)
        if trunk.strategy is not Strategy.FROZEN:
            for p in view.trunk:
                if stack_lora.get(p) is not None or p in trunk_lora:
                    found.setdefault(p)
    return list(found)


def _ordinal(k: int) -> str:
    """1 → `the 1st`, 2 → `the 2nd`, 11 → `the 11th`."""
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"the {k}{suffix}"
