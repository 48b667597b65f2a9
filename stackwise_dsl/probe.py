"""What the machine has, found without importing anything heavy (no torch, no attrs)."""

from __future__ import annotations

import os


def cuda_present() -> bool:
    """An NVIDIA driver lists its GPUs under /proc/driver/nvidia/gpus (Linux)."""
    try:
        return bool(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return False
