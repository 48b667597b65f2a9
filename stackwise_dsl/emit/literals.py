"""Python literals for values that come from a spec: no spec value can become code.

`literal(value)` returns source that evaluates to `value` and is a single literal expression
(a string, number, bool, None, or a tuple/list/dict of those), checked by parsing it back.
Strings go through `repr`, which escapes quotes, backslashes, newlines and every non-
printable character, including unicode line and paragraph separators.
"""

from __future__ import annotations

import ast
import keyword
import math
import re

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_SAFE_NODES = (ast.Expression, ast.Constant, ast.Tuple, ast.List, ast.Dict, ast.UnaryOp,
               ast.USub, ast.Load)  # fmt: skip


class EmitError(ValueError):
    """A value that cannot be written as a literal, or a name that is not an identifier."""


def literal(value) -> str:
    """Source of a literal equal to `value` (str, int, float, bool, None, tuple, list,
    dict with such keys and values)."""
    text = _source(value)
    tree = ast.parse(text, mode="eval")
    if not all(isinstance(node, _SAFE_NODES) for node in ast.walk(tree)):
        raise EmitError(f"not a plain literal: {text[:80]}")
    if ast.literal_eval(tree) != value:
        raise EmitError(f"literal does not round-trip: {text[:80]}")
    return text


def identifier(name: str) -> str:
    """`name` if it is a plain ASCII Python identifier that is not a keyword."""
    if not isinstance(name, str) or not _IDENTIFIER.match(name) or keyword.iskeyword(name):
        raise EmitError(f"not an identifier: {name!r}")
    return name


def _source(value) -> str:
    if value is None or isinstance(value, bool | int | str):
        return _text(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise EmitError(f"{value} has no literal")
        return repr(value)
    if isinstance(value, tuple):
        inner = ", ".join(_source(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, list):
        return "[" + ", ".join(_source(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_source(k)}: {_source(v)}" for k, v in value.items()) + "}"
    raise EmitError(f"no literal for a {type(value).__name__}")


def _text(value) -> str:
    if isinstance(value, str):
        # repr leaves printable non-ASCII as is; escape every non-ASCII character too, so a
        # script is plain ASCII and no separator or look-alike survives into it
        return repr(value).encode("ascii", "backslashreplace").decode("ascii")
    return repr(value)
