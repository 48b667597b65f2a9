"""Closed sets of the language, converted from text exactly once (during elaboration)."""

from __future__ import annotations

import enum


class Word(enum.Enum):
    """An enum whose values are the words written in a spec."""

    def __str__(self) -> str:
        return self.value


class Norm(Word):
    RMSNORM = "rmsnorm"
    LAYERNORM = "layernorm"


class Head(Word):
    TIED = "tied"
    UNTIED = "untied"


class Mode(Word):
    BIDIRECTIONAL = "bidirectional"
    CAUSAL = "causal"


class KernelKind(Word):
    LINEAR = "linear"
    GAUSSIAN = "gaussian"
    LAPLACIAN = "laplacian"
    UNIFORM = "uniform"


class Direction(Word):
    APPEND = "append"
    PREPEND = "prepend"
    END_TO_END = "end_to_end"


class Init(Word):
    RANDOM = "random"
    COPY = "copy"  # the trunk neighbour's weights
    IDENTITY = "identity"  # the identity map (LLaMA-Pro)
    MIDDLE = "middle"  # the trunk's middle stack's weights (MIDAS)
    PRETRAINED = "pretrained"  # the next layers of model.pretrained


class Cache(Word):
    OFF = "off"
    MEMORY = "memory"
    DISK = "disk"


class Precision(Word):
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"
    INT8 = "int8"
    NF4 = "nf4"
    FP4 = "fp4"
    NVFP4 = "nvfp4"

    @property
    def quantized(self) -> bool:
        """Quantized formats hold frozen weights only; adapters train on top of them."""
        return self in (Precision.INT8, Precision.NF4, Precision.FP4, Precision.NVFP4)

    @property
    def bits(self) -> float:
        """Storage bits per parameter, block scales included (nf4 with double quantization)."""
        return _BITS[self]


_BITS = {
    Precision.FP32: 32.0,
    Precision.BF16: 16.0,
    Precision.FP16: 16.0,
    Precision.INT8: 8.0,
    Precision.NF4: 4.127,
    Precision.FP4: 4.5,  # no double quantization: an fp32 absmax per 64 values
    Precision.NVFP4: 4.5,
}


class Strategy(Word):
    """What trains in the trunk: nothing, only its adapters, or everything."""

    FROZEN = "frozen"
    ADAPTERS = "adapters"
    FULL = "full"


class Target(Word):
    """Layers a LoRA adapter can wrap: attention projections and ffn projections."""

    Q = "q"
    K = "k"
    V = "v"
    O = "o"  # noqa: E741
    GATE = "gate"
    UP = "up"
    DOWN = "down"


class Pattern(Word):
    """How LoRA rank varies across stacks, in the order they were created."""

    CONSTANT = "constant"
    INCREASING = "increasing"
    DECREASING = "decreasing"
    LINEAR = "linear"


class TimeEmbedding(Word):
    SINUSOIDAL = "sinusoidal"
    LEARNED = "learned"
    NONE = "none"


class Split(Word):
    """Which windows are held out for validation."""

    INTERLEAVED = "interleaved"  # spread evenly through the data
    TAIL = "tail"  # the last fraction of the data, as nanoGPT splits


class Windows(Word):
    """Which windows training reads."""

    FIXED = "fixed"  # the text cut into windows, visited in a seeded order each epoch
    RANDOM = "random"  # windows at random offsets of the training text, drawn with replacement


class LrSchedule(Word):
    COSINE = "cosine"
    LINEAR = "linear"
    CONSTANT = "constant"


class Device(Word):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


class Distributed(Word):
    """How processes share a run (`sw run --nproc N`): each holds the whole model and the
    gradients are averaged (DDP), or the weights that can be are sharded (FSDP2)."""

    DDP = "ddp"
    FSDP = "fsdp"


class Task(Word):
    """Synthetic tasks: learnable sequences with a known answer, for smoke runs."""

    COPY = "copy"
    REVERSE = "reverse"
    SORT = "sort"
    ARITHMETIC = "arithmetic"


class Embeddings(Word):
    """Whether the token embedding and the head train in a stage."""

    TRAIN = "train"
    FROZEN = "frozen"
