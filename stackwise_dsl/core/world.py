"""The processes a run is spread over, on torch.distributed.

One process is a world of one: nothing is wrapped, nothing is exchanged, and the loop is the
single-process loop. Under torchrun (WORLD_SIZE above 1) every process ("rank") builds the
same model from the same seed and reads the same stream of windows; each micro-batch is cut
into equal slices, one per rank, and DistributedDataParallel averages the gradients of the
weights that train (frozen weights, a 4-bit trunk among them, are never registered with it,
so never sent). The global batch, the masks (drawn per window) and the noise (drawn per
micro-batch) are those of one process, so a run's numbers do not depend on how many
processes share it. Gloo on the CPU, NCCL on CUDA.
"""

from __future__ import annotations

import contextlib
import datetime
import os

import attrs
import torch
import torch.distributed as dist

# how long a rank waits for the others at a collective before the job stops with an error
# (a rank that died is noticed by torchrun sooner; this bounds every other wait)
TIMEOUT_S = float(os.environ.get("SW_DIST_TIMEOUT", "600"))


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

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """`module` with its trainable weights' gradients averaged over the ranks (DDP); the
        module itself in a world of one. Weights that do not train and buffers are left out
        of DDP altogether: they are equal on every rank by construction."""
        if self.size == 1:
            return module
        from torch.nn.parallel import DistributedDataParallel as DDP

        ignored = [k for k, x in module.named_parameters() if not x.requires_grad]
        ignored += [k for k, _ in module.named_buffers()]
        DDP._set_params_and_buffers_to_ignore_for_model(module, ignored)
        cuda = next(module.parameters()).is_cuda
        # every trainable weight of a stage's model takes part in its loss (tested for each
        # attention kind, objective and growth), so DDP need not search for idle ones
        return DDP(module, device_ids=[torch.cuda.current_device()] if cuda else None)


def accumulating(net: torch.nn.Module, last: bool):
    """DDP exchanges gradients on the last micro-batch of a step only."""
    if last or not hasattr(net, "no_sync"):
        return contextlib.nullcontext()
    return net.no_sync()


def _collective_device() -> torch.device:
    return torch.device("cuda") if dist.get_backend() == "nccl" else torch.device("cpu")


def joined(cuda: bool) -> World:
    """This process's place: a world of one, or (under torchrun, WORLD_SIZE above 1) its rank
    in the process group, joined here (gloo on the CPU, NCCL on CUDA) with a bounded timeout."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(local)
        dist.init_process_group(
            "nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=TIMEOUT_S)
        )
    return World(rank=dist.get_rank(), size=dist.get_world_size(), local_rank=local)
