"""The core: what a researcher reads and edits.

The model and its attention kinds (layers, attention, model), how frozen stacks are held
(precision, dequantized, nvfp4) and adapted (adapters), a stage's model built from the weight
store (stage_model), the objectives and batches, the optimizer, and one stage's training
loop (loop.py). The harness around it is `stackwise_dsl.runtime`.
"""
