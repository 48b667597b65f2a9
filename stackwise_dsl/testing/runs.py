"""Running drawn specs: the property "what `sw check` passes, `sw run` runs".

`on_small_data` keeps a spec's model, growth, objective and optimizer as they are and swaps
its data for a small synthetic task, so any spec trains in seconds on a CPU;
`one_step_per_stage` lowers it and runs every stage for one step; `with_pretrained_embedding`
puts a local Hugging Face directory's embedding under it. They import torch only when a run
starts.
"""

from __future__ import annotations

from pathlib import Path

import attrs

from stackwise_dsl.ir import nodes as n
from stackwise_dsl.ir.enums import Device, Head, Split, Task

SMALL_DATA = n.Data(
    source=n.Synthetic(task=Task.COPY, symbols=8, samples=256),
    tokenizer=n.Bytes(),
    batch=2,
)


def on_small_data(spec: n.Spec) -> n.Spec:
    """The spec on SMALL_DATA with windows of at most 16 tokens (its validation fraction,
    split, windows and `eos` kept; a tail split for validation data), the vocabulary its
    tokenizer gives, at most two micro-batches a step, one evaluation batch, on the CPU,
    without TensorBoard files."""
    seq_len = min(16, spec.model.context)
    d = spec.data
    held = d.validation_data is not None
    data = attrs.evolve(SMALL_DATA, seq_len=seq_len, eos=d.eos, windows=d.windows,
                        validation=n.Data().validation if held else d.validation,
                        split=Split.TAIL if held else d.split)  # fmt: skip
    optimizer = attrs.evolve(spec.optimizer, accumulate=min(spec.optimizer.accumulate, 2))
    run = attrs.evolve(spec.run, device=Device.CPU, eval_batches=1, dir=None, tensorboard=False)
    model = attrs.evolve(spec.model, vocab=None)
    return attrs.evolve(spec, model=model, data=data, optimizer=optimizer, run=run)


def with_pretrained_embedding(spec: n.Spec, directory: str, *, width: int, vocab: int) -> n.Spec:
    """`spec` with the frozen token embedding (vocab x width) of the Hugging Face `directory`
    (an absolute path) and its tokenizer.json: `embed_dim = width` (an adapter when d_model
    differs, and then an untied head)."""
    m = spec.model
    head = m.head if m.d_model == width else Head.UNTIED
    model = attrs.evolve(m, vocab=vocab, embed_dim=width, head=head, pretrained=None,
                         embedding=n.Hf(path=directory))  # fmt: skip
    tokenizer = n.TokenizerFile(path=str(Path(directory) / "tokenizer.json"))
    return attrs.evolve(spec, model=model, data=attrs.evolve(spec.data, tokenizer=tokenizer))


def one_step_per_stage(spec: n.Spec, run_dir: Path, name: str = "fuzz") -> list:
    """Lower `spec` and train every stage for one step in `run_dir`; the stage summaries.
    Raises what the run raises (a RunError for a problem a person could fix)."""
    from stackwise_dsl import runtime
    from stackwise_dsl.lower import to_plan

    plan = to_plan(spec, name=name)
    stages = tuple(attrs.evolve(s, steps=1) for s in plan.stages)
    plan = attrs.evolve(plan, stages=stages, run=attrs.evolve(plan.run, dir=str(run_dir)))
    return runtime.run(plan, Path(run_dir))
