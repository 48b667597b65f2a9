"""The plan: a spec with every default resolved, stage by stage. No spans, no `None` that
means "inherit": what the runtime and the emitted script read, and all they read.

Per stage, each existing stack has a `Part`: its role (new or trunk), what of it trains, its
precision and adapters, and (time as depth) its mask ratio.

Plan classes carry the IR's names for the same constructs (`Attention`, `Block`, `Stack`,
`MaskedDiffusion`, ...), without spans. A choice between variants is a union of classes (the
objective, the positions, a schedule, the optimizer's method, the data source) or an enum,
never a string: code dispatches on the type.
"""

from __future__ import annotations

import enum

import attrs

from stackwise_dsl.ir.enums import (
    Cache,
    Device,
    Distributed,
    Head,
    Init,
    KernelKind,
    LrSchedule,
    Mode,
    Norm,
    Precision,
    Split,
    Target,
    Task,
    TimeEmbedding,
    Windows,
)

plan_node = attrs.frozen(kw_only=True)


class Variant:
    """One of the classes a plan field may hold (a union of them): JSON names it under
    "kind" (lower/serialize.py)."""

    __slots__ = ()


class Role(enum.Enum):
    NEW = "new"
    TRUNK = "trunk"


class Trains(enum.Enum):
    """What of a stack trains in a stage."""

    FULL = "full"  # its weights (and its adapters, if any)
    ADAPTERS = "adapters"  # only its LoRA adapters
    NOTHING = "nothing"


class StageKind(enum.Enum):
    GROW = "grow"  # append or prepend: one new stack
    END_TO_END = "end_to_end"  # every stack new, at once
    FUSE = "fuse"  # every stack trunk, trained jointly


# --- the model ---------------------------------------------------------------------------------


@plan_node
class Lora:
    rank: int
    alpha: float
    dropout: float
    targets: tuple[Target, ...]


@plan_node
class Latent:
    """MLA: queries through a q_rank bottleneck, keys and values through one kv_rank latent."""

    q_rank: int
    kv_rank: int


@plan_node
class KernelFeatures:
    """Kernel attention in linear time: φ(q)·φ(k) in place of softmax."""

    kernel: KernelKind
    kernel_dim: int


@plan_node
class Attention:
    heads: int
    kv_heads: int
    head_dim: int
    mode: Mode
    latent: Latent | None
    kernel: KernelFeatures | None


@plan_node
class SwiGlu(Variant):
    hidden: int


@plan_node
class Gelu(Variant):
    hidden: int


@plan_node
class Block:
    name: str
    attention: Attention
    ffn: SwiGlu | Gelu
    residual_gain: float
    spectral_norm: bool
    freeze_up_proj: bool


@plan_node
class Stack:
    """The stack at one rack position (0 = input side)."""

    position: int
    name: str
    blocks: tuple[Block, ...]
    created_in: int  # the stage that creates it
    stack_lora: Lora | None  # attached when it is created


@plan_node
class Rope(Variant):
    theta: float


@plan_node
class LearnedPosition(Variant):
    pass


@plan_node
class NoPosition(Variant):
    pass


@plan_node
class InputTime(Variant):
    """Time as input: the model embeds t (over num_time_steps levels when given)."""

    embedding: TimeEmbedding
    num_time_steps: int | None


@plan_node
class Model:
    vocab: int
    d_model: int
    context: int
    embed_dim: int
    norm: Norm
    position: Rope | LearnedPosition | NoPosition
    head: Head
    dropout: float
    time: InputTime | None  # the time input of time-as-input diffusion
    # a local Hugging Face directory (absolute): the embedding, positions, final norm and head
    # start from it, and so do the stacks a stage creates with `init = pretrained`
    pretrained: str | None = None
    # a local Hugging Face directory (absolute) whose token embedding the model holds frozen;
    # when embed_dim != d_model, a Linear-GELU-Linear adapter maps it to d_model and trains
    embedding: str | None = None


# --- objectives and stages ---------------------------------------------------------------------
# A schedule gives the mask ratio at p in [0, 1] (0 = input side / t = 1, 1 = head / t = 0).


@plan_node
class LinearSchedule(Variant):
    start: float
    end: float


@plan_node
class CosineSchedule(Variant):
    start: float
    end: float


