"""A local Hugging Face directory's weights, in our names (hf/layout.py), for a model that
starts from them."""

from __future__ import annotations

from pathlib import Path

import torch

from stackwise_dsl.hf import HfError
from stackwise_dsl.hf.layout import Weights, from_hf
from stackwise_dsl.hf.read import Pretrained, _plain


def pretrained_weights(m: Pretrained) -> tuple[Weights, list[Weights]]:
    """The shared weights and every layer of `m` (read by hf/read.py), fp32."""
    from safetensors import SafetensorError, safe_open

    names = {_plain(k): k for k in m.tensors}
    handles: dict[str, object] = {}

    def get(name: str) -> torch.Tensor:
        stored = names[name]
        file = m.tensors[stored][0]
        if file not in handles:
            handles[file] = safe_open(str(Path(m.path) / file), framework="pt")
        return handles[file].get_tensor(stored)

    try:
        return from_hf(m.family, get, m.layers, tied=m.tied, d_model=m.d_model)
    except (OSError, SafetensorError) as e:
        raise HfError(f"the weights in {m.path} cannot be read ({e})") from None
