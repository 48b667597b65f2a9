"""What the machine running the checks has: the facts a check may depend on beyond the spec."""

from __future__ import annotations

import attrs

from stackwise_dsl.probe import cuda_present


@attrs.frozen
class Host:
    """The host as far as checks care: is there an NVIDIA GPU?"""

    cuda: bool

    @classmethod
    def detect(cls) -> Host:
        return cls(cuda=cuda_present())


CPU_ONLY = Host(cuda=False)
