"""Completion: what may be written at the cursor, read off the IR classes (the schema) and
the names the document defines. The context comes from the text before the cursor, not from
a parse, since what is being typed rarely parses: the innermost unclosed `{` or `(` says
which construct the cursor is in, and `field =` before it says a value is wanted."""

from __future__ import annotations

import enum
import re
import types
import typing

import attrs

from stackwise_dsl.elaborate import registry
from stackwise_dsl.elaborate.attention import CONSTRUCTORS
from stackwise_dsl.ir import nodes as n
from stackwise_dsl.ir.enums import Direction, Mode
from stackwise_dsl.reference import meaning

TOP = ("model", "block", "stack", "objective", "grow", "fuse", "data", "optimizer", "run", "let",
       "include", "extends")  # fmt: skip

# `word {`: the IR class a section's body fills
SECTIONS: dict[str, type] = {
    "model": n.Model, "data": n.Data, "run": n.Run, "fuse": n.Fuse, "block": n.Block,
    "grow": n.StageSettings, "stage": n.StageSettings, "trunk": n.TrunkPolicy,
    "new": n.NewPolicy,
}  # fmt: skip

# a top-level `word = ...`: the union its value is one of
TOP_VALUES: dict[str, object] = {"objective": n.Objective, "optimizer": n.Optimizer}


@attrs.frozen
class Item:
    label: str
    kind: str  # "field", "value", "constructor", "keyword", "name"
    detail: str = ""
    insert: str | None = None


def context(before: str) -> tuple[list[str], str | None]:
    """The enclosing constructs at the end of `before`, outermost first (section words, or
    `name(` for a call), and the field whose value is being written there, if any."""
    stack: list[str] = []
    text = _without_strings_and_comments(before)
    for m in re.finditer(r"[{}()]", text):
        ch = m.group()
        if ch in "{(":
            stack.append(_opener(text[: m.start()], ch))
        elif stack:
            stack.pop()
    tail = text[text.rfind("\n") + 1 :] if "\n" in text else text
    last = re.split(r"[{(,]", tail)[-1]
    value = re.match(r"\s*([A-Za-z_]\w*)\s*=\s*[\w.\"-]*$", last)
    return stack, (value.group(1) if value else None)


def _opener(text: str, bracket: str) -> str:
    words = re.findall(r"[A-Za-z_]\w*|\d+", text[-200:])
    if bracket == "(":
        return (words[-1] if words else "") + "("
    for word in reversed(words):  # `block name {`, `grow append 3 x s {`, `stage 2 {`
        if word in SECTIONS:
            return word
    return words[-1] if words else ""


def _without_strings_and_comments(text: str) -> str:
    text = re.sub(r'"(?:[^"\\\n]|\\.)*"?', '""', text)
    return re.sub(r"#[^\n]*", "", text)


def complete(before: str, names: dict[str, str]) -> list[Item]:
    """What may be written at the end of `before`; `names`: the document's lets, blocks and
    stacks (name -> what it is)."""
    stack, field = context(before)
    where = stack[-1] if stack else None
    line = before[before.rfind("\n") + 1 :]
    if where is None and re.match(r"\s*stack\s+\w+\s*=", line):  # the blocks it is made of
        return [Item(x, "name", "block") for x, what in sorted(names.items()) if what == "block"]
    if where is None and re.match(r"\s*grow\s+\w+\s", line):  # the stacks it grows
        return [Item(x, "name", "stack") for x, what in sorted(names.items()) if what == "stack"]
    if where is None and re.match(r"\s*grow\s+\w*$", line):
        return [Item(x.value, "value", "growth direction") for x in Direction]
    defining = re.match(r"\s*let\s+(\w+)\s*=", line)
    if defining is not None:  # a let's value: the other lets (not itself)
        names = {x: what for x, what in names.items() if x != defining.group(1)}
    if where is None and defining is not None:
        return [Item(x, "name", "let") for x, what in sorted(names.items()) if what == "let"]
    if field is not None:
        return _values(where, field, names)
    if re.search(r"\b[A-Za-z_]\w*\s+every\s+[\w.]+\s+\w*$", line):  # `log every 5 s`
        return [Item("steps", "keyword", "the cadence's unit: optimizer steps")]
    if re.search(r"\b[A-Za-z_]\w*\s+every\s+$", line):  # `log every `: how many steps
        return [Item(x, "name", "let") for x, what in sorted(names.items()) if what == "let"]
    cadence = re.search(r"(?:^|[{,\s])(log|eval|checkpoint)\s+\w*$", line)
    if cadence is not None and where is not None:  # `log `: what follows a cadence's word
        return [Item("every", "keyword", f"`{cadence.group(1)} every N steps`", "every ")]
    if where is None:
        return [Item(w, "keyword", "top-level item") for w in TOP]
    if where.endswith("(") and where[:-1] in CONSTRUCTORS:
        given = _given(before)
        return [Item(x, "field", _knob(x), f"{x} = ") for x in CONSTRUCTORS[where[:-1]].params
                if x not in given]  # fmt: skip
    cls = _class_of(where)
    if cls is None:
        return []
    flags = registry.flag_words(cls.sw_name if hasattr(cls, "sw_name") else "")
    given = _given(before, flags)  # a field given twice is SW102: offer the others
    out = []
    for f, hint in registry.hints(cls).items():
        if f == "name" or f in given:
            continue
        if f.endswith("_every"):  # written as a cadence: `log every 25 steps`
            word = f.removesuffix("_every")
            out.append(Item(f"{word} every", "field", _knob(f), f"{word} every "))
        elif hint in SECTIONS.values():  # a section: `trunk { ... }`, not `trunk = `
            out.append(Item(f, "field", _knob(f), f"{f} {{ "))
        else:
            out.append(Item(f, "field", _knob(f), f"{f} = "))
    for word, flag in flags.items():
        if flag not in given:
            out.append(Item(word, "value", f"sets `{flag}`"))
    if cls is n.StageSettings and where == "grow":
        out.append(Item("stage", "keyword", "settings of some stages: `stage 2 { ... }`",
                        "stage "))  # fmt: skip
    return out


