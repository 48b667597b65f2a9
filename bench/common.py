"""What every benchmark records about the machine it ran on."""

from __future__ import annotations

import os
import platform


def machine(with_torch: bool = False) -> str:
    cpu = platform.processor() or platform.machine()
    text = f"{cpu}, {os.cpu_count()} cpus, Python {platform.python_version()}"
    if with_torch:
        import torch

        text += f", torch {torch.__version__}, {torch.get_num_threads()} threads"
    return text
