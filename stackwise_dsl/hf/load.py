"""A local Hugging Face directory's weights, in our names (hf/layout.py), for a model that
starts from them."""

from __future__ import annotations

from pathlib import Path

import torch

from stackwise_dsl.hf import HfError
from stackwise_dsl.hf.layout import Weights, from_hf
from stackwise_dsl.hf.read import EMBEDDING, Pretrained, _plain


def pretrained_weights(m: Pretrained) -> tuple[Weights, list[Weights]]:
    """The shared weights and every layer of `m` (read by hf/read.py), fp32."""
    return _reading(m, lambda get: from_hf(m.family, get, m.layers, tied=m.tied,
                                           d_model=m.d_model))  # fmt: skip


def pretrained_embedding(m: Pretrained) -> torch.Tensor:
    """`m`'s token embedding (vocab x its width), fp32."""
    return _reading(m, lambda get: get(EMBEDDING[m.family]).detach().float().contiguous())


def _reading(m: Pretrained, read):
    """read(get), where get(name) is the tensor `name` of `m`'s safetensors files."""
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
        return read(get)
    except (OSError, SafetensorError) as e:
        raise HfError(f"the weights in {m.path} cannot be read ({e})") from None


def pretrained_layers(plan) -> dict[int, int]:
    """For each stack a stage creates with `init = pretrained`: the first pretrained layer it
    takes (stacks in rack order, input side first, take the layers in order)."""
    from stackwise_dsl.ir.enums import Init

    out, taken = {}, 0
    for stack in sorted(plan.stacks, key=lambda s: s.position):
        if plan.stages[stack.created_in - 1].init is Init.PRETRAINED:
            out[stack.position] = taken
            taken += len(stack.blocks)
    return out


def pretrained_store(plan):
    """The weight store a run from `plan.model.pretrained` starts with: the directory's
    embedding, positions (the first `context`), final norm and head, the rest of the rack's
    shared weights as a new run draws them, and the `init = pretrained` stacks' masters from
    its layers. From `plan.model.embedding`: its token embedding alone. HfError when the
    directory cannot be used."""
    from stackwise_dsl.core.model import Rack
    from stackwise_dsl.core.stage_model import shared_state
    from stackwise_dsl.hf.read import read_pretrained
    from stackwise_dsl.runtime.weights import Store

    if plan.model.embedding is not None:
        m = read_pretrained(plan.model.embedding, embedding_only=True)
        shared, layers = {"embed.weight": pretrained_embedding(m)}, []
    else:
        m = read_pretrained(plan.model.pretrained)
        shared, layers = pretrained_weights(m)
    if "positions.weight" in shared:
        shared["positions.weight"] = shared["positions.weight"][: plan.model.context].clone()
    store = Store()
    with torch.random.fork_rng(devices=[]):  # the rack's modules draw; leave the run's RNG
        store.shared.update(shared_state(Rack(plan)))
    for name, tensor in shared.items():
        if name not in store.shared or store.shared[name].shape != tensor.shape:
            raise HfError(f"{m.path}: {name} is {list(tensor.shape)}, the model needs "
                          f"{list(store.shared.get(name, tensor).shape)}")  # fmt: skip
        store.shared[name] = tensor
    for position, first in pretrained_layers(plan).items():
        blocks = plan.stacks[position].blocks
        if first + len(blocks) > m.layers:
            raise HfError(f"{m.path} has {m.layers} layers; the stacks made with init = "
                          f"pretrained need {first + len(blocks)}")  # fmt: skip
        store.stacks[position] = {f"blocks.{i}.{k}": v for i in range(len(blocks))
                                  for k, v in layers[first + i].items()}  # fmt: skip
    return store
