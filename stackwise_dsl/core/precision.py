"""Precision of a stack in a stage, applied to its modules.

- fp32: as is. bf16 / fp16 that train: fp32 master weights, autocast around the stack.
- bf16 / fp16 that stay frozen: weights stored in that dtype; the stack computes in it,
  except bf16 on a CPU without native bf16: stored in bf16, computed in fp32 (emulated bf16
  matmuls measured 55x slower than fp32 here).
- int8 (frozen): bitsandbytes LLM.int8 on CUDA; on the CPU a weight-only int8 with one scale
  per output row, dequantized on the fly (documented fallback: bitsandbytes' int8 matmul is
  CUDA-only).
- nf4 / fp4 (frozen): bitsandbytes' 4-bit formats (nf4 with double quantization), dequantized
  on the fly by Packed4bitLinear on every device and CPU kind.
- nvfp4 (frozen): NVFP4Linear (core/nvfp4.py).
fp16 needs CUDA: on the CPU it runs in fp32 (`sw check` warns, SW402).
"""

from __future__ import annotations

import contextlib
import logging

import torch
import torch.nn.functional as F
from torch import nn

from stackwise_dsl.core.dequantized import dequantized_linear
from stackwise_dsl.core.nvfp4 import NVFP4Linear
from stackwise_dsl.ir.enums import Precision
from stackwise_dsl.lower import plan as p
from stackwise_dsl.lower.dispatch import frozen_key, pick

DTYPES = {Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16}


def compute_dtype(precision: Precision, device: torch.device) -> torch.dtype | None:
    """The autocast / storage dtype of a float precision on this device (None: fp32)."""
    if precision is Precision.FP16 and device.type != "cuda":
        return None
    return DTYPES.get(precision)


def emulated_bf16(device: torch.device) -> bool:
    """A CPU without native bf16: bf16 matmuls there are emulated, tens of times slower."""
    from stackwise_dsl.machine.probe import cpu_bf16

    return device.type == "cpu" and cpu_bf16() is False


