"""A minimal valid spec to build on."""

BASE = """model { d_model = 64, context = 32 }
block b { attention = mha(heads = 4), ffn = swiglu }
stack s = 1 x b
objective = mlm
grow append 2 x s { steps = 10 }
"""


def codes(result) -> list[str]:
    return [d.code for d in result.diagnostics]
