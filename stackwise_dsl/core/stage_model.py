"""The model of one stage, built from the weight store: what exists, in which precision, with
which adapters, and exactly which weights train.

Building order: load every existing stack's fp32 master; create the new stack (random, a copy
of its trunk neighbour's master, or the identity); hold frozen stacks in their precision;
inject adapters (restoring stored adapter weights); then mark as trainable exactly what the
plan says. Frozen stacks run in eval mode (no dropout), so a cached trunk output equals a
recomputed one.
"""

from __future__ import annotations

import torch
from torch import nn

from stackwise_dsl.core import adapters
from stackwise_dsl.core.attention import Seen
from stackwise_dsl.core.model import BlockStack, Rack, weight_of
from stackwise_dsl.core.precision import autocast, freeze_into
from stackwise_dsl.core.world import full
from stackwise_dsl.lower import plan as p
from stackwise_dsl.lower.dispatch import adapter_key, pick, uses


class StageModel(nn.Module):
    """A rack arranged for one stage, built from `store` (runtime/weights.py: the run's fp32
    masters, adapters and shared weights, as plain state dicts)."""

    def __init__(self, plan: p.Plan, stage: p.Stage, store, device: torch.device) -> None:
        super().__init__()
        self.plan, self.stage, self.device = plan, stage, device
        self.rack = Rack(plan)
        if store.shared:
            self.rack.load_state_dict(store.shared, strict=False)
        self._build_stacks(store)
        self.rack.to(device)
        if uses("adapters"):
            _attach_adapters(self, store)
        self._mark_trainable()
        self.positions = tuple(part.position for part in stage.parts)
        for position in self.positions:
            self.stack(position).recompute = stage.recompute
        if uses("low_precision"):  # what `run` needs for autocast
            self.precision = {part.position: part.precision for part in stage.parts}
            self.frozen = {x.position: x.trains is not p.Trains.FULL for x in stage.parts}

    # --- building ---

    def _build_stacks(self, store) -> None:
        """One stack at a time: its master is loaded (from memory or from disk) and, if it
        does not train fully, held in its precision at once, so at most one stack is ever
        in fp32 beyond those that train."""
        for part in self.stage.parts:
            if part.position in store.stacks:
                stack = BlockStack(
                    self.plan.stacks[part.position], self.plan.model, self.plan.run.seed
                )
                stack.load_state_dict(dict(store.stacks[part.position].items()))
                self.rack.stacks[str(part.position)] = stack
                if uses("low_precision") and part.trains is not p.Trains.FULL:
                    freeze_into(stack.to(self.device), part.precision, self.device)
        for position in self.stage.new:
            if position not in store.stacks:
                source = self.stage.init_from
                copy_of = store.stacks[source] if source is not None else None
                self.rack.add_stack(position, self.stage.init, copy_of)
                store.stacks[position] = master_state(self.rack.stacks[str(position)])
        if not store.shared:
            store.shared.update(shared_state(self.rack))

    def _mark_trainable(self) -> None:
        self.requires_grad_(False)
        for part in self.stage.parts:
            stack = self.stack(part.position)
            if part.trains is p.Trains.FULL and part.role is p.Role.TRUNK:
                stack.requires_grad_(True)
            elif part.role is p.Role.NEW:
                for param in base_parameters(stack):
                    param.requires_grad_(True)
            if uses("adapters") and _adapters_train(part):
                for param in adapters.adapter_parameters(stack):
                    param.requires_grad_(True)
            if uses("freeze_up_proj"):
                for block in stack.blocks:
                    if block.frozen_up:
                        up = block.ffn.up
                        if uses("adapters"):
                            up = adapters.base_of(up)  # the layer under its LoRA
                        weight_of(up).requires_grad_(False)
        for param in input_parameters(self.rack):
            param.requires_grad_(self.stage.train_input)
        for param in head_parameters(self.rack):
            param.requires_grad_(self.stage.train_head or param.requires_grad)

    # --- running ---

    def stack(self, position: int) -> BlockStack:
        return self.rack.stacks[str(position)]

    def train(self, mode: bool = True) -> StageModel:
        """Training mode where something trains: frozen stacks (and a frozen input side) stay
        in eval mode, so dropout never touches what is not learning."""
        super().train(mode)
        for part in self.stage.parts:
            self.stack(part.position).train(mode and part.trains is not p.Trains.NOTHING)
        self.rack.drop.train(mode and self.stage.train_input)
        return self

    def hidden(self, inputs: torch.Tensor, t: torch.Tensor | None, positions=None,
               seen: Seen | None = None) -> torch.Tensor:  # fmt: skip
        """Hidden states after the given stacks (default: all of this stage's). `seen`:
        `inputs` are new tokens after `seen.offset` already read (sampling)."""
        h = self.rack.embed_tokens(inputs, t, start=0 if seen is None else seen.offset)
        return self.run(h, self.positions if positions is None else positions, seen)

    def run(self, h: torch.Tensor, positions, seen: Seen | None = None) -> torch.Tensor:
        for position in positions:
            stack = self.stack(position)
            if uses("low_precision"):
                with autocast(self.precision[position], self.device, frozen=self.frozen[position]):
                    h = stack(h, self.rack.ropes(h.device), seen).float()
            else:
                h = stack(h, self.rack.ropes(h.device), seen)
        return h

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.rack.logits(h)

    # --- writing back ---

    def capture(self, store) -> None:
        """Write what this stage trains back into the store (fp32)."""
        for part in self.stage.parts:
            stack = self.stack(part.position)
            if part.trains is p.Trains.FULL:
                store.stacks[part.position] = master_state(stack)
            if uses("adapters") and part.trains is not p.Trains.NOTHING:
                for name in adapters.NAMES:
                    if _has(stack, name):
                        store.adapters[(part.position, name)] = adapter_state(stack, name)
        if self.stage.train_input or self.stage.train_head:
            store.shared.clear()
            store.shared.update(shared_state(self.rack))


