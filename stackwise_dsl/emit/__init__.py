"""Emitting Python source for `sw compile`.

Values from a spec reach an emitted script only as literals built here (`literals.py`),
never as text pasted into code; the script's code comes from our own runtime modules,
extracted by name with `ast` (`extract.py`), so `sw run` and a compiled script run the same
source. Nothing here imports torch.
"""

# Our modules a compiled script draws from, in the order a script reads them, each after those
# it needs at definition time, by section: the model, the objective and the data, the loop,
# then the harness (with the plan's classes, which only the harness builds).
SECTIONS = (
    ("the model", (
        "stackwise_dsl.core",
        "stackwise_dsl.core.attention",
        "stackwise_dsl.core.layers",
        "stackwise_dsl.core.seeds",
        "stackwise_dsl.core.model",
        "stackwise_dsl.ir.enums",
        "stackwise_dsl.core.dequantized",
        "stackwise_dsl.core.nvfp4",
        "stackwise_dsl.core.precision",
        "stackwise_dsl.core.adapters",
        "stackwise_dsl.core.stage_model",
    )),
    ("the objective and the data", (
        "stackwise_dsl.version",
        "stackwise_dsl.ir.walk",
        "stackwise_dsl.lower.schedule",
        "stackwise_dsl.core.objectives",
        "stackwise_dsl.data.corpus",
        "stackwise_dsl.data.tokenizer",
        "stackwise_dsl.data",
        "stackwise_dsl.core.batches",
    )),
    ("the loop", (
        "stackwise_dsl.core.errors",
        "stackwise_dsl.core.optim",
        "stackwise_dsl.estimate.flops",
        "stackwise_dsl.core.world",
        "stackwise_dsl.core.loop",
        "stackwise_dsl.core.sampling",
    )),
    ("the harness: the plan's classes, the weight store, the run", (
        "stackwise_dsl.machine.probe",
        "stackwise_dsl.machine.userdirs",
        "stackwise_dsl.lower.plan",
        "stackwise_dsl.lower.dispatch",
        "stackwise_dsl.lower.serialize",
        "stackwise_dsl.runtime.weights",
        "stackwise_dsl.runtime.checkpoint",
        "stackwise_dsl.runtime.merge",
        "stackwise_dsl.runtime.heap",
        "stackwise_dsl.runtime.cache",
        "stackwise_dsl.runtime.metrics",
        "stackwise_dsl.runtime.train",
        "stackwise_dsl.hf",
        "stackwise_dsl.hf.read",
        "stackwise_dsl.hf.layout",
        "stackwise_dsl.hf.load",
        "stackwise_dsl.runtime",
        "stackwise_dsl.runtime.standalone",
    )),
)  # fmt: skip
RUNTIME_MODULES = tuple(m for _, modules in SECTIONS for m in modules)
