"""Parse + elaborate + check throughput on a generated 1,000-stack spec, in spec lines per
second (imports and the parser tables are loaded before timing). Target (issue 2): 5,000.

    python bench/parse_throughput.py [--stacks 1000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from common import machine

ROOT = Path(__file__).resolve().parent.parent

_ATTENTIONS = [
    "gqa(heads = 8, kv_heads = 2, mode = bidirectional)",
    "mha(heads = 4)",
    "mla(heads = 8, q_rank = 128, kv_rank = 64)",
    "kernel(heads = 4, kernel = laplacian, kernel_dim = 64)",
]


def generate(stacks: int) -> str:
    """A spec with `stacks` stacks, each of its own block; about six lines per stack."""
    lines = [
        "# generated: one block per stack",
        "let d = 256",
        "",
        "model { d_model = d, context = 128 }",
        "",
    ]
    for i in range(stacks):
        lines += [
            f"block b{i} {{",
            f"  attention = {_ATTENTIONS[i % len(_ATTENTIONS)]}",
            f"  ffn = swiglu(hidden = {2 + i % 3} * d)",
            "}",
            f"stack s{i} = {1 + i % 2} x b{i}",
        ]
    rack = " + ".join(f"s{i}" for i in range(stacks))
    lines += [
        "",
        "objective = masked_diffusion(time = depth, mask = linear(0.9 -> 0.15))",
        f"grow prepend {rack} {{",
        "  steps = 100",
        "  new { precision = bf16, lora(rank = 16, alpha = 32) }",
        "  trunk { frozen, precision = nf4, lora(rank = 8, pattern = decreasing) }",
    ]
    lines += [f"  stage {k} {{ steps = 200 }}" for k in range(1, stacks + 1, 50)]
    lines += ["}", "data { source = stdlib, batch = 16 }", "run { seed = 0 }"]
    return "\n".join(lines) + "\n"


def measure(stacks: int, repeats: int) -> dict:
    from stackwise_dsl.checks import CPU_ONLY
    from stackwise_dsl.frontend import check_text

    text = generate(stacks)
    n_lines = text.count("\n")
    check_text(text, "warmup.sw", host=CPU_ONLY)  # load the parser tables once
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        report = check_text(text, "generated.sw", host=CPU_ONLY)
        times.append(time.perf_counter() - start)
    if not report.ok:
        raise SystemExit(f"generated spec has errors: {report.diagnostics[:3]}")
    best, median = min(times), statistics.median(times)
    return {
        "machine": machine(),
        "stacks": stacks,
        "lines": n_lines,
        "median_s": round(median, 3),
        "lines_per_s_median": round(n_lines / median),
        "lines_per_s_best": round(n_lines / best),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stacks", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    result = measure(args.stacks, args.repeats)
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "parse_throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
