"""The IR: frozen attrs nodes, one class per construct, with source spans kept out of equality.

Each node's fields are the knobs of the language under the same names (docs/glossary.md).
Field metadata is the schema: `range` bounds a number (checked by checks/ranges.py); a
class's `sw_name` is the word that builds it in a spec, `sw_positional` the one argument that
may be given without a name, `sw_flags` the enum fields that may be written as a bare word.
Every node carries `span` (where it was written) and `spans` (where each field was written).
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

from stackwise_dsl.ir.enums import (
    Cache,
    Device,
    Direction,
    Distributed,
    Embeddings,
    Head,
    Init,
    KernelKind,
    LrSchedule,
    Mode,
    Norm,
    Pattern,
    Precision,
    Split,
    Strategy,
    Target,
    Task,
    TimeEmbedding,
    Windows,
)
from stackwise_dsl.source import Span, span_field


@attrs.frozen
class Range:
    """A closed or half-open numeric interval that a field's value (or each element) must lie in."""

    low: float | None
    high: float | None
    low_open: bool = False
    high_open: bool = False

    def contains(self, x: float) -> bool:
        if self.low is not None and (x <= self.low if self.low_open else x < self.low):
            return False
        return not (self.high is not None and (x >= self.high if self.high_open else x > self.high))

    def __str__(self) -> str:
        lo = "(" if self.low_open else "["
        hi = ")" if self.high_open or self.high is None else "]"
        low = "-inf" if self.low is None else _num(self.low)
        high = "inf" if self.high is None else _num(self.high)
        return f"{lo}{low}, {high}{hi}"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


POSITIVE = Range(0, None, low_open=True)
NON_NEGATIVE = Range(0, None)
RATIO = Range(0, 1, low_open=True)  # a fraction that must not be zero: (0, 1]
FRACTION = Range(0, 1, high_open=True)  # a probability that must not be one: [0, 1)

_REQUIRED: Any = attrs.NOTHING


def knob(default: Any = _REQUIRED, *, range: Range | None = None) -> Any:
    """A field of the language; `range` is checked by checks/ranges.py."""
    return attrs.field(default=default, metadata={"range": range})


def spans_field() -> Any:
    """Where each field's value was written: field name → Span. Not part of equality."""
    return attrs.field(factory=dict, eq=False, hash=False, repr=False)


node = attrs.frozen(kw_only=True)


# --- model -----------------------------------------------------------------------------------


@node
class Rope:
    sw_name: ClassVar[str] = "rope"
    theta: float = knob(10000.0, range=POSITIVE)
    span: Span | None = span_field()
    spans: dict = spans_field()


@node
class LearnedPosition:
    sw_name: ClassVar[str] = "learned"
    span: Span | None = span_field()
    spans: dict = spans_field()


@node
class NoPosition:
    sw_name: ClassVar[str] = "none"
    span: Span | None = span_field()
    spans: dict = spans_field()


Position = Rope | LearnedPosition | NoPosition


@node
class Hf:
    """A local Hugging Face model directory (Llama or GPT-2 layout, safetensors)."""

    sw_name: ClassVar[str] = "hf"
    sw_positional: ClassVar[str] = "path"
    path: str = knob()
    span: Span | None = span_field()
    spans: dict = spans_field()


@node
class Model:
    """The rack's shared parts: embedding, width, context, norm, positions and head."""

    sw_name: ClassVar[str] = "model"
    d_model: int = knob(range=POSITIVE)
    context: int = knob(range=POSITIVE)
    vocab: int | None = knob(None, range=POSITIVE)
    embed_dim: int | None = knob(None, range=POSITIVE)
    norm: Norm = knob(Norm.RMSNORM)
    position: Position = knob(Rope())
    head: Head = knob(Head.TIED)
    dropout: float = knob(0.0, range=FRACTION)
    pretrained: Hf | None = knob(None)  # its embedding, head and the `init = pretrained` stacks
    # a frozen token embedding alone (embed_dim wide; an adapter maps it to d_model)
    embedding: Hf | None = knob(None)
    span: Span | None = span_field()
    spans: dict = spans_field()


# --- blocks and stacks -----------------------------------------------------------------------


@node
class Latent:
    """MLA: queries through a rank-q_rank bottleneck, keys and values through one kv_rank latent."""

    q_rank: int = knob()
    kv_rank: int = knob()
    span: Span | None = span_field()
    spans: dict = spans_field()


@node
class KernelFeatures:
    """Random-feature kernel attention, linear in sequence length."""

    kernel: KernelKind = knob()
    kernel_dim: int = knob()
    span: Span | None = span_field()
    spans: dict = spans_field()


