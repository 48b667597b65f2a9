"""NVFP4: FP4 (E2M1) values in 16-element blocks, an FP8 (E4M3) scale per block, and one FP32
scale per tensor; two values packed per byte; dequantized on the fly.

Following NVIDIA's definition: the tensor scale puts the largest block scale at the top of the
E4M3 range, s_tensor = amax(|W|) / (6 · 448); a block's scale is amax(|block|) / 6 / s_tensor
rounded to E4M3; a value is W / (s_block · s_tensor) rounded to the nearest E2M1 magnitude
{0, 0.5, 1, 1.5, 2, 3, 4, 6} with its sign. Storage: 4 bits a value plus 8 bits per 16 values
= 4.5 bits per weight, and four bytes per tensor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stackwise_dsl.core.dequantized import dequantized_linear

BLOCK = 16
E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
_MIDPOINTS = (E2M1[1:] + E2M1[:-1]) / 2
E4M3_MAX = 448.0


def quantize(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(codes uint8 (rows, cols/2), block scales float8_e4m3fn (rows, cols/16), tensor scale)
    for a 2-D weight whose columns are a multiple of 16."""
    w = w.float()
    rows, cols = w.shape
    if cols % BLOCK:
        raise ValueError(f"NVFP4 needs a multiple of {BLOCK} columns; got {cols}")
    amax = w.abs().max()
    tensor_scale = (amax / (6.0 * E4M3_MAX)).clamp_min(torch.finfo(torch.float32).tiny)
    blocks = w.view(rows, cols // BLOCK, BLOCK)
    block_scale = (blocks.abs().amax(dim=-1) / 6.0 / tensor_scale).to(torch.float8_e4m3fn)
    scale = block_scale.float() * tensor_scale  # (rows, cols/16)
    scaled = blocks / scale.clamp_min(torch.finfo(torch.float32).tiny).unsqueeze(-1)
    magnitude = torch.bucketize(scaled.abs().clamp(max=6.0), _MIDPOINTS)  # 0..7: nearest E2M1
    codes = (magnitude | ((scaled < 0).to(torch.int64) << 3)).to(torch.uint8).view(rows, cols)
    packed = codes[:, 0::2] | (codes[:, 1::2] << 4)
    return packed, block_scale, tensor_scale.reshape(())


def dequantize(packed: torch.Tensor, block_scale: torch.Tensor, tensor_scale: torch.Tensor,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:  # fmt: skip
    """The weight (rows, cols) the codes stand for: each byte looks up its two values (low
    nibble first) in a 256-entry table, then each block of 16 is scaled."""
    rows = packed.shape[0]
    values = _pair_table(packed.device)[packed.int()].view(rows, -1, BLOCK)
    scale = block_scale.float() * tensor_scale.float()
    return (values * scale.unsqueeze(-1)).view(rows, -1).to(dtype)


_PAIRS: dict[torch.device, torch.Tensor] = {}


def _pair_table(device: torch.device) -> torch.Tensor:
    """(256, 2): the E2M1 values of a byte's low and high nibble."""
    if device not in _PAIRS:
        byte = torch.arange(256)
        _PAIRS[device] = torch.stack([decode_e2m1(byte & 0x0F), decode_e2m1(byte >> 4)], -1).to(
            device
        )
    return _PAIRS[device]


def encode_e2m1(x: torch.Tensor) -> torch.Tensor:
    """4-bit codes of values that are exactly representable (a test round-trips all 16)."""
    magnitude = torch.bucketize(x.abs(), _MIDPOINTS)
    return (magnitude | ((x < 0).to(torch.int64) << 3)).to(torch.uint8)


def decode_e2m1(codes: torch.Tensor) -> torch.Tensor:
    codes = codes.long()
    return E2M1[codes & 0x7] * (1 - 2 * (codes >> 3)).float()


class NVFP4Linear(nn.Linear):
    """A frozen linear layer held in NVFP4 and dequantized in its forward pass.

    It is an nn.Linear (so adapters wrap it like any linear layer) whose weight parameter is
    replaced by packed buffers; input columns are zero-padded to a multiple of 16.
    """

    def __init__(self, weight: torch.Tensor) -> None:
        out_features, in_features = weight.shape
        super().__init__(in_features, out_features, bias=False, device="meta")
        del self.weight
        padded = -in_features % BLOCK
        codes, block_scale, tensor_scale = quantize(F.pad(weight.detach().float(), (0, padded)))
        self.register_buffer("codes", codes)
        self.register_buffer("block_scale", block_scale)
        self.register_buffer("tensor_scale", tensor_scale)

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized weight (out, in); computed on every access, never stored."""
        w = dequantize(self.codes, self.block_scale, self.tensor_scale)
        return w[:, : self.in_features]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dequantized_linear(x, self)

    def storage_bytes(self) -> int:
        return sum(
            b.numel() * b.element_size() for b in (self.codes, self.block_scale, self.tensor_scale)
        )
