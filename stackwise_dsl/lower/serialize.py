"""Plan ↔ JSON, losslessly: `from_json(to_json(plan)) == plan`.

A run directory keeps its plan as plan.json, and a resumed run reads it back rather than
lowering the spec again (the working directory, and so relative paths, may have changed).
Members of a union carry their class name under "kind". A field that may be None may be
left out (compiled scripts write their plan so).
"""

from __future__ import annotations

import enum
import functools
import types
import typing
from typing import Any

import attrs

from stackwise_dsl.lower import plan as p

# The layout of plan.json, counted up when it changes: a run directory's run.json says which it
# was written with (none said: 1, before the plan was typed).
PLAN_FORMAT = 5  # 3: data.split; 4: data.specials, validation_data, windows; run.tensorboard;
# 5: run.distributed, stage.recompute


def to_json(obj: Any) -> Any:
    """Plan objects as JSON-ready values (dicts, lists, strings, numbers, None)."""
    if attrs.has(type(obj)):
        out = {"kind": type(obj).__name__} if issubclass(type(obj), p.Variant) else {}
        out.update({f.name: to_json(getattr(obj, f.name)) for f in attrs.fields(type(obj))})
        return out
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, tuple):
        return [to_json(x) for x in obj]
    return obj


class PlanFormatError(ValueError):
    """JSON that is not a plan `to_json` could have written; the message says where."""


def from_json(data: Any, cls: type = p.Plan) -> Any:
    """The plan object of type `cls` that `to_json` wrote; PlanFormatError naming the first
    value of the wrong type or shape (a plan.json edited by hand, or damaged), or, for a
    whole plan, the first value that does not fit the others (`consistent`)."""
    value = _decode(data, cls, "plan")
    if cls is p.Plan:
        consistent(value)
    return value


def consistent(plan: p.Plan) -> None:
    """What lowering guarantees and an edited plan may break, checked so that a run never
    meets it as a tensor of the wrong shape: PlanFormatError naming the value."""
    m = plan.model

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise PlanFormatError(what)

    for name in ("vocab", "d_model", "context", "embed_dim"):
        need(getattr(m, name) >= 1, f"plan.model.{name} is {getattr(m, name)}, not at least 1")
    need(0 <= m.dropout < 1, f"plan.model.dropout is {m.dropout}, not in [0, 1)")
    for i, stack in enumerate(plan.stacks):
        need(stack.position == i, f"plan.stacks[{i}].position is {stack.position}, not {i}")
        for j, b in enumerate(stack.blocks):
            a, where = b.attention, f"plan.stacks[{i}].blocks[{j}]"
            need(
                a.heads >= 1 and a.kv_heads >= 1 and a.heads % a.kv_heads == 0,
                f"{where}.attention: kv_heads {a.kv_heads} do not divide heads {a.heads}",
            )
            need(
                a.head_dim * a.heads == m.d_model,
                f"{where}.attention: heads {a.heads} x "
                f"head_dim {a.head_dim} is not d_model {m.d_model}",
            )
            need(b.ffn.hidden >= 1, f"{where}.ffn.hidden is {b.ffn.hidden}, not at least 1")
    for k, stage in enumerate(plan.stages):
        where = f"plan.stages[{k}]"
        need(stage.number == k + 1, f"{where}.number is {stage.number}, not {k + 1}")
        need(stage.steps >= 1, f"{where}.steps is {stage.steps}, not at least 1")
        need(
            min(stage.lr, stage.adapter_lr, stage.embedding_lr) > 0,
            f"{where}: a learning rate is not above 0",
        )
        positions = [part.position for part in stage.parts]
        need(
            positions == sorted(set(positions))
            and all(0 <= x < len(plan.stacks) for x in positions),
            f"{where}.parts: positions {positions} are not distinct stacks of the plan",
        )
        source = stage.init_from
        need(
            source is None
            or (0 <= source < len(plan.stacks) and plan.stacks[source].created_in < stage.number),
            f"{where}.init_from is {source}, not a stack that exists before stage {stage.number}",
        )
    d, r = plan.data, plan.run
    need(
        d.batch >= 1 and 1 <= d.seq_len <= m.context,
        f"plan.data: batch {d.batch} and seq_len {d.seq_len} (context {m.context}) do not fit",
    )
    need(plan.optimizer.accumulate >= 1, "plan.optimizer.accumulate is not at least 1")
    for name in ("log_every", "eval_every", "eval_batches", "checkpoint_every"):
        value = getattr(r, name)
        need(value is None or value >= 1, f"plan.run.{name} is {value}, not at least 1")