@node
class Attention:
    """Attention along independent axes: head sharing (kv_heads), a latent, a kernel, a mode.

    Written as mha(...), gqa(...), mla(...), kernel(...) or a preset; see elaborate/attention.py.
    """

    heads: int = knob(range=POSITIVE)
    kv_heads: int = knob(range=POSITIVE)
    mode: Mode = knob(Mode.BIDIRECTIONAL)
    latent: Latent | None = knob(None)
    kernel: KernelFeatures | None = knob(None)
    span: Span | None = span_field()
    spans: dict = spans_field()


@node
class SwiGlu:
    sw_name: ClassVar[str] = "swiglu"
    hidden: int | None = knob(None, range=POSITIVE)
    span: Span | None = span_field()
    spans: dict = spans_field()


@node
class Gelu:
    sw_name: ClassVar[str] = "gelu"
    hidden: int | None = knob(None, range=POSITIVE)
    span: Span | None = span_field()
    spans: dict = spans_field()


Ffn = SwiGlu | Gelu


@node
class Block:
    """One pre-norm transformer block: x + attn(norm(x)), then x + ffn(norm(x))."""

    sw_name: ClassVar[str] = "block"
    name: str = knob()
    attention: Attention = knob()
    ffn: Ffn = knob(SwiGlu())
    residual_gain: float | None = knob(None, range=POSITIVE)
    spectral_norm: bool = knob(False)
    freeze_up_proj: bool = knob(False)
    span: Span | None = span_field()
    spans: dict = spans_field()


@node
class Ref:
    """A use of a block or stack by name, with the span of that use."""

    name: str
    span: Span | None = span_field()


@node
class Stack:
    """A named, ordered group of blocks: the unit of growth, freezing, precision and adapters."""

    sw_name: ClassVar[str] = "stack"
    name: str = knob()
    blocks: tuple[Ref, ...] = knob()
    span: Span | None = span_field()
    spans: dict = spans_field()


# --- objectives --------------------------------------------------------------------------------


@node
class Mlm:
    sw_name: ClassVar[str] = "mlm"
    ratio: float = knob(0.15, range=RATIO)
    bert_mix: bool = knob(True)
    span: Span | None = span_field()
    spans: dict = spans_field()


@node
class Clm:
    sw_name: ClassVar[str] = "clm"
    span: Span | None = span_field()
    spans: dict = spans_field()


@node
class DepthTime:
    """Time as depth: stack k trains at mask ratio r_k; no time input."""

    sw_name: ClassVar[str] = "depth"
    span: Span | None = span_field()
    spans: dict = spans_field()


@node
class InputTime:
    """Time as input: t ~ U(0,1) per batch and a time embedding tells the network the level."""

    sw_name: ClassVar[str] = "input"
    embedding: TimeEmbedding = knob(TimeEmbedding.SINUSOIDAL)
    num_time_steps: int | None = knob(None, range=POSITIVE)
    span: Span | None = span_field()
    spans: dict = spans_field()


@node
class LinearSchedule:
    sw_name: ClassVar[str] = "linear"
    sw_positional: ClassVar[str] = "range"
    range: tuple[float, float] = knob(range=RATIO)
    span: Span | None = span_field()
    spans: dict = spans_field()


@node
class CosineSchedule:
    sw_name: ClassVar[str] = "cosine"
    sw_positional: ClassVar[str] = "range"
    range: tuple[float, float] = knob(range=RATIO)
    span: Span | None = span_field()
    spans: dict = spans_field()


@node
class ExponentialSchedule:
    sw_name: ClassVar[str] = "exponential"
    sw_positional: ClassVar[str] = "range"
    range: tuple[float, float] = knob(range=RATIO)
    span: Span | None = span_field()
    spans: dict = spans_field()


@node
class ExplicitSchedule:
    """Mask ratios listed one per stack, input side first; written as a plain list."""

    values: tuple[float, ...] = knob(range=RATIO)
    span: Span | None = span_field()
    spans: dict = spans_field()


CurveSchedule = LinearSchedule | CosineSchedule | ExponentialSchedule
Schedule = LinearSchedule | CosineSchedule | ExponentialSchedule | ExplicitSchedule


@node
class MaskedDiffusion:
    sw_name: ClassVar[str] = "masked_diffusion"
    time: DepthTime | InputTime = knob(DepthTime())
    mask: Schedule = knob(LinearSchedule(range=(0.9, 0.15)))
    span: Span | None = span_field()
    spans: dict = spans_field()


Objective = Mlm | Clm | MaskedDiffusion


# --- adapters, stages, growth --------------------------------------------------------------------


ALL_TARGETS = tuple(Target)


