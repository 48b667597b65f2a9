# ruff: noqa: E501  (a table of texts)
"""What every knob of the language means, for the glossary (docs/glossary.md's Knobs table is
written from it) and for the language server's hover. One entry per knob name, with the
constructs that hold it; markdown as the docs show it."""

from __future__ import annotations

# (knob, where it is written, what it means)
KNOBS: tuple[tuple[str, str, str], ...] = (
    ("d_model", "`model`", "width of the residual stream"),
    ("context", "`model`", "longest sequence the model reads"),
    ("vocab", "`model`", "vocabulary size (default: the tokenizer's)"),
    ("embed_dim", "`model`", "width of a factorized embedding"),
    ("norm", "`model`", "`rmsnorm` or `layernorm`"),
    ("position", "`model`", "`rope`, `learned` or `none`"),
    ("theta", "`rope(...)`", "rope base frequency"),
    ("head", "`model`", "`tied` or `untied`"),
    ("dropout", "`model`, `lora(...)`", "dropout probability of the model, or of an adapter"),
    (
        "pretrained",
        "`model`",
        '`hf("dir")`: the local Hugging Face model the embedding, head and `init = pretrained` stacks start from',
    ),
    (
        "embedding",
        "`model`",
        '`hf("dir")`: a local Hugging Face model whose token embedding alone the model holds, frozen, under an adapter when it is not d_model wide (the lexical kernel)',
    ),
    ("attention", "`block`", "the attention constructor"),
    ("heads", "attention", "query heads"),
    ("kv_heads", "attention", "key/value heads (GQA; 1 is MQA)"),
    ("mode", "attention", "`bidirectional` or `causal`"),
    ("q_rank", "`mla(...)`", "rank of the query latent"),
    ("kv_rank", "`mla(...)`", "rank of the shared key/value latent"),
    ("kernel", "`kernel(...)`", "random-feature kernel: linear, gaussian, laplacian, uniform"),
    ("kernel_dim", "`kernel(...)`", "number of random features"),
    ("ffn", "`block`", "`swiglu` or `gelu`"),
    ("hidden", "`swiglu(...)`, `gelu(...)`", "ffn width"),
    ("residual_gain", "`block`", "γ in `x + γ·f(x)`"),
    ("spectral_norm", "`block`", "spectrally normalised linear layers"),
    ("freeze_up_proj", "`block`", "the ffn up projection is a fixed random matrix"),
    ("blocks", "`stack`", "the blocks of a stack, in order"),
    ("ratio", "`mlm(...)`", "fraction of tokens corrupted"),
    ("bert_mix", "`mlm(...)`", "the 80/10/10 mask / random / keep rule"),
    ("time", "`masked_diffusion(...)`", "`depth` or `input(...)`"),
    ("mask", "`masked_diffusion(...)`", "the schedule of mask ratios"),
    (
        "range",
        "`linear`, `cosine`, `exponential`",
        "`a -> b`, from the input side (t = 1) to the head (t = 0)",
    ),
    ("embedding", "`input(...)`", "time embedding: `sinusoidal`, `learned` (or `none`, an error)"),
    ("num_time_steps", "`input(...)`", "how finely t is discretised"),
    ("direction", "`grow`", "`append`, `prepend`, `end_to_end`"),
    ("stacks", "`grow`", "the rack, input side first"),
    ("settings", "IR of `grow`", "the settings every stage shares (the body of `grow`)"),
    ("overrides", "IR of `grow`", "the `stage N { ... }` blocks, each with its combined settings"),
    ("steps", "stage, `fuse`", "optimizer steps in the stage"),
    ("tokens", "stage, `fuse`", "tokens in the stage (instead of steps)"),
    ("share", "`fuse`", "the fuse stage's fraction of all the run's steps (instead of steps)"),
    ("top", "stage", "trunk stacks nearest the head that keep training (SegProp)"),
    (
        "recompute",
        "stage, `fuse`",
        "activation checkpointing: blocks keep their input and recompute in backward",
    ),
    ("init", "stage", "how a new stack starts: `random`, `copy`, `middle`, `identity`"),
    ("cache", "stage", "trunk activation cache: `off`, `memory`, `disk`"),
    (
        "lr",
        "stage, `fuse`, optimizer",
        "learning rate of the new stack (and of everything without its own)",
    ),
    ("adapter_lr", "stage, `fuse`, optimizer", "learning rate of LoRA adapters"),
    ("embedding_lr", "stage, `fuse`, optimizer", "learning rate of the embedding and head"),
    ("embeddings", "stage, `fuse`", "`train` or `frozen`"),
    ("objective", "spec, stage, `fuse`", "what is trained"),
    ("new", "stage", "the new stack's precision and LoRA"),
    ("trunk", "stage, `fuse`", "the trunk's strategy, precision and LoRA"),
    ("merge", "`fuse`", "fold every trained adapter into its fp32 master before the stage trains"),
    ("strategy", "`trunk`", "`frozen`, `adapters`, `full` (written as a bare word)"),
    ("precision", "`new`, `trunk`", "fp32, bf16, fp16, int8, nf4, fp4, nvfp4"),
    ("lora", "`new`, `trunk`", "an adapter"),
    ("rank", "`lora(...)`", "rank, or one per stack"),
    ("alpha", "`lora(...)`", "scale numerator, or one per stack"),
    ("targets", "`lora(...)`", "q, k, v, o, gate, up, down"),
    ("pattern", "`lora(...)`", "constant, increasing, decreasing, linear"),
    ("source", "`data`", "where text comes from"),
    ("task", "`synthetic(...)`", "copy, reverse, sort, arithmetic"),
    ("symbols", "`synthetic(...)`", "alphabet size"),
    ("samples", "`synthetic(...)`", "number of generated sequences"),
    ("files", "`text(...)`, `jsonl(...)`", "paths or globs, relative to the spec"),
    ("field", "`jsonl(...)`", "the JSON field holding the text"),
    ("tokenizer", "`data`", "bytes, chars, bpe, file"),
    ("path", "`file(...)`, `hf(...)`", "a local tokenizer.json; a local Hugging Face directory"),
    ("batch", "`data`", "sequences per step"),
    ("seq_len", "`data`", "tokens per sequence"),
    ("validation", "`data`", "fraction held out"),
    ("split", "`data`", "which windows are held out: `interleaved` or `tail`"),
    (
        "validation_data",
        "`data`",
        "a separate source of validation text (instead of a held-out fraction)",
    ),
    (
        "windows",
        "`data`",
        "which windows training reads: `fixed` (shuffled each epoch) or `random` (any offset, with replacement)",
    ),
    (
        "eos",
        "`data`",
        "whether each document ends with `<eos>` (default: yes for stdlib, synthetic and jsonl, no for text files)",
    ),
    ("weight_decay", "optimizer", "decoupled weight decay"),
    ("warmup", "optimizer", "linear warmup steps"),
    ("schedule", "optimizer", "cosine, linear, constant"),
    ("min_lr", "optimizer", "floor of the schedule"),
    ("clip", "optimizer", "gradient norm clip"),
    ("accumulate", "optimizer", "micro-steps per optimizer step"),
    ("betas", "`adamw`, `adamw8bit`", "Adam betas"),
    ("eps", "`adamw`, `adamw8bit`", "Adam epsilon"),
    ("momentum", "`sgd`", "momentum"),
    ("nesterov", "`sgd`", "Nesterov momentum"),
    ("seed", "`run`", "fixes everything random"),
    ("device", "`run`", "auto, cpu, cuda"),
    ("dir", "`run`", "run directory"),
    ("log_every", "`run`", "how often the training loss is logged: `log every N steps`"),
    ("eval_every", "`run`", "how often the validation loss is measured: `eval every N steps`"),
    ("eval_batches", "`run`", "batches per evaluation"),
    ("checkpoint_every", "`run`", "how often a checkpoint is written: `checkpoint every N steps`"),
    (
        "tensorboard",
        "`run`",
        "also write the metrics as TensorBoard event files (needs the tensorboard package)",
    ),
    (
        "distributed",
        "`run`",
        "`ddp` or `fsdp`: how the processes of `sw run --nproc N` share the model",
    ),
)


