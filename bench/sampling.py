"""Sampling from a causal LM: generation speed with the decoding state against re-reading the
whole sequence at every token, and the size of the state per attention kind.

For each kind a 4-block causal model (d_model 128, context 512, random weights: the speed does
not depend on training) continues a 16-token prompt by N tokens, greedily, both ways; the
outputs must be equal. The state's size is counted after 64 and after 512 tokens.

    python bench/sampling.py [--new 240] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from common import machine

KINDS = {
    "mha": "mha(heads = 4, mode = causal)",
    "gqa": "gqa(heads = 4, kv_heads = 1, mode = causal)",
    "mla": "mla(heads = 4, q_rank = 32, kv_rank = 16, mode = causal)",
    "linear kernel": "kernel(heads = 4, kernel = linear, kernel_dim = 32, mode = causal)",
}


def _model(attention: str):
    from stackwise_dsl.core.stage_model import StageModel
    from stackwise_dsl.frontend import check_text
    from stackwise_dsl.lower import to_plan
    from stackwise_dsl.runtime.weights import Store

    text = (
        "model { d_model = 128, context = 512, vocab = 300 }\n"
        f"block b {{ attention = {attention}, ffn = swiglu(hidden = 512) }}\n"
        "stack s = 2 x b\nobjective = clm\ngrow end_to_end 2 x s { steps = 1 }\n"
    )
    report = check_text(text, "bench.sw")
    assert report.ok, [d.message for d in report.diagnostics]
    plan = to_plan(report.spec, name="bench", vocab=300)
    torch.manual_seed(0)
    return StageModel(plan, plan.stages[0], Store(), torch.device("cpu")).eval()


def _state_numbers(model, length: int) -> int:
    from stackwise_dsl.core.attention import Seen

    seen = Seen()
    ids = torch.randint(0, 256, (1, length), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model.hidden(ids, None, seen=seen)
    return sum(v.numel() for s in seen.states.values() for v in s.values())


def measure(kind: str, new: int) -> dict:
    from stackwise_dsl.core.sampling import continue_text

    model = _model(KINDS[kind])
    prompt = torch.randint(0, 256, (1, 16), generator=torch.Generator().manual_seed(0))
    out, seconds = {}, {}
    for cached in (True, False):
        continue_text(model, prompt, 8, cached=cached, temperature=0)  # warm up
        start = time.perf_counter()
        out[cached] = continue_text(model, prompt, new, cached=cached, temperature=0).ids
        seconds[cached] = time.perf_counter() - start
    assert torch.equal(out[True], out[False]), kind
    return {
        "kind": kind, "new_tokens": new,
        "cached_tokens_per_s": new / seconds[True], "uncached_tokens_per_s": new / seconds[False],
        "speedup": seconds[False] / seconds[True],
        "state_numbers_64": _state_numbers(model, 64),
        "state_numbers_512": _state_numbers(model, 512),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new", type=int, default=240)
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [measure(kind, args.new) for kind in KINDS]
    print(machine(with_torch=True))
    print(f"{'kind':<14} {'cached tok/s':>12} {'re-read tok/s':>13} {'speedup':>8} "
          f"{'state @64':>10} {'state @512':>11}")  # fmt: skip
    for r in rows:
        print(f"{r['kind']:<14} {r['cached_tokens_per_s']:>12,.0f} "
              f"{r['uncached_tokens_per_s']:>13,.0f} {r['speedup']:>7.1f}x "
              f"{r['state_numbers_64']:>10,} {r['state_numbers_512']:>11,}")  # fmt: skip
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"machine": machine(with_torch=True), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
