"""The run's weights between stages: fp32 masters of every stack that exists, of the shared
parts (embedding, positions, time, final norm, head), and every LoRA adapter.

A stage's model is built from the store (quantizing frozen stacks from their masters) and
writes back what it trained. The masters are what checkpoints keep, so a trunk held in 4 bits
is always rebuilt, re-quantized or fused from full-precision weights, never from a lossy copy.
Names are canonical: those of a plain module, without peft's `base_layer` wrapping.

A stack that does not change in a stage need not sit in memory as well: `offload` turns its
master into an `OnDisk` view of the stage-end checkpoint that holds it (read back tensor by
tensor when needed), and later checkpoints refer to that file instead of copying it. So a
frozen trunk held in 4 bits costs 4 bits of memory, not 4 bits plus its fp32 master.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import attrs
import torch

Tensors = dict[str, torch.Tensor]  # a state dict: name → tensor


class OnDisk(Mapping):
    """A stack's master weights left in a safetensors file: a read-only mapping that loads a
    tensor when it is asked for."""

    def __init__(self, file: Path, prefix: str) -> None:
        from safetensors import safe_open

        self.file, self.prefix = Path(file), prefix
        with safe_open(str(self.file), framework="pt") as f:
            self._keys = sorted(k[len(prefix) :] for k in f.keys() if k.startswith(prefix))  # noqa: SIM118
        if not self._keys:
            raise KeyError(f"{self.file} holds no tensors under {prefix!r}")

    def __getitem__(self, key: str) -> torch.Tensor:
        return next(iter(self._read([key]).values()))

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def shape_of(self, key: str) -> list[int]:
        """A tensor's shape, read from the file's header alone."""
        from safetensors import safe_open

        with safe_open(str(self.file), framework="pt") as f:
            return f.get_slice(self.prefix + key).get_shape()

    def items(self):  # one open of the file for all of them
        return self._read(self._keys).items()

    def _read(self, keys) -> dict[str, torch.Tensor]:
        from safetensors import safe_open

        with safe_open(str(self.file), framework="pt") as f:
            return {k: f.get_tensor(self.prefix + k) for k in keys}


@attrs.define
class Store:
    shared: dict[str, torch.Tensor] = attrs.field(factory=dict)
    stacks: dict[int, Mapping[str, torch.Tensor]] = attrs.field(factory=dict)
    adapters: dict[tuple[int, str], Tensors] = attrs.field(factory=dict)

    def offload(self, positions, checkpoint_file: Path) -> None:
        """Let the masters of `positions` live only in `checkpoint_file` (which must hold
        them as they are now: the checkpoint just written or just loaded)."""
        for position in positions:
            state = self.stacks.get(position)
            if state is not None and not isinstance(state, OnDisk):
                self.stacks[position] = OnDisk(checkpoint_file, f"stack/{position}/")

    def on_disk(self) -> dict[int, Path]:
        """The stacks whose masters live in a checkpoint file, and where."""
        return {k: v.file for k, v in self.stacks.items() if isinstance(v, OnDisk)}

    def flat(self, *, with_on_disk: bool = False) -> dict[str, torch.Tensor]:
        """Every tensor under a path-like key, for one safetensors file. Stacks on disk are
        left out (a checkpoint refers to them, see `on_disk`) unless `with_on_disk`."""
        out = {f"shared/{k}": v for k, v in self.shared.items()}
        for position, state in self.stacks.items():
            if isinstance(state, OnDisk) and not with_on_disk:
                continue
            out |= {f"stack/{position}/{k}": v for k, v in state.items()}
        for (position, name), state in self.adapters.items():
            out |= {f"adapter/{position}/{name}/{k}": v for k, v in state.items()}
        return {k: v.detach().contiguous().cpu() for k, v in out.items()}

    @classmethod
    def from_flat(cls, tensors: dict[str, torch.Tensor]) -> Store:
        """The store `flat` wrote; ValueError for a key it never writes."""
        store = cls()
        for key, value in tensors.items():
            kind, _, rest = key.partition("/")
            position, _, name = rest.partition("/")
            if kind == "shared" and rest:
                store.shared[rest] = value
            elif kind == "stack" and position.isdigit() and name:
                store.stacks.setdefault(int(position), {})[name] = value
            elif kind == "adapter" and position.isdigit() and "/" in name:
                adapter, _, name = name.partition("/")
                store.adapters.setdefault((int(position), adapter), {})[name] = value
            else:
                raise ValueError(f"`{key}` is not a shared, stack or adapter weight")
        return store
