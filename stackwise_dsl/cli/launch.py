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
from pathlib import Path

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
    """N, or MIN:MAX with MIN at most MAX, whole numbers above 0."""
    parts = nnodes.split(":")
    whole = len(parts) in (1, 2) and all(x.isdigit() and int(x) > 0 for x in parts)
    return whole and int(parts[0]) <= int(parts[-1])


def refusal(how: Launch) -> str | None:
    """What is wrong with a launch's options before anything starts (None: nothing)."""
    from stackwise_dsl.core.errors import RunError
    from stackwise_dsl.core.world import timeout_s

    try:
        if how.several:
            timeout_s()
    except RunError as e:
        return str(e)
    if how.nnodes is not None and not nnodes_valid(how.nnodes):
        return (f"--nnodes {how.nnodes!r} is not N or MIN:MAX (whole numbers above 0, MIN at "
                "most MAX)")  # fmt: skip
    several = how.nnodes not in (None, "1", "1:1")
    if several and how.rdzv_endpoint is None:
        return ("several machines meet at an address: give --rdzv-endpoint HOST:PORT (the "
                "same on every machine)")  # fmt: skip
    if how.rdzv_endpoint is not None and not _endpoint_valid(how.rdzv_endpoint):
        return (f"--rdzv-endpoint {how.rdzv_endpoint!r} is not HOST:PORT (a port from 1 to "
                "65535)")  # fmt: skip
    if how.rdzv_id is not None and how.rdzv_endpoint is None:
        return "--rdzv-id names a job at a meeting point: give --rdzv-endpoint HOST:PORT too"
    if how.node_rank is not None:
        nodes = int((how.nnodes or "1").split(":")[-1])
        if how.node_rank >= nodes:
            return (f"--node-rank {how.node_rank} is not below the number of machines "
                    f"({how.nnodes or 1})")  # fmt: skip
    return None


def _endpoint_valid(endpoint: str) -> bool:
    host, _, port = endpoint.rpartition(":")
    return bool(host) and port.isdigit() and 1 <= int(port) <= 65535


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
    if how.rdzv_endpoint is not None:
        print(f"waiting for {how.nnodes} machines at {how.rdzv_endpoint} ...", file=sys.stderr)
    try:
        run(args)
    except (KeyboardInterrupt, SignalException):
        began = run_dir is not None and (Path(run_dir) / "plan.json").exists()
        print("interrupted" + (f"; continue with --resume {run_dir}" if began else ""),
              file=sys.stderr)  # fmt: skip
        return 130
    except ChildFailedError as e:
        rank, failure = _cause(e.failures)
        if failure.exitcode < 0:  # killed by a signal, or crashed without a word
            print(f"error: process rank {rank} stopped with signal {-failure.exitcode}; the "
                  "job was stopped", file=sys.stderr)  # fmt: skip
            return 1
        return failure.exitcode
    except Exception as e:  # the rendezvous: a machine that never came, an address not there
        said = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"error: the processes could not meet ({type(e).__name__}: {said[:300]})",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


def _cause(failures: dict) -> tuple:
    """The failure that stopped the job: not one the launcher ended itself (SIGTERM, after
    another failed), the earliest of those."""
    term = -15
    chosen = [x for x in failures.items() if x[1].exitcode != term] or list(failures.items())
    return min(chosen, key=lambda x: (x[1].timestamp, x[0]))
