"""The language's vocabulary, read off the IR classes: constructor names, positional
arguments, flag words. One table, derived from one place (ir/nodes.py)."""

from __future__ import annotations

import functools
import typing

import attrs

from stackwise_dsl.ir import nodes as n

ALL_NODES = (
    n.Rope,
    n.LearnedPosition,
    n.NoPosition,
    n.Hf,
    n.Model,
    n.SwiGlu,
    n.Gelu,
    n.Block,
    n.Stack,
    n.Mlm,
    n.Clm,
    n.DepthTime,
    n.InputTime,
    n.LinearSchedule,
    n.CosineSchedule,
    n.ExponentialSchedule,
    n.MaskedDiffusion,
    n.Lora,
    n.NewPolicy,
    n.TrunkPolicy,
    n.Growth,
    n.Fuse,
    n.Stdlib,
    n.Synthetic,
    n.TextFiles,
    n.Jsonl,
    n.Bytes,
    n.Chars,
    n.Bpe,
    n.TokenizerFile,
    n.Data,
    n.AdamW,
    n.AdamW8bit,
    n.Sgd,
    n.Run,
)

BY_NAME: dict[str, type] = {cls.sw_name: cls for cls in ALL_NODES}

POSITIONAL: dict[str, str] = {
    cls.sw_name: cls.sw_positional for cls in ALL_NODES if hasattr(cls, "sw_positional")
}


@functools.cache
def hints(cls: type) -> dict[str, object]:
    """Field name → resolved type annotation, for the fields a spec may set."""
    resolved = typing.get_type_hints(cls)
    return {f.name: resolved[f.name] for f in attrs.fields(cls) if f.name not in ("span", "spans")}


@functools.cache
def flag_words(section: str) -> dict[str, str]:
    """For a section written as `name { ... }`: bare word → the enum field it sets."""
    cls = BY_NAME.get(section)
    out: dict[str, str] = {}
    for field in getattr(cls, "sw_flags", ()):
        for member in hints(cls)[field]:
            out[member.value] = field
    return out


@functools.cache
def defaults(cls: type) -> dict[str, object]:
    """Field name → default value, for the fields that have one."""
    return {f.name: f.default for f in attrs.fields(cls) if f.default is not attrs.NOTHING}
