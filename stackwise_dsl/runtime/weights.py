"""The run's weights between stages: fp32 masters of every stack that exists, of the shared
parts (embedding, positions, time, final norm, head), and every LoRA adapter.

A stage's model is built from the store (quantizing frozen stacks from their masters) and
writes back what it trained. The masters are what checkpoints keep, so a trunk held in 4 bits
is always rebuilt, re-quantized or fused from full-precision weights, never from a lossy copy.
Names are canonical: those of a plain module, without peft's `base_layer` wrapping.
"""

from __future__ import annotations

import attrs
import torch
from torch import nn

_BASE = ".base_layer"


@attrs.define
class Store:
    shared: dict[str, torch.Tensor] = attrs.field(factory=dict)
    stacks: dict[int, dict[str, torch.Tensor]] = attrs.field(factory=dict)
    adapters: dict[tuple[int, str], dict[str, torch.Tensor]] = attrs.field(factory=dict)

    def flat(self) -> dict[str, torch.Tensor]:
        """Every tensor under a path-like key, for one safetensors file."""
        out = {f"shared/{k}": v for k, v in self.shared.items()}
        for position, state in self.stacks.items():
            out |= {f"stack/{position}/{k}": v for k, v in state.items()}
        for (position, name), state in self.adapters.items():
            out |= {f"adapter/{position}/{name}/{k}": v for k, v in state.items()}
        return {k: v.detach().contiguous().cpu() for k, v in out.items()}

    @classmethod
    def from_flat(cls, tensors: dict[str, torch.Tensor]) -> Store:
        store = cls()
        for key, value in tensors.items():
            kind, _, rest = key.partition("/")
            if kind == "shared":
                store.shared[rest] = value
            elif kind == "stack":
                position, _, name = rest.partition("/")
                store.stacks.setdefault(int(position), {})[name] = value
            else:
                position, _, rest = rest.partition("/")
                adapter, _, name = rest.partition("/")
                store.adapters.setdefault((int(position), adapter), {})[name] = value
        return store


def master_state(stack: nn.Module) -> dict[str, torch.Tensor]:
    """A live stack's base weights under plain-module names (adapters left out), in fp32."""
    out = {}
    for key, value in stack.state_dict().items():
        if ".lora_" in key:
            continue
        out[key.replace(_BASE, "")] = value.detach().float().clone()
    return out


def adapter_state(stack: nn.Module, name: str) -> dict[str, torch.Tensor]:
    """One adapter's weights of a live stack, under plain-module names."""
    marker = {f".lora_A.{name}.", f".lora_B.{name}."}
    out = {}
    for key, value in stack.state_dict().items():
        if any(m in key for m in marker):
            out[key.replace(_BASE, "")] = value.detach().float().clone()
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
        k: v.detach().float().clone()
        for k, v in rack.state_dict().items()
        if not k.startswith("stacks.")
    }
