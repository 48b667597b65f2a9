"""What the machine has, found without importing anything heavy (no torch, no attrs)."""

from __future__ import annotations

import os


def cuda_present() -> bool:
    """An NVIDIA driver lists its GPUs under /proc/driver/nvidia/gpus (Linux)."""
    try:
        return bool(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return False


def cpu_bf16() -> bool | None:
    """Whether the CPU multiplies bf16 natively (avx512_bf16 or AMX); None when it cannot be
    told (not Linux). Without it, bf16 matmuls are emulated: many times slower than fp32."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        return None
    return None


def tensorboard_present() -> bool:
    """Whether the `tensorboard` package (which writes event files, without TensorFlow) is
    installed; found without importing it."""
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def host_key() -> list:
    """The host facts a check depends on, for keying remembered results."""
    return [cuda_present(), cpu_bf16(), tensorboard_present()]
