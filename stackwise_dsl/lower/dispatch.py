"""The keys of the runtime's dispatch tables, computed from a plan without torch.

Where the runtime has several implementations of one thing (attention kinds, ffns, time
embeddings, compact formats of a frozen stack, noise draws, adapters, merging, data
sources, tokenizers, optimizers, the activation cache), it keeps them in a module-level
table, a dict literal from a key to the implementation, and looks one up with
`pick(TABLE, key, what)`. The key functions below are the only ones that compute those
keys, and `needs(plan)` applies the same functions to every object of a plan: `sw compile`
keeps just those entries of each table (and, transitively, just the code they use), so a
compiled script holds the model classes and data code its spec needs and no others, while
`sw run` picks from full tables.
"""

from __future__ import annotations

from stackwise_dsl.ir.enums import Cache, Precision
from stackwise_dsl.lower import plan as p


class NotCompiled(LookupError):
    """A table lookup for a key the program has no entry for: a compiled script whose plan
    was edited to use something its spec did not."""


def pick(table: dict, key: str, what: str):
    """`table[key]`, or a message saying the program was compiled without it."""
    try:
        return table[key]
    except KeyError:
        raise NotCompiled(
            f"this program has no {what} `{key}`: it was compiled from a spec that does not "
            "use it; compile the spec that does"
        ) from None


# Features: what only some plans use, where the runtime tests for it with `if uses(...)`.
FEATURES = {
    "adapters": "a LoRA adapter on some stack",
    "low_precision": "a stack held or trained in a precision other than fp32",
    "freeze_up_proj": "a block whose ffn up-projection stays frozen",
    "pretrained": "a model that starts from a Hugging Face directory (or its embedding)",
}


def uses(feature: str) -> bool:
    """Whether the program runs plans with `feature` (FEATURES). In the package it is always
    true: the code under the test does what each plan asks, with or without the feature. A
    compiled script keeps that code only for the features its plan has (emit/specialize.py)
    and refuses a PLAN edited to use another."""
    return True


def features(plan: p.Plan) -> frozenset[str]:
    """The FEATURES `plan` uses."""
    parts = [part for stage in plan.stages for part in stage.parts]
    loras = [s.stack_lora for s in plan.stacks] + [x.trunk_lora for x in parts]
    found = {
        "adapters": any(x is not None for x in loras),
        "low_precision": any(x.precision is not Precision.FP32 for x in parts),
        "freeze_up_proj": any(b.freeze_up_proj for s in plan.stacks for b in s.blocks),
        "pretrained": (plan.model.pretrained or plan.model.embedding) is not None,
    }
    return frozenset(name for name, used in found.items() if used)


def compiled_for(plan: p.Plan, have: frozenset[str]) -> None:
    """NotCompiled if `plan` uses a feature or a table entry (`TABLE:key`, from `needs`) that
    a program was compiled without, before anything runs."""
    wanted = features(plan) | {f"{t}:{k}" for t, keys in needs(plan).items() for k in keys}
    missing = sorted(wanted - have)
    if missing:
        what = FEATURES.get(missing[0], "the entry of " + missing[0].replace(":", " for "))
        raise NotCompiled(
            f"this program was compiled without {what} ({missing[0]}), which its plan asks "
            "for: compile the spec that uses it"
        )


def attention_key(a: p.Attention) -> str:
    """ATTENTIONS: dense (MHA, GQA, MQA), latent (MLA), kernel, or latent_kernel (both)."""
    latent, kernel = a.latent is not None, a.kernel is not None
    return {(False, False): "dense", (True, False): "latent", (False, True): "kernel",
            (True, True): "latent_kernel"}[(latent, kernel)]  # fmt: skip


def ffn_key(b: p.Block) -> str:
    """FFNS: swiglu or gelu."""
    return type(b.ffn).__name__.lower()


def time_key(m: p.Model) -> str:
    """TIME_EMBEDDERS (only when the model has a time input): sinusoidal or learned."""
    return m.time.embedding.value


