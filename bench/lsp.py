"""How fast `sw lsp` answers an edit, and whether its memory stays flat.

    python bench/lsp.py [--edits 200] [--memory-edits 1000]

A spec of about 300 lines and one of about 5,000 (blocks, stacks and lets, as a large spec
has them) are opened in `sw lsp`, spoken to over JSON-RPC as an editor does
(tests/lsp/client.py). Latency: from sending a change (a digit of one `let` changed, in place)
to the diagnostics of that version arriving, median and 90th percentile over the edits.
Bursts: ten changes sent back to back, then the time until the last one's diagnostics (the
older checks are dropped, so the last does not wait for them all). Memory: the server's
resident memory after the first edit and after `--memory-edits` edits. Prints the table that
docs/benchmarks.md holds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import machine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.lsp.client import Client

HEAD = """model { d_model = 256, context = 128 }
objective = mlm
data { source = synthetic(task = copy), batch = 8 }
optimizer = adamw(lr = 3e-4, warmup = 10)
run { seed = 0, log every 10 steps }
"""


def spec_of(lines: int) -> str:
    """A valid spec of about `lines` lines: groups of a let, a block and a stack."""
    out = [HEAD]
    k = 0
    while sum(x.count("\n") for x in out) < lines - 6:
        out.append(
            f"let w{k} = {k % 7 + 1}\n"
            f"block b{k} {{\n"
            f"  attention = gqa(heads = 8, kv_heads = 2, mode = bidirectional)\n"
            f"  ffn = swiglu(hidden = 4 * 256)\n"
            f"  residual_gain = 1.0\n"
            f"}}\n"
            f"stack s{k} = w{k} x b{k}\n\n"
        )
        k += 1
    grown = " + ".join(f"s{i}" for i in range(k))
    out.append(f"grow append {grown} {{\n  steps = 100\n  trunk {{ frozen }}\n}}\n")
    return "".join(out)


def rss(pid: int) -> int:
    """Resident memory of a process, bytes (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def edit(text: str, version: int) -> tuple[dict, str, str]:
    """Change the first let's value in place (one character): the range, the new character,
    the new text."""
    i = text.index("let w0 = ") + len("let w0 = ")
    digit = str(version % 7 + 1)
    line = text[:i].count("\n")
    column = i - (text.rfind("\n", 0, i) + 1)
    where = {"start": {"line": line, "character": column},
             "end": {"line": line, "character": column + 1}}  # fmt: skip
    return where, digit, text[:i] + digit + text[i + 1 :]


def latency(client: Client, path: Path, text: str, edits: int, first: int) -> list[float]:
    """Seconds from each change to its diagnostics."""
    out = []
    for version in range(first, first + edits):
        where, digit, text = edit(text, version)
        started = time.perf_counter()
        client.change(path, version, digit, where)
        found = client.diagnostics(path, version, timeout=60)
        out.append(time.perf_counter() - started)
        assert found == [], found
    return out


def burst(client: Client, path: Path, text: str, first: int, size: int = 10) -> float:
    """Seconds from the first of `size` changes sent back to back to the last one's
    diagnostics."""
    started = time.perf_counter()
    for version in range(first, first + size):
        where, digit, text = edit(text, version)
        client.change(path, version, digit, where)
    client.diagnostics(path, first + size - 1, timeout=120)
    return time.perf_counter() - started


def full_check(text: str, path: Path, repeats: int = 5) -> float:
    """The baseline, in this process: seconds for a whole `sw check` of the text (parse from
    scratch, elaborate, check), the median of `repeats`."""
    from stackwise_dsl.frontend import check_text
    from stackwise_dsl.machine.host import Host

    host = Host.detect()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        check_text(text, str(path), host=host)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=200)
    parser.add_argument("--memory-edits", type=int, default=1000)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        client = Client(root)
        client.initialize(root)
        try:
            for lines, edits in ((300, args.edits), (5000, max(args.edits // 10, 5))):
                text = spec_of(lines)
                path = root / f"spec{lines}.sw"
                path.write_text(text)
                started = time.perf_counter()
                client.open(path, text)
                assert client.diagnostics(path, 1, timeout=120) == []
                opened = time.perf_counter() - started
                times = latency(client, path, text, edits, 2)
                bursts = [burst(client, path, text, 1000 + 10 * i) for i in range(3)]
                rows.append((text.count("\n"), opened, times, bursts, full_check(text, path)))
            # memory: the 300-line spec, edited again and again
            text = spec_of(300)
            path = root / "memory.sw"
            path.write_text(text)
            client.open(path, text)
            client.diagnostics(path, 1, timeout=60)
            latency(client, path, text, 1, 2)
            after_first = rss(client.process.pid)
            latency(client, path, text, args.memory_edits - 1, 3)
            after_all = rss(client.process.pid)
        finally:
            client.close()
    print(f"machine: {machine(with_torch=False)}")
    print(f"command: python bench/lsp.py --edits {args.edits} --memory-edits "
          f"{args.memory_edits}")  # fmt: skip
    print("| Spec | open | edits | median | p90 | burst of 10, to the last one's diagnostics "
          "| baseline: a whole `sw check` of the text | median / baseline |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for lines, opened, times, bursts, full in rows:
        q = statistics.quantiles(times, n=10)
        median = statistics.median(times)
        print(f"| {lines:,} lines | {opened * 1000:.0f} ms | {len(times)} | "
              f"{median * 1000:.1f} ms | {q[-1] * 1000:.1f} ms | "
              f"{', '.join(f'{b * 1000:.0f} ms' for b in bursts)} | {full * 1000:.1f} ms | "
              f"{median / full:.2f} |")  # fmt: skip
    ratio = after_all / after_first
    print(f"memory: {after_first / 2**20:.1f} MiB after the first edit, "
          f"{after_all / 2**20:.1f} MiB after {args.memory_edits} ({ratio:.3f}x)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
