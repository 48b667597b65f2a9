"""stackwise-dsl: a language for declaring and running progressive, stack-wise training.

The pipeline, one package per arrow: syntax (text → syntax tree) → elaborate (→ IR) →
checks (→ diagnostics) → lower (→ plan) → runtime | emit.
"""

from stackwise_dsl.version import __version__

__all__ = ["__version__", "load"]


def load(run_dir, checkpoint=None, *, device: str = "cpu"):
    """A trained run's model (use/__init__.py `load`): `generate`, `loss`, `score` and its
    tokenizer. Imported here on call, so `import stackwise_dsl` stays free of torch."""
    from stackwise_dsl.use import load as load_run

    return load_run(run_dir, checkpoint, device=device)
