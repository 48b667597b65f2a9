"""Training throughput of the runtime against a minimal hand-written PyTorch loop.

Both train the same model (a causal transformer: embedding, pre-norm blocks with RMSNorm,
rotary attention through scaled_dot_product_attention, SwiGLU, tied head) on the same token
windows with the same batch, optimizer and learning rate, for the same number of steps, in
the same process, alternating. The hand-written loop is written here from scratch; it shares
no code with the runtime. Also reported: the FLOP/s each achieves (6 x parameters x tokens
plus attention) as a fraction of a large fp32 matmul's FLOP/s measured in the same process.
Target (issue 3): the runtime at least 0.95x the hand-written tokens/s.

    python bench/throughput.py [--steps 40] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import machine
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
D, HEADS, BLOCKS, HIDDEN, CONTEXT, BATCH, LR = 256, 4, 4, 1024, 128, 16, 3e-4

SPEC = f"""model {{ d_model = {D}, context = {CONTEXT}, head = tied }}
block b {{ attention = gpt_style(heads = {HEADS}), ffn = swiglu(hidden = {HIDDEN}) }}
stack s = 2 x b
objective = clm
grow end_to_end 2 x s {{ steps = STEPS }}
data {{ source = stdlib, tokenizer = bytes, batch = {BATCH}, validation = 0.01 }}
optimizer = adamw(lr = {LR}, weight_decay = 0.1, warmup = 0, schedule = constant, clip = 1.0)
run {{ seed = 0, log every 10 steps, eval_batches = 1 }}
"""


# --- the hand-written baseline ---------------------------------------------------------------


class HandBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.n1, self.n2 = nn.RMSNorm(D, eps=1e-6), nn.RMSNorm(D, eps=1e-6)
        self.q, self.k, self.v, self.o = (nn.Linear(D, D, bias=False) for _ in range(4))
        self.gate, self.up = nn.Linear(D, HIDDEN, bias=False), nn.Linear(D, HIDDEN, bias=False)
        self.down = nn.Linear(HIDDEN, D, bias=False)

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        h = self.n1(x)
        q, k, v = (
            m(h).view(b, t, HEADS, D // HEADS).transpose(1, 2) for m in (self.q, self.k, self.v)
        )
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o(y.transpose(1, 2).reshape(b, t, D))
        h = self.n2(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


def rotate(x, cos, sin):
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin


class HandModel(nn.Module):
    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, D)
        self.blocks = nn.ModuleList(HandBlock() for _ in range(BLOCKS))
        self.norm = nn.RMSNorm(D, eps=1e-6)
        hd = D // HEADS
        freqs = 1.0 / (10000 ** (torch.arange(0, hd, 2).float() / hd))
        angles = torch.outer(torch.arange(CONTEXT).float(), freqs).repeat(1, 2)
        self.cos, self.sin = angles.cos(), angles.sin()

    def forward(self, tokens):
        t = tokens.shape[1]
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x, self.cos[:t], self.sin[:t])
        return self.norm(x) @ self.embed.weight.t()


def hand_written(windows, steps: int) -> float:
    """tokens/s of a plain training loop over the same windows."""
    torch.manual_seed(0)
    model = HandModel(vocab=259)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
        lr=LR,
        foreach=False,
    )
    order = torch.randperm(len(windows), generator=torch.Generator().manual_seed(0))
    start = None
    for step in range(steps + 5):
        if step == 5:
            start = time.perf_counter()
        batch = torch.from_numpy(windows[order[step * BATCH : (step + 1) * BATCH].numpy()])
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return steps * BATCH * CONTEXT / (time.perf_counter() - start)


# --- the runtime --------------------------------------------------------------------------


def runtime_rate(steps: int) -> float:
    """tokens/s of the runtime's training steps (its own log records; the first window is
    left out as warm-up, like the baseline's first steps)."""
    from stackwise_dsl import runtime
    from stackwise_dsl.frontend import check_text
    from stackwise_dsl.lower import to_plan

    report = check_text(SPEC.replace("STEPS", str(steps + 10)), "bench.sw")
    plan = to_plan(report.spec, name="bench")
    with tempfile.TemporaryDirectory() as tmp:
        runtime.run(plan, Path(tmp) / "run")
        records = [
            json.loads(x) for x in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()
        ]
    rates = [r["tokens_per_s"] for r in records if r["kind"] == "train"][1:]
    return statistics.median(rates)


def matmul_peak() -> float:
    """FLOP/s of a 2048x2048 fp32 matmul in this process."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for _ in range(3):
        a @ b
    start, n = time.perf_counter(), 10
    for _ in range(n):
        a @ b
    return n * 2 * 2048**3 / (time.perf_counter() - start)


def flops_per_token() -> float:
    params = BLOCKS * (4 * D * D + 3 * D * HIDDEN) + 259 * D
    attention = BLOCKS * 2 * 2 * CONTEXT * D  # scores and weighted sum, forward
    return 6 * params + 3 * attention


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from stackwise_dsl.data import prepare
    from stackwise_dsl.frontend import check_text
    from stackwise_dsl.lower import to_plan

    plan = to_plan(check_text(SPEC.replace("STEPS", "1"), "bench.sw").spec, name="bench")
    windows = prepare(plan.data, 0).windows
    ours, hand = [], []
    for _ in range(args.rounds):
        hand.append(hand_written(windows, args.steps))
        ours.append(runtime_rate(args.steps))
    peak = matmul_peak()
    mine, theirs = statistics.median(ours), statistics.median(hand)
    result = {
        "machine": machine(with_torch=True),
        "model": f"{BLOCKS} blocks, d_model {D}, {HEADS} heads, swiglu {HIDDEN}, "
        f"context {CONTEXT}, batch {BATCH}",
        "steps": args.steps,
        "rounds": args.rounds,
        "runtime_tokens_per_s": round(mine),
        "hand_written_tokens_per_s": round(theirs),
        "ratio": round(mine / theirs, 3),
        "matmul_peak_gflops": round(peak / 1e9, 1),
        "runtime_fraction_of_peak": round(mine * flops_per_token() / peak, 3),
        "hand_written_fraction_of_peak": round(theirs * flops_per_token() / peak, 3),
        "all_runtime": [round(x) for x in ours],
        "all_hand_written": [round(x) for x in hand],
    }
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
