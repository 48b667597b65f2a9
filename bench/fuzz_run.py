"""What `sw check` passes, `sw run` runs: draw specs, keep those the checks pass, train every
stage of each for one step on a small synthetic task, and count the failures.

    python bench/fuzz_run.py [--examples 300] [--seed 0] [--max-stacks 3] [--embedding]

`--embedding` puts every drawn spec over a frozen pretrained embedding (a tiny random Llama
made here, whose tokenizer holds <eos> and <mask>; `testing.with_pretrained_embedding`).

Prints one line per failure (the spec as text and the error) and a summary; exits 1 when any
spec that passed `sw check` failed to run. tests/runtime/test_check_implies_run.py runs the
same property on a few examples in CI."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from pathlib import Path

from common import machine
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from stackwise_dsl import testing
from stackwise_dsl.checks import run_checks
from stackwise_dsl.ir.printer import print_spec
from stackwise_dsl.machine.host import Host


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-stacks", type=int, default=3)
    parser.add_argument("--embedding", action="store_true")
    args = parser.parse_args()
    counts = {"drawn": 0, "refused by check": 0, "ran": 0, "failed": 0}
    host = Host(cuda=False, data=())
    tiny = None
    if args.embedding:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.hf.tiny import make

        host = Host(cuda=False)  # the directory and its tokenizer file are looked at
        tiny = str(make("llama", Path(tempfile.mkdtemp()) / "tiny", layers=1,
                        specials=("<eos>", "<mask>")))  # fmt: skip
    started = time.perf_counter()

    @seed(args.seed)
    @settings(max_examples=args.examples, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(st.data())
    def probe(data):
        spec = testing.on_small_data(data.draw(testing.specs(max_stacks=args.max_stacks)))
        if tiny is not None:
            spec = testing.with_pretrained_embedding(spec, tiny, width=64, vocab=258)
        counts["drawn"] += 1
        if any(d.is_error for d in run_checks(spec, host)):
            counts["refused by check"] += 1
            return
        with tempfile.TemporaryDirectory() as tmp:
            try:
                testing.one_step_per_stage(spec, Path(tmp) / "run")
                counts["ran"] += 1
            except Exception:  # a failure of the property: show it, keep counting
                counts["failed"] += 1
                print(f"--- failure {counts['failed']}\n{print_spec(spec)}")
                traceback.print_exc(limit=-3, file=sys.stdout)

    probe()
    seconds = time.perf_counter() - started
    print(f"machine: {machine(with_torch=True)}")
    print(f"command: python bench/fuzz_run.py --examples {args.examples} --seed {args.seed} "
          f"--max-stacks {args.max_stacks}" + (" --embedding" if tiny else ""))  # fmt: skip
    print(", ".join(f"{k} {v}" for k, v in counts.items()) + f"; {seconds:.0f} s")
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