def _decode(data: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if data is None and len(options) < len(typing.get_args(hint)):
            return None  # (a union without None takes no null: checked below)
        if len(options) == 1:
            return _decode(data, options[0], where)
        by_name = {o.__name__: o for o in options}
        kind = data.get("kind") if isinstance(data, dict) else None
        if kind not in by_name:
            found = f"a {kind!r}" if isinstance(kind, str) else _shown(data)
            raise PlanFormatError(f"{where} is {found}, not one of {', '.join(by_name)}")
        return _decode(data, by_name[kind], where)
    if origin is tuple:
        if not isinstance(data, list):
            raise PlanFormatError(f"{where} is {_shown(data)}, not a list")
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(x, args[0], f"{where}[{i}]") for i, x in enumerate(data))
        if len(data) != len(args):
            raise PlanFormatError(f"{where} has {len(data)} items, not {len(args)}")
        return tuple(
            _decode(x, a, f"{where}[{i}]") for i, (x, a) in enumerate(zip(data, args, strict=True))
        )
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(data)
        except ValueError:
            raise PlanFormatError(f"{where} is {_shown(data)}, not a {hint.__name__}") from None
    if attrs.has(hint):
        if not isinstance(data, dict):
            raise PlanFormatError(f"{where} is {_shown(data)}, not an object")
        variant = issubclass(hint, p.Variant)
        if variant and data.get("kind", hint.__name__) != hint.__name__:  # a union of one
            raise PlanFormatError(f"{where} is {data['kind']!r}, which this program was not "
                                  f"compiled for (only {hint.__name__}): compile the spec that "
                                  "uses it")  # fmt: skip
        fields = _hints(hint)
        missing = [name for name in fields if name not in data and not _optional(fields[name])]
        if missing:
            raise PlanFormatError(f"{where} has no `{missing[0]}`")
        unknown = sorted(set(data) - set(fields) - ({"kind"} if variant else set()))
        if unknown:
            raise PlanFormatError(
                f"{where} has `{unknown[0]}`, which is no field of a {hint.__name__}"
            )
        return hint(**{name: _decode(data.get(name), h, f"{where}.{name}")
                       for name, h in fields.items()})  # fmt: skip
    return _scalar(data, hint, where)


def _optional(hint: Any) -> bool:
    """A field that may be None, and so may be left out (a compiled script's plan does). In
    a script, a field whose classes the plan has none of holds only None."""
    if hint is type(None):
        return True
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in (
        typing.get_args(hint)
    )


_SCALARS = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}


def _scalar(data: Any, hint: Any, where: str) -> Any:
    """A JSON value of the plan's scalar type (ints are accepted as floats, never bools)."""
    if hint is float and isinstance(data, int) and not isinstance(data, bool):
        return float(data)
    if hint is type(None) and data is not None:  # in a script compiled for a plan without it
        raise PlanFormatError(f"{where} is {_shown(data)}, but this program was compiled for a "
                              "plan without it (null): compile the spec that uses it")  # fmt: skip
    if hint in _SCALARS and (
        not isinstance(data, hint) or (hint is not bool and isinstance(data, bool))
    ):
        raise PlanFormatError(f"{where} is {_shown(data)}, not {_SCALARS[hint]}")
    return data


def _shown(data: Any) -> str:
    text = repr(data)
    return text if len(text) <= 40 else text[:37] + "..."


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    resolved = typing.get_type_hints(cls)  # in the namespace of the module defining cls
    return {f.name: resolved[f.name] for f in attrs.fields(cls)}