@plan_node
class ExponentialSchedule(Variant):
    start: float
    end: float


@plan_node
class ExplicitSchedule(Variant):
    values: tuple[float, ...]


Schedule = LinearSchedule | CosineSchedule | ExponentialSchedule | ExplicitSchedule


@plan_node
class Clm(Variant):
    pass


@plan_node
class Mlm(Variant):
    ratio: float
    bert_mix: bool


@plan_node
class DepthTime(Variant):
    pass


@plan_node
class MaskedDiffusion(Variant):
    time: DepthTime | InputTime
    mask: Schedule


Objective = Clm | Mlm | MaskedDiffusion


@plan_node
class Part:
    """One existing stack in one stage."""

    position: int
    role: Role
    trains: Trains
    precision: Precision
    trunk_lora: Lora | None  # attached over this stack while it is trunk
    mask_ratio: float | None  # time as depth: this stack's noise level


@plan_node
class Stage:
    number: int
    kind: StageKind
    steps: int
    tokens: int | None  # as stated in the spec, when it gave tokens
    objective: Objective
    mask_ratio: float | None  # time as depth: the ratio this stage trains at (None: per batch)
    parts: tuple[Part, ...]  # the existing stacks, rack order
    init: Init
    init_from: int | None  # `copy`: the rack position copied
    cache: Cache  # off unless the stage has a trunk to cache
    lr: float
    adapter_lr: float
    embedding_lr: float
    train_input: bool  # token embedding, learned positions, time embedding
    train_head: bool  # final norm and head (a tied head is the input embedding)
    merge_adapters: bool = False  # fuse: fold every trained adapter into its master first
    # activation checkpointing: each block that backpropagates keeps its input and runs its
    # forward again in the backward pass (core/stage_model.py)
    recompute: bool = False
    # the steps the learning-rate schedule spans, when `--max-steps` cut the stage short of
    # them (None: `steps`)
    schedule_steps: int | None = None

    @property
    def new(self) -> tuple[int, ...]:
        return tuple(p.position for p in self.parts if p.role is Role.NEW)


# --- data, optimizer, run --------------------------------------------------------------------


@plan_node
class Stdlib(Variant):
    pass


@plan_node
class Synthetic(Variant):
    task: Task
    symbols: int
    samples: int


@plan_node
class TextFiles(Variant):
    files: tuple[str, ...]  # absolute paths or globs


@plan_node
class Jsonl(Variant):
    files: tuple[str, ...]
    field: str


@plan_node
class Bytes(Variant):
    pass


@plan_node
class Chars(Variant):
    pass


@plan_node
class Bpe(Variant):
    vocab: int


@plan_node
class TokenizerFile(Variant):
    path: str  # absolute


@plan_node
class Data:
    source: Stdlib | Synthetic | TextFiles | Jsonl
    tokenizer: Bytes | Chars | Bpe | TokenizerFile
    batch: int
    seq_len: int
    validation: float  # 0 with validation_data
    split: Split
    validation_data: Stdlib | Synthetic | TextFiles | Jsonl | None
    windows: Windows
    specials: tuple[str, ...]  # "<mask>" and "<eos>", each when used, in this order


@plan_node
class AdamW(Variant):
    betas: tuple[float, float]
    eps: float


@plan_node
class AdamW8bit(Variant):
    betas: tuple[float, float]
    eps: float


@plan_node
class Sgd(Variant):
    momentum: float
    nesterov: bool


@plan_node
class Optimizer:
    method: AdamW | AdamW8bit | Sgd
    weight_decay: float
    warmup: int
    schedule: LrSchedule
    min_lr: float
    clip: float | None
    accumulate: int


@plan_node
class Run:
    seed: int
    device: Device
    dir: str
    log_every: int
    eval_every: int | None
    eval_batches: int
    checkpoint_every: int | None
    tensorboard: bool  # event files beside metrics.jsonl (runtime/metrics.py)
    distributed: Distributed = Distributed.DDP  # on several processes (core/world.py)


@plan_node
class Plan:
    name: str
    model: Model
    stacks: tuple[Stack, ...]
    stages: tuple[Stage, ...]
    data: Data
    optimizer: Optimizer
    run: Run

    @property
    def tokens_per_step(self) -> int:
        return self.data.batch * self.data.seq_len * self.optimizer.accumulate
