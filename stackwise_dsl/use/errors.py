"""What using a trained run can refuse."""

from __future__ import annotations

from stackwise_dsl.core.errors import RunError


class UseError(RunError):
    """A request a trained model cannot answer (a prompt, a sampler, a checkpoint), in words."""
