"""Every random choice of a run, derived from the run's seed and the choice's name.

Randomness is counter-based: the mask of sample 12345, the noise level of stage 2 step 7, the
initial weights of the stack at position 3 each get their own generator, seeded by hashing
(seed, name...). Nothing depends on how much randomness was drawn before, which is what
makes a resumed run identical to one that never stopped.
"""

from __future__ import annotations

import hashlib

import torch


def derive(seed: int, *names) -> int:
    """A 63-bit seed for (seed, *names), stable across Python versions and machines."""
    text = "\x1f".join([str(seed), *map(str, names)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def generator(seed: int, *names) -> torch.Generator:
    return torch.Generator().manual_seed(derive(seed, *names))
