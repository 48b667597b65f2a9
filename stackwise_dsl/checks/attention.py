"""Attention shapes: head counts divide the width, rope has pairs, latents are bottlenecks."""

from __future__ import annotations

from collections.abc import Iterator

from stackwise_dsl import diagnostics as diag
from stackwise_dsl.ir import nodes as n
from stackwise_dsl.ir.facts import Facts


def check_head_divisibility(facts: Facts) -> Iterator[diag.Diagnostic]:
    """Each attention's heads divide d_model, and kv_heads divide heads."""
    spec = facts.spec
    d = spec.model.d_model
    for b in spec.blocks:
        a = b.attention
        if a.heads > 0 and d % a.heads:
            yield diag.error(
                "SW201",
                f"heads ({a.heads}) does not divide d_model ({d}) in block `{b.name}`",
                n.at(a, "heads"),
                hint=f"use a divisor of {d}: {_divisors_near(d, a.heads)}",
                notes=(diag.Note(message="d_model is set here", span=n.at(spec.model, "d_model")),),
            )
        if a.kv_heads > 0 and a.heads > 0 and a.heads % a.kv_heads:
            yield diag.error(
                "SW202",
                f"kv_heads ({a.kv_heads}) does not divide heads ({a.heads}) in block `{b.name}`",
                n.at(a, "kv_heads"),
                hint=f"each key/value head serves a whole group of query heads: use one of "
                f"{_divisors_near(a.heads, a.kv_heads)}",
            )


def check_rope_head_dim(facts: Facts) -> Iterator[diag.Diagnostic]:
    """Rope rotates pairs of dimensions, so each head's dimension must be even."""
    spec = facts.spec
    if not isinstance(spec.model.position, n.Rope):
        return
    d = spec.model.d_model
    for b in spec.blocks:
        a = b.attention
        if a.heads > 0 and d % a.heads == 0 and (d // a.heads) % 2:
            yield diag.error(
                "SW203",
                f"head dim {d // a.heads} (d_model {d} / heads {a.heads}) is odd in block "
                f"`{b.name}`; rope rotates pairs of dimensions",
                n.at(a, "heads"),
                hint=f"use heads from {_divisors_near(d, a.heads, even_quotient=True)}, "
                "or `position = learned`",
            )


def check_latent_ranks(facts: Facts) -> Iterator[diag.Diagnostic]:
    """MLA ranks are bottlenecks: at least 1 and below d_model."""
    spec = facts.spec
    d = spec.model.d_model
    for b in spec.blocks:
        latent = b.attention.latent
        if latent is None:
            continue
        for field in ("q_rank", "kv_rank"):
            r = getattr(latent, field)
            if not 0 < r < d:
                yield diag.error(
                    "SW204",
                    f"{field} ({r}) is not between 1 and d_model ({d}) in block `{b.name}`",
                    n.at(latent, field),
                    hint=f"a latent compresses: try {max(1, d // 4)} or {max(1, d // 2)}",
                )


def check_kernel_dim(facts: Facts) -> Iterator[diag.Diagnostic]:
    """Kernel attention needs a positive number of random features."""
    for b in facts.spec.blocks:
        kernel = b.attention.kernel
        if kernel is not None and kernel.kernel_dim <= 0:
            yield diag.error(
                "SW205",
                f"kernel_dim ({kernel.kernel_dim}) must be positive in block `{b.name}`",
                n.at(kernel, "kernel_dim"),
                hint="use a few times the head dimension, e.g. 64 or 128 features",
            )


def _divisors_near(n_: int, near: int, even_quotient: bool = False) -> str:
    """Up to six divisors of n_ closest to `near`, as text (O(sqrt n), so huge widths are fine)."""
    if n_ > 10**9:
        return f"a divisor of {n_}"
    divisors: set[int] = set()
    k = 1
    while k * k <= n_:
        if n_ % k == 0:
            divisors.update((k, n_ // k))
        k += 1
    if even_quotient:
        divisors = {k for k in divisors if (n_ // k) % 2 == 0}
    closest = sorted(sorted(divisors, key=lambda k: (abs(k - near), k))[:6])
    return ", ".join(map(str, closest)) if closest else "none"
