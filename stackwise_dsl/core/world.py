"""The processes a run is spread over, on torch.distributed.

One process is a world of one: nothing is wrapped, nothing is exchanged, and the loop is the
single-process loop. Under torchrun (WORLD_SIZE above 1) every process ("rank") builds the
same model from the same seed and reads the same stream of windows; each micro-batch is cut
into equal slices, one per rank. The global batch, the masks (drawn per window) and the noise
(drawn per micro-batch) are those of one process, so a run's numbers do not depend on how
many processes share it. Gloo on the CPU, NCCL on CUDA.

- `ddp` (DistributedDataParallel): every rank holds the whole model; the gradients of the
  weights that train are averaged (frozen weights, a 4-bit trunk among them, are never
  registered with it, so never sent).
- `fsdp` (FSDP2's `fully_shard`, per stack bottom-up, then the root): the weights, their
  gradients and the optimizer's state are sharded across the ranks. Not sharded, whole on
  every rank: quantized weights (held packed as buffers, which FSDP2 never cuts; their
  adapters are sharded), and the frozen stacks of a stage with an activation cache (each
  rank runs them for its own cache misses, which differ between ranks).
"""

from __future__ import annotations

import contextlib
import datetime
import os

import attrs
import torch
import torch.distributed as dist

from stackwise_dsl.core.errors import RunError
from stackwise_dsl.ir.enums import Distributed

# how long a rank waits for the others at a collective before the job stops with an error
# (a rank that died is noticed by torchrun sooner; this bounds every other wait); seconds,
# SW_DIST_TIMEOUT in the environment to change
TIMEOUT_S = 600.0


def timeout_s() -> float:
    """SW_DIST_TIMEOUT, or TIMEOUT_S. RunError for a value that is not seconds above 0."""
    text = os.environ.get("SW_DIST_TIMEOUT")
    if text is None:
        return TIMEOUT_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0 or seconds == float("inf"):
        raise RunError(f"SW_DIST_TIMEOUT={text!r} is not a number of seconds above 0")
    return seconds


@attrs.frozen
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """The rank that writes: logs, metrics, checkpoints, the summary."""
        return self.rank == 0

    def share(self, n: int) -> slice:
        """This rank's rows of a micro-batch of `n` windows (n divides by the size)."""
        k = n // self.size
        return slice(self.rank * k, (self.rank + 1) * k)

    def total(self, x: float) -> float:
        """The sum of `x` over the ranks (float64; `x` itself in a world of one)."""
        if self.size == 1:
            return x
        t = torch.tensor([x], dtype=torch.float64, device=_collective_device())
        dist.all_reduce(t)
        return float(t.item())

    def from_main(self, value):
        """Rank 0's `value`, on every rank (any picklable value)."""
        if self.size == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def close(self) -> None:
        """Leave the process group (at the end of a run, whatever ended it)."""
        if self.size > 1 and dist.is_initialized():
            dist.destroy_process_group()

    def wrap(self, module: torch.nn.Module, kind: Distributed = Distributed.DDP,
             whole: tuple[torch.nn.Module, ...] = ()) -> torch.nn.Module:  # fmt: skip
        """`module` (a loop.LossOf) shared by the ranks as `kind` says; the module itself in
        a world of one. DDP: its trainable weights' gradients averaged over the ranks, while
        weights that do not train and buffers are left out of DDP altogether (they are equal
        on every rank by construction). FSDP: sharded (`shard`), the stacks in `whole` not."""
        if self.size == 1:
            return module
        if kind is Distributed.FSDP:
            return shard(module, self, whole)
        from torch.nn.parallel import DistributedDataParallel as DDP

        ignored = [k for k, x in module.named_parameters() if not x.requires_grad]
        ignored += [k for k, _ in module.named_buffers()]
        DDP._set_params_and_buffers_to_ignore_for_model(module, ignored)
        cuda = next(module.parameters()).is_cuda
        # every trainable weight of a stage's model takes part in its loss (tested for each
        # attention kind, objective and growth), so DDP need not search for idle ones
        return DDP(module, device_ids=[torch.cuda.current_device()] if cuda else None)


def shard(module: torch.nn.Module, world: World, whole) -> torch.nn.Module:
    """FSDP2: each of the module's stacks (`module.stacks()`, input side first) that is not
    in `whole` becomes one sharding unit, then the module itself (the embeddings, the head,
    the norms). A weight that is not floating point could not be sharded: it stays whole."""
    from torch.distributed.fsdp import fully_shard

    mesh = _mesh(world, next(module.parameters()).device.type)
    kept = {x for x in module.parameters() if not x.is_floating_point()}
    for stack in module.stacks():
        if stack in whole:
            kept |= set(stack.parameters())
        else:
            fully_shard(stack, mesh=mesh, ignored_params=kept & set(stack.parameters()) or None)
    fully_shard(module, mesh=mesh, ignored_params=kept or None)
    return module


_MESHES: dict = {}


def _mesh(world: World, device: str):
    """The ranks as a one-dimensional device mesh (one per device type, made once)."""
    from torch.distributed.device_mesh import init_device_mesh

    if device not in _MESHES:
        _MESHES[device] = init_device_mesh(device, (world.size,))
    return _MESHES[device]


def accumulating(net: torch.nn.Module, last: bool):
    """Gradients are exchanged on the last micro-batch of a step only."""
    if hasattr(net, "set_requires_gradient_sync"):  # FSDP2
        net.set_requires_gradient_sync(last)
        return contextlib.nullcontext()
    if last or not hasattr(net, "no_sync"):
        return contextlib.nullcontext()
    return net.no_sync()


def full(value):
    """A value with every sharded tensor in it (a DTensor) gathered whole: what a checkpoint
    keeps, the same for every number of ranks (a collective: every rank calls it)."""
    if hasattr(value, "full_tensor"):
        return value.full_tensor()
    if isinstance(value, dict):
        return {k: full(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(full(v) for v in value)
    return value


def reshard_state(opt: torch.optim.Optimizer) -> None:
    """After loading a whole optimizer state (a checkpoint's): each tensor of a sharded
    parameter's shape cut as the parameter is."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    for group in opt.param_groups:
        for param in group["params"]:
            if not isinstance(param, DTensor):
                continue
            entry = opt.state.get(param, {})
            for key, value in entry.items():
                if (
                    isinstance(value, torch.Tensor)
                    and not isinstance(value, DTensor)
                    and (value.shape == param.shape)
                ):
                    entry[key] = distribute_tensor(value.to(param.device), param.device_mesh,
                                                   param.placements)  # fmt: skip


def _collective_device() -> torch.device:
    return torch.device("cuda") if dist.get_backend() == "nccl" else torch.device("cpu")


def joined(cuda: bool) -> World:
    """This process's place: a world of one, or (under torchrun, WORLD_SIZE above 1) its rank
    in the process group, joined here (gloo on the CPU, NCCL on CUDA) with a bounded timeout."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    wait = timeout_s()
    if not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(local)
        dist.init_process_group(
            "nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=wait)
        )
    return World(rank=dist.get_rank(), size=dist.get_world_size(), local_rank=local)