def _attach_adapters(model: StageModel, store) -> None:
    """Inject the adapters that train this stage or hold trained weights. An adapter that
    has never trained is exactly zero (lora_B = 0), so leaving it out changes nothing but
    the cost; its initial weights derive from the seed, whenever it is attached."""
    seed = model.plan.run.seed
    for part in model.stage.parts:
        stack = model.stack(part.position)
        trains = _adapters_train(part)
        loras = (
            ("stack", model.plan.stacks[part.position].stack_lora),
            ("trunk", part.trunk_lora),
        )
        for name, lora in loras:
            stored = store.adapters.get((part.position, name))
            if lora is None or not (trains or (stored is not None and _nonzero(stored))):
                continue
            attach = pick(adapters.ADAPTERS, adapter_key(lora), "adapter")
            attach(stack, lora, name, seed=seed, position=part.position)
            if stored is not None:
                load_adapter(stack, name, stored)
            stack.to(model.device)


def _adapters_train(part: p.Part) -> bool:
    """A trunk's adapters train unless the stack trains nothing this stage."""
    return part.role is p.Role.TRUNK and part.trains is not p.Trains.NOTHING


def _nonzero(state: dict[str, torch.Tensor]) -> bool:
    """Whether a stored adapter has ever changed its output (some lora_B entry is not zero)."""
    return any(bool(v.any()) for k, v in state.items() if ".lora_B." in k)


def _has(stack: BlockStack, name: str) -> bool:
    return bool(adapters.adapter_parameters(stack, name))


def base_parameters(stack: BlockStack) -> list[nn.Parameter]:
    """A stack's own weights (not its adapters)."""
    params = list(stack.parameters())
    if uses("adapters"):  # leave its adapters out
        lora = {id(x) for x in adapters.adapter_parameters(stack)}
        params = [x for x in params if id(x) not in lora]
    return params


def input_parameters(rack: Rack) -> list[nn.Parameter]:
    """Token embedding (with its projection), learned positions, time embedding; a
    pretrained embedding (`model.embedding`) is frozen: its adapter, not itself."""
    embed = rack.embed
    if uses("pretrained") and rack.model.embedding is not None:
        embed = None
    parts = [embed, rack.embed_proj, rack.positions, rack.time]
    return [x for m in parts if m is not None for x in m.parameters()]


def head_parameters(rack: Rack) -> list[nn.Parameter]:
    """The final norm and the head (a tied head is the input embedding, frozen when it is a
    pretrained one)."""
    head = rack.head if rack.head is not None else rack.embed
    if uses("pretrained") and rack.model.embedding is not None and rack.head is None:
        head = None
    parts = [rack.norm, head]
    return [x for m in parts if m is not None for x in m.parameters()]


# --- live modules and plain state dicts (what the weight store holds) ---

_BASE = ".base_layer"  # peft's wrapping of a layer with adapters


def master_state(stack: nn.Module) -> dict[str, torch.Tensor]:
    """A live stack's base weights under plain-module names (adapters left out), in fp32."""
    out = {}
    for key, value in stack.state_dict().items():
        if ".lora_" in key:
            continue
        out[key.replace(_BASE, "")] = host_copy(full(value))
    return out


def host_copy(x: torch.Tensor) -> torch.Tensor:
    """An fp32 copy in host memory: the store's masters never take the device's memory."""
    return x.detach().to(device="cpu", dtype=torch.float32, copy=True)


def adapter_state(stack: nn.Module, name: str) -> dict[str, torch.Tensor]:
    """One adapter's weights of a live stack, under plain-module names."""
    marker = {f".lora_A.{name}.", f".lora_B.{name}."}
    out = {}
    for key, value in stack.state_dict().items():
        if any(m in key for m in marker):
            out[key.replace(_BASE, "")] = host_copy(full(value))
    return out


def load_adapter(stack: nn.Module, name: str, state: dict[str, torch.Tensor]) -> None:
    """Put stored adapter weights back into a live (peft-wrapped) stack."""
    live = {
        k.replace(_BASE, ""): k for k in stack.state_dict() if f".{name}." in k and ".lora_" in k
    }
    missing = set(live) ^ set(state)
    if missing:
        raise KeyError(f"stored adapter `{name}` does not fit this stack: {sorted(missing)[:3]}")
    stack.load_state_dict({live[k]: v for k, v in state.items()}, strict=False)


def shared_state(rack: nn.Module) -> dict[str, torch.Tensor]:
    """The rack's own weights (everything but its stacks)."""
    return {
        k: host_copy(full(v)) for k, v in rack.state_dict().items() if not k.startswith("stacks.")
    }