def _given(before: str, flags: dict[str, str] | None = None) -> set[str]:
    """The fields already written in the innermost unclosed `{` or `(` before the cursor
    (`name = ...`, `name every ...`, `name { ... }` and, through `flags` (word -> field), bare
    flag words such as `frozen`, at its own depth; a stage's settings are its own)."""
    text = _without_strings_and_comments(before)
    depth, start = 0, 0
    for i in range(len(text) - 1, -1, -1):  # the innermost unclosed opener
        ch = text[i]
        if ch in "})":
            depth += 1
        elif ch in "{(":
            if depth == 0:
                start = i + 1
                break
            depth -= 1
    inner, level = [], 0
    for ch in text[start:]:  # what lies at the opener's own depth
        if ch in "{(":
            level += 1
        elif ch in "})":
            level -= 1
        inner.append(ch if level == 0 else " ")
    own = "".join(inner)
    given = set(re.findall(r"([A-Za-z_]\w*)\s*=(?!=)", own))
    given |= {f"{w}_every" for w in re.findall(r"([A-Za-z_]\w*)\s+every\b", own)}
    given |= set(re.findall(r"([A-Za-z_]\w*)\s*\{", text[start:]))  # sections in it
    words = re.findall(r"(?:^|[,\s])([A-Za-z_]\w*)\s*(?=,|$)", own)
    given |= {(flags or {})[w] for w in words if w in (flags or {})}
    return given


def _class_of(where: str) -> type | None:
    if where.endswith("("):
        name = where[:-1]
        if name in CONSTRUCTORS:
            return None  # attention: its own parameters, below
        return registry.BY_NAME.get(name)
    return SECTIONS.get(where)


def _knob(field: str) -> str:
    said = meaning(field)
    return said[0][1].replace("`", "") if said else ""


def _values(where: str | None, field: str, names: dict[str, str]) -> list[Item]:
    if where is None:
        hint = TOP_VALUES.get(field)
    elif where.endswith("(") and where[:-1] in CONSTRUCTORS:
        hint = int if field != "mode" else Mode
    else:
        cls = _class_of(where)
        hint = registry.hints(cls).get(field) if cls is not None else None
    out = [Item(x, "value", f"`{field}`") for x in _choices(hint)]
    if field == "attention":
        out = [Item(c.name, "constructor", c.summary, f"{c.name}(") for c in
               CONSTRUCTORS.values()]  # fmt: skip
    if not (isinstance(hint, type) and issubclass(hint, enum.Enum)):  # a let may hold it
        out += [Item(name, "name", what) for name, what in sorted(names.items()) if what == "let"]
    return out


def _choices(hint) -> list[str]:
    if hint is None:
        return []
    if hint is bool:
        return ["true", "false"]
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return [m.value for m in hint]
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(
        hint) is typing.Union else ()  # fmt: skip
    out = []
    for arg in args:
        if arg is type(None):
            continue
        if attrs.has(arg) and hasattr(arg, "sw_name"):
            out.append(arg.sw_name)
        else:
            out += _choices(arg)
    return out


def defined_names(text: str) -> dict[str, str]:
    """The lets, blocks and stacks a text defines, read line by line (it need not parse)."""
    found = re.finditer(r"^\s*(let|block|stack)\s+([A-Za-z_]\w*)", text, re.MULTILINE)
    return {m.group(2): m.group(1) for m in found}
