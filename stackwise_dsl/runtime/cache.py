"""Activation caching for append growth over a frozen trunk.

The trunk's output for a window is computed once per stage and reused: kept in memory, or
written to safetensors shards on disk. Masks depend only on (window, ratio, seed), and frozen
stacks run without dropout, so a cached output is exactly what the trunk would compute again.
`computed` counts trunk forward passes per window (a test asserts each window runs once).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from stackwise_dsl.core.errors import RunError

SHARD = 512  # windows per disk shard, at most
SHARD_BYTES = 256 * 2**20  # and at most this much of them held in memory before writing


class ActivationCache:
    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.memory: dict[int, torch.Tensor] = {}
        self.pending: dict[int, torch.Tensor] = {}
        self.pending_bytes = 0
        self.shard_of: dict[int, Path] = {}
        self.computed = 0
        if directory is not None:
            try:
                directory.mkdir(parents=True, exist_ok=True)
                for old in directory.glob("*.safetensors"):
                    old.unlink()
            except OSError as e:
                raise _unwritable(directory, e) from None

    def get(self, ids: np.ndarray, compute: Callable[[np.ndarray], torch.Tensor]) -> torch.Tensor:
        """Trunk outputs (B, T, d) for `ids`, computing (once) those not cached yet."""
        missing = np.array(
            [i for i in dict.fromkeys(ids.tolist()) if not self._has(i)], dtype=np.int64
        )
        if len(missing):
            fresh = compute(missing)
            self.computed += len(missing)
            for i, h in zip(missing.tolist(), fresh, strict=True):
                self._put(i, h.detach())
        return torch.stack([self._get(i) for i in ids.tolist()])

    def hidden(self, model, inputs: torch.Tensor, ids: np.ndarray) -> torch.Tensor:
        """A stage model's hidden states for windows `ids` (B, T): its last stack (the new
        one, appended) over the trunk's cached output."""
        trunk, new = model.positions[:-1], model.positions[-1:]
        rows = {int(i): r for r, i in enumerate(ids.tolist())}

        def trunk_output(missing: np.ndarray) -> torch.Tensor:
            chosen = torch.tensor([rows[int(i)] for i in missing], device=inputs.device)
            with torch.no_grad():
                return model.hidden(inputs[chosen], None, positions=trunk)

        return model.run(self.get(ids, trunk_output), new)

    def _has(self, i: int) -> bool:
        return i in self.memory or i in self.pending or i in self.shard_of

    def _put(self, i: int, h: torch.Tensor) -> None:
        if self.directory is None:
            self.memory[i] = h
            return
        self.pending[i] = h.cpu().contiguous()
        self.pending_bytes += self.pending[i].nbytes
        if len(self.pending) >= SHARD or self.pending_bytes >= SHARD_BYTES:
            self.flush()

    def _get(self, i: int) -> torch.Tensor:
        if i in self.memory:
            return self.memory[i]
        if i in self.pending:
            return self.pending[i]
        from safetensors import safe_open

        with safe_open(str(self.shard_of[i]), framework="pt") as f:
            return f.get_tensor(str(i))

    def flush(self) -> None:
        """Write pending outputs as one shard (atomically: temp file, then rename)."""
        if not self.pending:
            return
        from safetensors.torch import save_file

        path = self.directory / f"shard-{len(set(self.shard_of.values())):05d}.safetensors"
        tmp = path.with_suffix(".tmp")
        try:
            save_file({str(i): h for i, h in self.pending.items()}, str(tmp))
            os.replace(tmp, path)
        except OSError as e:
            raise _unwritable(self.directory, e) from None
        for i in self.pending:
            self.shard_of[i] = path
        self.pending, self.pending_bytes = {}, 0


def _unwritable(directory: Path, e: OSError) -> RunError:
    return RunError(
        f"cannot write the activation cache in {directory} ({e.strerror or e}): free the "
        "path, or use `cache = memory`"
    )
