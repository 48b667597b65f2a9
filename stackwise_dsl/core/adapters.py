"""LoRA adapters through peft: a stack LoRA and a trunk LoRA per stack, as named adapters.

Each stack gets its adapters injected with its own rank and alpha (from the plan's pattern or
table), under the adapter names "stack" and "trunk", both active together. Initial adapter
weights are drawn from the run's derived generators (peft's own init uses the global RNG):
lora_A as kaiming-uniform, lora_B zero, so a new adapter changes nothing until it trains.
"""

from __future__ import annotations

import math
import sys
import warnings

import torch
from torch import nn

from stackwise_dsl.core.precision import quiet_bitsandbytes
from stackwise_dsl.core.seeds import generator
from stackwise_dsl.lower import plan as p

NAMES = ("stack", "trunk")


def attach(stack: nn.Module, lora: p.Lora, name: str, *, seed: int, position: int) -> None:
    """Inject a LoRA adapter called `name` into the stack's targeted linear layers."""
    quiet_bitsandbytes()  # peft imports bitsandbytes
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=[t.value for t in lora.targets],
        bias="none",
    )
    with warnings.catch_warnings():  # a second adapter on the same stack is intended
        warnings.simplefilter("ignore", UserWarning)
        inject_adapter_in_model(config, stack, adapter_name=name)
    g = generator(seed, "lora", name, position)
    for _, layer in sorted(lora_layers(stack).items()):
        if name not in layer.lora_A:  # a layer only the other adapter targets
            continue
        a, b = layer.lora_A[name], layer.lora_B[name]
        a.float(), b.float()  # adapters train in fp32 whatever their base layer holds
        with torch.no_grad():
            bound = math.sqrt(6.0 / ((1 + 5) * a.weight.shape[1]))  # kaiming_uniform_(a=sqrt(5))
            a.weight.copy_(torch.rand(a.weight.shape, generator=g) * 2 * bound - bound)
            b.weight.zero_()
    activate(stack)


ADAPTERS = {
    "lora": attach,
}


def _lora_layer_class() -> type | None:
    """peft's LoraLayer, if peft is loaded. Only `attach` loads it: before, no layer can be
    a LoRA layer, and a run (or a compiled script) without adapters never needs peft."""
    lora = sys.modules.get("peft.tuners.lora")
    return getattr(lora, "LoraLayer", None)


def lora_layers(stack: nn.Module) -> dict[str, nn.Module]:
    kind = _lora_layer_class()
    if kind is None:
        return {}
    return {n: m for n, m in stack.named_modules() if isinstance(m, kind)}


def base_of(layer: nn.Module) -> nn.Module:
    """The layer an adapter wraps, or the layer itself."""
    kind = _lora_layer_class()
    return layer.get_base_layer() if kind is not None and isinstance(layer, kind) else layer


def activate(stack: nn.Module) -> None:
    """Every adapter a layer has takes part in its forward pass."""
    for layer in lora_layers(stack).values():
        present = [n for n in NAMES if n in layer.lora_A]
        layer.set_adapter(present)


def adapter_parameters(stack: nn.Module, name: str | None = None) -> list[nn.Parameter]:
    """The LoRA weights of a stack (of one adapter, or all)."""
    out = []
    for layer in lora_layers(stack).values():
        for adapter in (name,) if name else NAMES:
            if adapter in layer.lora_A:
                out += [layer.lora_A[adapter].weight, layer.lora_B[adapter].weight]
    return out