@node
class Lora:
    """A LoRA adapter per stack: rank and alpha constant, following a pattern, or a table."""

    sw_name: ClassVar[str] = "lora"
    rank: int | tuple[int, ...] = knob(8, range=POSITIVE)
    alpha: float | tuple[float, ...] | None = knob(None, range=POSITIVE)
    dropout: float = knob(0.0, range=FRACTION)
    targets: tuple[Target, ...] = knob(ALL_TARGETS)
    pattern: Pattern = knob(Pattern.CONSTANT)
    span: Span | None = span_field()
    spans: dict = spans_field()


@node
class NewPolicy:
    """The stack being trained in a stage."""

    sw_name: ClassVar[str] = "new"
    precision: Precision = knob(Precision.FP32)
    lora: Lora | None = knob(None)
    span: Span | None = span_field()
    spans: dict = spans_field()


@node
class TrunkPolicy:
    """The stacks that already exist when a stage starts."""

    sw_name: ClassVar[str] = "trunk"
    sw_flags: ClassVar[tuple[str, ...]] = ("strategy",)
    strategy: Strategy = knob(Strategy.FROZEN)
    precision: Precision = knob(Precision.FP32)
    lora: Lora | None = knob(None)
    span: Span | None = span_field()
    spans: dict = spans_field()


@node
class StageSettings:
    """Everything one growth stage states; `None` inherits (lr from the optimizer, etc.)."""

    steps: int | None = knob(None, range=POSITIVE)
    tokens: int | None = knob(None, range=POSITIVE)
    init: Init = knob(Init.RANDOM)
    cache: Cache = knob(Cache.OFF)
    lr: float | None = knob(None, range=POSITIVE)
    adapter_lr: float | None = knob(None, range=POSITIVE)
    embedding_lr: float | None = knob(None, range=POSITIVE)
    embeddings: Embeddings | None = knob(None)
    objective: Objective | None = knob(None)
    top: int = knob(0, range=NON_NEGATIVE)  # trunk stacks nearest the head that keep training
    recompute: bool = knob(False)  # activation checkpointing: blocks recompute in backward
    new: NewPolicy = knob(NewPolicy())
    trunk: TrunkPolicy = knob(TrunkPolicy())
    span: Span | None = span_field()
    spans: dict = spans_field()


@node
class StageOverride:
    """`stage first..last { ... }`: the settings of those stages, base settings merged in."""

    first: int
    last: int
    settings: StageSettings
    span: Span | None = span_field()


@node
class Growth:
    """The growth schedule: direction, the stacks in rack order (input side first), stages."""

    sw_name: ClassVar[str] = "grow"
    direction: Direction
    stacks: tuple[Ref, ...]
    settings: StageSettings = StageSettings()
    overrides: tuple[StageOverride, ...] = ()
    span: Span | None = span_field()
    spans: dict = spans_field()

    @property
    def stage_count(self) -> int:
        """append and prepend: one stage per stack; end_to_end: one stage."""
        return 1 if self.direction is Direction.END_TO_END else len(self.stacks)


@node
class Fuse:
    """The final joint stage: every stack is trunk; train all of it or its adapters."""

    sw_name: ClassVar[str] = "fuse"
    steps: int | None = knob(None, range=POSITIVE)
    tokens: int | None = knob(None, range=POSITIVE)
    share: float | None = knob(None, range=FRACTION)  # of all steps, growth's and this stage's
    lr: float | None = knob(None, range=POSITIVE)
    adapter_lr: float | None = knob(None, range=POSITIVE)
    embedding_lr: float | None = knob(None, range=POSITIVE)
    embeddings: Embeddings | None = knob(None)
    objective: Objective | None = knob(None)
    trunk: TrunkPolicy = knob(TrunkPolicy(strategy=Strategy.FULL))
    merge: bool = knob(False)  # fold trained adapters into the fp32 masters before training
    recompute: bool = knob(False)  # activation checkpointing: blocks recompute in backward
    span: Span | None = span_field()
    spans: dict = spans_field()


# --- data ----------------------------------------------------------------------------------------


@node
class Stdlib:
    """The Python standard library's own source files: present on every machine."""

    sw_name: ClassVar[str] = "stdlib"
    span: Span | None = span_field()
    spans: dict = spans_field()


@node
class Synthetic:
    sw_name: ClassVar[str] = "synthetic"
    task: Task = knob(Task.COPY)
    symbols: int = knob(16, range=POSITIVE)
    samples: int = knob(10_000, range=POSITIVE)
    span: Span | None = span_field()
    spans: dict = spans_field()


@node
class TextFiles:
    """Text files or globs, relative to the spec that names them."""

    sw_name: ClassVar[str] = "text"
    sw_positional: ClassVar[str] = "files"
    files: tuple[str, ...] = knob()
    span: Span | None = span_field()
    spans: dict = spans_field()


