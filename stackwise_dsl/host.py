"""What the machine running the checks has, found without importing torch."""

from __future__ import annotations

import os

import attrs


@attrs.frozen
class Host:
    """The host as far as checks care: is there an NVIDIA GPU?"""

    cuda: bool

    @classmethod
    def detect(cls) -> Host:
        """An NVIDIA driver lists its GPUs under /proc/driver/nvidia/gpus (Linux)."""
        gpus = "/proc/driver/nvidia/gpus"
        try:
            return cls(cuda=bool(os.listdir(gpus)))
        except OSError:
            return cls(cuda=False)


CPU_ONLY = Host(cuda=False)
