"""Emitting Python source for `sw compile`.

Values from a spec reach an emitted script only as literals built here (`literals.py`),
never as text pasted into code; the script's code comes from our own runtime modules,
extracted by name with `ast` (`extract.py`), so `sw run` and a compiled script run the same
source. Nothing here imports torch.
"""

# Our modules a compiled script draws from, each after those it needs at definition time.
RUNTIME_MODULES = (
    "stackwise_dsl",
    "stackwise_dsl.lower.schedule",
    "stackwise_dsl.probe",
    "stackwise_dsl.userdirs",
    "stackwise_dsl.ir.walk",
    "stackwise_dsl.ir.enums",
    "stackwise_dsl.lower.plan",
    "stackwise_dsl.lower.dispatch",
    "stackwise_dsl.lower.serialize",
    "stackwise_dsl.data.corpus",
    "stackwise_dsl.data.tokenizer",
    "stackwise_dsl.data",
    "stackwise_dsl.runtime.errors",
    "stackwise_dsl.runtime.seeds",
    "stackwise_dsl.runtime.layers",
    "stackwise_dsl.runtime.attention",
    "stackwise_dsl.runtime.model",
    "stackwise_dsl.runtime.dequantized",
    "stackwise_dsl.runtime.nvfp4",
    "stackwise_dsl.runtime.precision",
    "stackwise_dsl.runtime.adapters",
    "stackwise_dsl.runtime.weights",
    "stackwise_dsl.runtime.checkpoint",
    "stackwise_dsl.runtime.merge",
    "stackwise_dsl.runtime.heap",
    "stackwise_dsl.runtime.batches",
    "stackwise_dsl.runtime.objectives",
    "stackwise_dsl.runtime.cache",
    "stackwise_dsl.runtime.metrics",
    "stackwise_dsl.runtime.optim",
    "stackwise_dsl.runtime.stage_model",
    "stackwise_dsl.runtime.loop",
    "stackwise_dsl.runtime.train",
    "stackwise_dsl.runtime",
)