@node
class Jsonl:
    sw_name: ClassVar[str] = "jsonl"
    sw_positional: ClassVar[str] = "files"
    files: tuple[str, ...] = knob()
    field: str = knob("text")
    span: Span | None = span_field()
    spans: dict = spans_field()


DataSource = Stdlib | Synthetic | TextFiles | Jsonl


@node
class Bytes:
    sw_name: ClassVar[str] = "bytes"
    span: Span | None = span_field()
    spans: dict = spans_field()


@node
class Chars:
    sw_name: ClassVar[str] = "chars"
    span: Span | None = span_field()
    spans: dict = spans_field()


@node
class Bpe:
    """A byte-level BPE trained locally on the data source (tokenizers library), then remembered."""

    sw_name: ClassVar[str] = "bpe"
    vocab: int = knob(4096, range=POSITIVE)
    span: Span | None = span_field()
    spans: dict = spans_field()


@node
class TokenizerFile:
    """A local tokenizer.json (tokenizers format)."""

    sw_name: ClassVar[str] = "file"
    sw_positional: ClassVar[str] = "path"
    path: str = knob()
    span: Span | None = span_field()
    spans: dict = spans_field()


Tokenizer = Bytes | Chars | Bpe | TokenizerFile


@node
class Data:
    sw_name: ClassVar[str] = "data"
    source: DataSource = knob(Stdlib())
    tokenizer: Tokenizer = knob(Bytes())
    batch: int = knob(32, range=POSITIVE)
    seq_len: int | None = knob(None, range=POSITIVE)
    validation: float = knob(0.05, range=FRACTION)
    split: Split = knob(Split.INTERLEAVED)
    validation_data: DataSource | None = knob(None)
    windows: Windows = knob(Windows.FIXED)
    eos: bool | None = knob(None)
    span: Span | None = span_field()
    spans: dict = spans_field()


# --- optimizer and run ---------------------------------------------------------------------------


@node
class _OptimizerBase:
    """Settings every optimizer shares: learning rates per group, decay, schedule, clipping."""

    lr: float = knob(3e-4, range=POSITIVE)
    adapter_lr: float | None = knob(None, range=POSITIVE)
    embedding_lr: float | None = knob(None, range=POSITIVE)
    weight_decay: float = knob(0.0, range=NON_NEGATIVE)
    warmup: int = knob(0, range=NON_NEGATIVE)
    schedule: LrSchedule = knob(LrSchedule.COSINE)
    min_lr: float = knob(0.0, range=NON_NEGATIVE)
    clip: float | None = knob(1.0, range=POSITIVE)
    accumulate: int = knob(1, range=POSITIVE)
    span: Span | None = span_field()
    spans: dict = spans_field()


@node
class AdamW(_OptimizerBase):
    sw_name: ClassVar[str] = "adamw"
    betas: tuple[float, float] = knob((0.9, 0.999), range=FRACTION)
    eps: float = knob(1e-8, range=POSITIVE)


@node
class AdamW8bit(_OptimizerBase):
    """AdamW with 8-bit optimizer state (bitsandbytes)."""

    sw_name: ClassVar[str] = "adamw8bit"
    betas: tuple[float, float] = knob((0.9, 0.999), range=FRACTION)
    eps: float = knob(1e-8, range=POSITIVE)


@node
class Sgd(_OptimizerBase):
    sw_name: ClassVar[str] = "sgd"
    momentum: float = knob(0.0, range=FRACTION)
    nesterov: bool = knob(False)


Optimizer = AdamW | AdamW8bit | Sgd


@node
class Run:
    sw_name: ClassVar[str] = "run"
    seed: int = knob(0, range=NON_NEGATIVE)
    device: Device = knob(Device.AUTO)
    dir: str | None = knob(None)
    log_every: int = knob(10, range=POSITIVE)
    eval_every: int | None = knob(None, range=POSITIVE)
    eval_batches: int = knob(8, range=POSITIVE)
    checkpoint_every: int | None = knob(None, range=POSITIVE)
    tensorboard: bool = knob(False)
    distributed: Distributed = knob(Distributed.DDP)
    span: Span | None = span_field()
    spans: dict = spans_field()


@node
class Spec:
    """A whole spec: the model, its blocks and stacks, the objective, growth and training."""

    model: Model
    blocks: tuple[Block, ...]
    stacks: tuple[Stack, ...]
    objective: Objective
    grow: Growth
    fuse: Fuse | None = None
    data: Data = Data()
    optimizer: Optimizer = AdamW()
    run: Run = Run()
    span: Span | None = span_field()
    spans: dict = spans_field()


def at(node: Any, field: str) -> Span | None:
    """Where `field` of `node` was written, or the node's own span when it was defaulted."""
    return node.spans.get(field) or node.span