def knob_table() -> str:
    """The glossary's Knobs table, in markdown."""
    lines = ["| Knob | Where | Meaning |", "|------|-------|---------|"]
    lines += [f"| `{knob}` | {where} | {meaning} |" for knob, where, meaning in KNOBS]
    return "\n".join(lines) + "\n"


def meaning(knob: str) -> list[tuple[str, str]]:
    """(where, meaning) of every entry for `knob` (a name may be a knob of several
    constructs)."""
    return [(where, text) for name, where, text in KNOBS if name == knob]


# The language's items and section words (docs/language.md has them at length).
CONSTRUCTS: dict[str, str] = {
    "model": "the parts every stack shares: `model { d_model = ..., context = ... }`",
    "block": "one pre-norm transformer block: `block NAME { attention = ..., ffn = ... }`",
    "stack": "a named, ordered group of blocks, the unit of growth: `stack NAME = 2 x BLOCK`",
    "objective": "what is trained: `objective = clm`, `mlm(...)` or `masked_diffusion(...)`",
    "grow": "the growth schedule: `grow append|prepend|end_to_end STACKS { settings }`",
    "stage": "settings of some growth stages: `stage 2 { ... }` or `stage 2..3 { ... }`",
    "fuse": "a final joint stage where every stack is trunk: `fuse { steps = ... }`",
    "data": "the data: `data { source = ..., tokenizer = ..., batch = ... }`",
    "optimizer": "the optimizer: `optimizer = adamw(lr = ...)`, `adamw8bit(...)` or `sgd(...)`",
    "run": "how the run goes: `run { seed = 0, log every 10 steps }`",
    "let": "a named value: `let width = 256`, usable wherever a value is",
    "include": 'merge another spec\'s items into this one: `include "base.sw"`',
    "extends": 'start from another spec and override it: `extends "base.sw"`',
    "new": "how a stage's new stack is held: `new { precision = ..., lora(...) }`",
    "trunk": "how a stage's existing stacks are held: `trunk { frozen, precision = nf4 }`",
    "every": "a cadence: `log every 10 steps`",
}
