"""What the machine running the checks has: the facts a check may depend on beyond the spec."""

from __future__ import annotations

import attrs

from stackwise_dsl.probe import cpu_bf16, cuda_present


@attrs.frozen
class Host:
    """The host as far as checks care: an NVIDIA GPU? native bf16 on the CPU?"""

    cuda: bool
    cpu_bf16: bool | None = None  # None: cannot tell (then no warning is given)

    @classmethod
    def detect(cls) -> Host:
        return cls(cuda=cuda_present(), cpu_bf16=cpu_bf16())


CPU_ONLY = Host(cuda=False)
