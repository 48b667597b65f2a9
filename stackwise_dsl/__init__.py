"""stackwise-dsl: a language for declaring and running progressive, stack-wise training.

The pipeline, one package per arrow: syntax (text → syntax tree) → elaborate (→ IR) →
checks (→ diagnostics) → lower (→ plan) → runtime | emit.
"""

__version__ = "0.1.0"
