"""Where the grammar and the code templates live, installed or in a checkout.

In a built wheel, `grammars/` and `codegen/` sit inside the package; in a source checkout
(editable install, tests) they sit at the repository root beside it.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent  # stackwise_dsl/


def resource_dir(name: str) -> Path:
    """The `grammars` or `codegen` directory, from the installed package or the checkout."""
    for candidate in (_PACKAGE / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"stackwise-dsl is installed without its {name}/ directory (looked in {_PACKAGE} "
        f"and {_PACKAGE.parent}); reinstall the package"
    )


def grammar_path() -> Path:
    return resource_dir("grammars") / "sw.lark"