def frozen_key(precision: Precision) -> str:
    """FROZEN_LINEARS: the compact layer a frozen stack's linear layers become (quantized
    formats; bf16 where the CPU would emulate bf16 matmuls)."""
    return precision.value


def compact(part: p.Part) -> bool:
    """Whether a stack is held in a compact format in its stage (it does not train fully and
    its precision is quantized or bf16)."""
    return part.trains is not p.Trains.FULL and (
        part.precision.quantized or part.precision is Precision.BF16
    )


def noise_key(o: p.Objective) -> str:
    """NOISES: how a step's noise is drawn: clm, mlm, or masked diffusion with time as
    depth or as input."""
    if isinstance(o, p.MaskedDiffusion):
        return "masked_diffusion/" + ("depth" if isinstance(o.time, p.DepthTime) else "input")
    return "mlm" if isinstance(o, p.Mlm) else "clm"


def adapter_key(lora) -> str:
    """ADAPTERS: every adapter (a plan `Lora`) is a LoRA."""
    return "lora"


def merge_key(stage: p.Stage) -> str | None:
    """MERGES: a stage that folds trained adapters into the masters first; None if not."""
    return "lora" if stage.merge_adapters else None


def source_key(source) -> str:
    """SOURCES: stdlib, synthetic, textfiles or jsonl."""
    return type(source).__name__.lower()


def tokenizer_key(tokenizer) -> str:
    """TOKENIZERS and RESTORERS: bytes, chars, bpe or tokenizerfile."""
    return type(tokenizer).__name__.lower()


def optimizer_key(o: p.Optimizer) -> str:
    """OPTIMIZERS: adamw, adamw8bit or sgd."""
    return type(o.method).__name__.lower()


def cache_key(stage: p.Stage) -> str | None:
    """CACHES: memory or disk; None for a stage without an activation cache."""
    return None if stage.cache is Cache.OFF else stage.cache.value


def needs(plan: p.Plan) -> dict[str, frozenset[str]]:
    """Per table, the keys the runtime looks up when it runs `plan`."""
    blocks = [b for s in plan.stacks for b in s.blocks]
    parts = [part for stage in plan.stages for part in stage.parts]
    caches = {cache_key(stage) for stage in plan.stages} - {None}
    merges = {merge_key(stage) for stage in plan.stages} - {None}
    loras = [s.stack_lora for s in plan.stacks] + [x.trunk_lora for x in parts]
    sources = (plan.data.source, plan.data.validation_data)
    return {
        "ATTENTIONS": frozenset(attention_key(b.attention) for b in blocks),
        "FFNS": frozenset(ffn_key(b) for b in blocks),
        "TIME_EMBEDDERS": frozenset([time_key(plan.model)] if plan.model.time is not None else []),
        "FROZEN_LINEARS": frozenset(frozen_key(x.precision) for x in parts if compact(x)),
        "NOISES": frozenset(noise_key(stage.objective) for stage in plan.stages),
        "PREDICTED": frozenset(noise_key(stage.objective) for stage in plan.stages),
        "ADAPTERS": frozenset(adapter_key(lora) for lora in loras if lora is not None),
        "MERGES": frozenset(merges),
        "SOURCES": frozenset(source_key(x) for x in sources if x is not None),
        "TOKENIZERS": frozenset([tokenizer_key(plan.data.tokenizer)]),
        "RESTORERS": frozenset([tokenizer_key(plan.data.tokenizer)]),
        "OPTIMIZERS": frozenset([optimizer_key(plan.optimizer)]),
        "CACHES": frozenset(caches),
    }


def samplers_for(objective: p.Objective) -> tuple[str, ...]:
    """The samplers an objective trains a model for; the first is the default."""
    if isinstance(objective, p.Clm):
        return ("autoregressive",)
    if isinstance(objective, p.Mlm):
        return ("fill",)
    if isinstance(objective, p.MaskedDiffusion):
        if isinstance(objective.time, p.DepthTime):
            return ("depth", "fused")
        return ("ancestral", "low_confidence")
    raise ValueError(f"no sampler for {type(objective).__name__}")
