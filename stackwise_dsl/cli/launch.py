"""`sw run --nproc N`: the same run on N processes, started by torch's elastic launcher
(torch.distributed.run, what `torchrun` runs), each process running `python -m stackwise_dsl
run ...` with the arguments the user gave. Options for several machines (`--nnodes`,
`--node-rank`, `--rdzv-endpoint`, `--rdzv-id`) pass through to the launcher unchanged.

A process started so finds WORLD_SIZE, RANK and LOCAL_RANK in its environment (`inside`):
it joins the process group (core/world.py) and runs its share of the run.
"""

from __future__ import annotations

import os
import sys

import attrs


@attrs.frozen
class Launch:
    """What the launcher is asked for: processes per machine, machines, and where they meet."""

    nproc: int = 1
    nnodes: str | None = None
    node_rank: int | None = None
    rdzv_endpoint: str | None = None
    rdzv_id: str | None = None

    @property
    def several(self) -> bool:
        """Whether the run spreads over more than this one process."""
        return self.nproc > 1 or self.nnodes not in (None, "1", "1:1")

    def world_size(self) -> int | None:
        """Processes in all, when the number of machines is fixed (None for MIN:MAX)."""
        nodes = self.nnodes or "1"
        if ":" in nodes:
            low, high = nodes.split(":", 1)
            if low != high:
                return None
            nodes = low
        return self.nproc * int(nodes)

    def launcher_args(self) -> list[str]:
        args = ["--nproc-per-node", str(self.nproc)]
        if self.nnodes is not None:
            args += ["--nnodes", self.nnodes]
        if self.node_rank is not None:
            args += ["--node-rank", str(self.node_rank)]
        if self.rdzv_endpoint is not None:
            args += ["--rdzv-backend", "c10d", "--rdzv-endpoint", self.rdzv_endpoint]
            if self.rdzv_id is not None:
                args += ["--rdzv-id", self.rdzv_id]
        elif self.nnodes in (None, "1", "1:1"):
            args += ["--standalone"]  # one machine: a free port on localhost
        return args


def inside() -> bool:
    """Whether this process is one of several a launcher started."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def nnodes_valid(nnodes: str) -> bool:
    parts = nnodes.split(":")
    return len(parts) in (1, 2) and all(x.isdigit() and int(x) > 0 for x in parts)


def launch(how: Launch, worker_args: list[str], run_dir: str | None = None) -> int:
    """Run `python -m stackwise_dsl run WORKER_ARGS` on the launcher's processes and wait;
    0 when every process finished well, else the first failure's exit code (the failing
    process has printed its error, with its rank); 130 when interrupted (Ctrl-C), saying
    how to go on in `run_dir`."""
    import logging

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    # the launcher's notes; a failing process says what failed itself, with its rank
    for name in [*logging.root.manager.loggerDict, "torch.distributed"]:
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    if "OMP_NUM_THREADS" not in os.environ:  # the machine's cores, shared (torchrun: 1 each)
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // how.nproc))
    args = parse_args(
        [*how.launcher_args(), "--max-restarts", "0", "-m", "stackwise_dsl", "run", *worker_args]
    )
    try:
        run(args)
    except (KeyboardInterrupt, SignalException):
        where = f"; continue with --resume {run_dir}" if run_dir else ""
        print(f"interrupted{where}", file=sys.stderr)
        return 130
    except ChildFailedError as e:
        first = e.get_first_failure()[1]
        code = first.exitcode if isinstance(first.exitcode, int) and first.exitcode > 0 else 1
        if first.exitcode < 0:  # killed by a signal, or crashed without a word
            print(
                f"error: process rank {first.rank} stopped with signal {-first.exitcode}; the "
                "job was stopped",
                file=sys.stderr,
            )
        return code
    return 0