def autocast(precision: Precision, device: torch.device, *, frozen: bool = False):
    """The context a stack runs in. A frozen bf16 stack on a CPU without native bf16 runs
    in fp32 from its bf16-stored weights (see `freeze_into`), so it gets none."""
    if frozen and precision is Precision.BF16 and emulated_bf16(device):
        return contextlib.nullcontext()
    dtype = compute_dtype(precision, device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def freeze_into(module: nn.Module, precision: Precision, device: torch.device) -> None:
    """Hold a frozen module's linear layers (or all its weights) in `precision`, in place:
    quantized formats and bf16 on a CPU without native bf16 as compact layers
    (FROZEN_LINEARS), other float precisions by casting the linear layers."""
    if precision.quantized or (precision is Precision.BF16 and emulated_bf16(device)):
        for name, linear in list(module.named_modules()):
            if type(linear) is nn.Linear:
                parent, _, leaf = name.rpartition(".")
                owner = module.get_submodule(parent) if parent else module
                setattr(owner, leaf, quantized_linear(linear, precision, device))
        return
    dtype = compute_dtype(precision, device)
    if dtype is not None:  # the linear layers hold almost every weight; norms stay fp32
        for linear in module.modules():
            if isinstance(linear, nn.Linear):
                linear.to(dtype)


def quantized_linear(linear: nn.Linear, precision: Precision, device: torch.device) -> nn.Module:
    """The compact frozen layer holding `linear`'s weight in `precision`."""
    make = pick(FROZEN_LINEARS, frozen_key(precision), "frozen precision")
    return make(linear.weight.detach().float(), device)


def _nvfp4(weight: torch.Tensor, device: torch.device) -> nn.Module:
    return NVFP4Linear(weight).to(device)


def _nf4(weight: torch.Tensor, device: torch.device) -> nn.Module:
    return _bnb_4bit(weight, "nf4", device)


def _fp4(weight: torch.Tensor, device: torch.device) -> nn.Module:
    return _bnb_4bit(weight, "fp4", device)


def _bnb_4bit(weight: torch.Tensor, quant_type: str, device: torch.device) -> nn.Module:
    return Packed4bitLinear(weight.to(device), quant_type)


def quiet_bitsandbytes() -> None:
    """Keep bitsandbytes' warnings off the terminal, before it is imported (by us or by peft).
    On CPUs with AVX-512 BF16 it logs at import that the optional `kernels` package is missing,
    for a GEMV kernel this runtime never uses (see Packed4bitLinear). Its errors still show."""
    logger = logging.getLogger("bitsandbytes")
    if logger.level < logging.ERROR:  # setLevel clears every logger's cache: only once
        logger.setLevel(logging.ERROR)


def import_bitsandbytes():
    """bitsandbytes, imported quietly."""
    quiet_bitsandbytes()
    import bitsandbytes

    return bitsandbytes


def _int8(weight: torch.Tensor, device: torch.device) -> nn.Module:
    if device.type == "cuda":
        bnb = import_bitsandbytes()

        out_features, in_features = weight.shape
        layer = bnb.nn.Linear8bitLt(in_features, out_features, bias=False, has_fp16_weights=False)
        layer.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
        return layer.to(device)
    return RowInt8Linear(weight).to(device)


def _bf16(weight: torch.Tensor, device: torch.device) -> nn.Module:
    return StoredBf16Linear(weight).to(device)


class StoredBf16Linear(nn.Linear):
    """A frozen linear layer stored in bf16 and computed in fp32 (for CPUs that would
    emulate bf16 matmuls): half the memory of fp32, fp32 speed, bf16-rounded weights."""

    def __init__(self, weight: torch.Tensor) -> None:
        out_features, in_features = weight.shape
        super().__init__(in_features, out_features, bias=False, device="meta")
        del self.weight
        self.register_buffer("stored", weight.to(torch.bfloat16))

    @property
    def weight(self) -> torch.Tensor:
        return self.stored.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dequantized_linear(x, self)


class RowInt8Linear(nn.Linear):
    """Weight-only int8 with one fp32 scale per output row (the CPU stand-in for LLM.int8)."""

    def __init__(self, weight: torch.Tensor) -> None:
        out_features, in_features = weight.shape
        super().__init__(in_features, out_features, bias=False, device="meta")
        del self.weight
        scale = (weight.abs().amax(dim=1, keepdim=True) / 127.0).clamp_min(1e-12)
        self.register_buffer("qweight", torch.round(weight / scale).to(torch.int8))
        self.register_buffer("scale", scale)

    @property
    def weight(self) -> torch.Tensor:
        return self.qweight.float() * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dequantized_linear(x, self)


class Packed4bitLinear(nn.Linear):
    """A frozen linear layer in bitsandbytes' 4-bit formats (nf4 with double quantization,
    fp4; absmax per 64 values), dequantized on the fly like the other compact layers.

    It quantizes and dequantizes with bitsandbytes' functions but does not run its Linear4bit:
    on CPUs with AVX-512 BF16, Linear4bit repacks its weight at the first forward in eval mode
    for a bf16 GEMV kernel that passes no gradient to its input, computes about 0.3% away from
    the dequantized weight, and fails on widths that are not multiples of 64 (inputs) and 32
    (outputs). Here every CPU and CUDA takes one path: any width, the same weights in training
    and evaluation, and the gradient of the dequantized weight.

    The weight is quantized as one flat row: bitsandbytes 0.50's native CPU kernel
    dequantizes a matrix whose rows are not whole 64-value blocks (widths 32 and 96, say)
    with the wrong block scales on CPUs with AVX-512 (errors of the weight's own size),
    while its plain path reads the same bytes right. One row is read right by both."""

    def __init__(self, weight: torch.Tensor, quant_type: str) -> None:
        out_features, in_features = weight.shape
        super().__init__(in_features, out_features, bias=False, device="meta")
        del self.weight
        functional = import_bitsandbytes().functional
        # bitsandbytes' CPU kernel dequantizes rows of even length; for odd ones it falls
        # back to code it compiles with torch.compile per shape (seconds, and dynamo's
        # warnings), so an odd row gets a zero column, dropped again in `weight`.
        stored = F.pad(weight.float(), (0, in_features % 2)).flatten()
        packed, state = functional.quantize_4bit(
            stored, blocksize=64, quant_type=quant_type, compress_statistics=quant_type == "nf4"
        )
        self.register_buffer("packed", packed)
        self.quant_state = state

    @property
    def weight(self) -> torch.Tensor:
        functional = import_bitsandbytes().functional
        flat = functional.dequantize_4bit(self.packed, self.quant_state)
        return flat.view(self.out_features, -1)[:, : self.in_features]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dequantized_linear(x, self)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self.quant_state.to(self.packed.device)  # its tensors are not buffers
        return self


FROZEN_LINEARS = {
    "bf16": _bf16,
    "int8": _int8,
    "nf4": _nf4,
    "fp4": _fp4,
    "nvfp4": _nvfp4,
}


def storage_bytes(module: nn.Module) -> int:
    """Bytes a module's weights occupy as stored: parameters and buffers, and for 4-bit
    weights their quantization state (absmax per 64-value block; with double quantization
    an 8-bit absmax plus an fp32 absmax per 256 blocks, the code tables and an offset).
    Tensors shared between layers count once."""
    tensors = [*module.parameters(), *module.buffers()]
    for layer in module.modules():
        state = layer.quant_state if isinstance(layer, Packed4bitLinear) else None
        while state is not None:
            tensors += [state.absmax, state.code, state.offset]
            state = state.state2 if state.nested else None
    seen: set[int] = set()
    total = 0
    for tensor in tensors:
        if isinstance(tensor, torch.Tensor) and id(tensor) not in seen:
            seen.add(id(tensor))
            total += tensor.numel() * tensor.element_size()
    return total


def loss_scaler(parts, device: torch.device) -> torch.amp.GradScaler:
    """Dynamic loss scaling where a stack trains in fp16 on CUDA; elsewhere the scaler is
    disabled, a pass-through (`scale` gives the loss, `step` steps): fp16 runs in fp32 on the
    CPU, and bf16 needs none."""
    fp16 = any(x.precision is Precision.FP16 and x.trains is p.Trains.FULL for x in parts)
    return torch.amp.GradScaler("cuda", enabled=fp16 and device.type == "cuda")
