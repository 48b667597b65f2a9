"""Plan ↔ JSON, losslessly: `from_json(to_json(plan)) == plan`.

A run directory keeps its plan as plan.json, and a resumed run reads it back rather than
lowering the spec again (the working directory, and so relative paths, may have changed).
Members of a union carry their class name under "kind".
"""

from __future__ import annotations

import enum
import functools
import types
import typing
from typing import Any

import attrs

from stackwise_dsl.lower import plan as p


def to_json(obj: Any) -> Any:
    """Plan objects as JSON-ready values (dicts, lists, strings, numbers, None)."""
    if attrs.has(type(obj)):
        out = {"kind": type(obj).__name__} if _in_union(type(obj)) else {}
        out.update({f.name: to_json(getattr(obj, f.name)) for f in attrs.fields(type(obj))})
        return out
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, tuple):
        return [to_json(x) for x in obj]
    return obj


def from_json(data: Any, cls: type = p.Plan) -> Any:
    """The plan object of type `cls` that `to_json` wrote."""
    return _decode(data, cls)


def _decode(data: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if data is None:
            return None
        if len(options) == 1:
            return _decode(data, options[0])
        by_name = {o.__name__: o for o in options}
        return _decode(data, by_name[data["kind"]])
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(x, args[0]) for x in data)
        return tuple(_decode(x, a) for x, a in zip(data, args, strict=True))
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(data)
    if attrs.has(hint):
        fields = _hints(hint)
        return hint(**{name: _decode(data[name], h) for name, h in fields.items()})
    if hint is float and isinstance(data, int):
        return float(data)
    return data


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    resolved = typing.get_type_hints(cls)  # in the namespace of the module defining cls
    return {f.name: resolved[f.name] for f in attrs.fields(cls)}


_UNION_MEMBERS = {
    p.Stdlib, p.Synthetic, p.TextFiles, p.Jsonl, p.Bytes, p.Chars, p.Bpe, p.TokenizerFile,
}  # fmt: skip


def _in_union(cls: type) -> bool:
    return cls in _UNION_MEMBERS
