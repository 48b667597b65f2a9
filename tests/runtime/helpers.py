"""Plans for runtime tests, built from spec text."""

from __future__ import annotations

from stackwise_dsl.frontend import check_text
from stackwise_dsl.lower import to_plan


def plan_of(text: str, name: str = "t", vocab: int | None = None):
    report = check_text(text, f"{name}.sw")
    assert report.ok, [(d.code, d.message) for d in report.diagnostics if d.is_error]
    return to_plan(report.spec, name=name, vocab=vocab)


def spec_with(attention: str, *, objective: str = "mlm", d: int = 32, extra: str = "") -> str:
    return (
        f"model {{ d_model = {d}, context = 16, vocab = 300 }}\n"
        f"block b {{ attention = {attention}, ffn = swiglu(hidden = {2 * d}) }}\n"
        "stack s = 2 x b\n"
        f"objective = {objective}\n"
        "grow append 2 x s { steps = 4 }\n" + extra
    )
