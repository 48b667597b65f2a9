"""bitsandbytes as it is on a CPU with AVX-512 BF16, on any CPU.

bitsandbytes asks `has_avx512bf16()` while it imports its CPU backend (to register a bf16
GEMV kernel and look for the optional `kernels` package) and again whenever a Linear4bit is
built. Imported before bitsandbytes, this module makes every such answer "yes":

    pytest -p tests.as_avx512bf16 tests/runtime      # the runtime's tests on that path

The runtime never calls the GEMV kernel itself (core/precision.py, Packed4bitLinear), so
this runs on CPUs without the instructions too."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys


class AsIfAvx512Bf16(importlib.abc.MetaPathFinder):
    """Loads bitsandbytes.functional as usual, then answers has_avx512bf16() with True."""

    def find_spec(self, name, path, target=None):
        if name != "bitsandbytes.functional":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            module.has_avx512bf16 = lambda: True

        spec.loader.exec_module = exec_module
        return spec


if "bitsandbytes" in sys.modules:
    raise RuntimeError("tests.as_avx512bf16 must be imported before bitsandbytes")
sys.meta_path.insert(0, AsIfAvx512Bf16())
