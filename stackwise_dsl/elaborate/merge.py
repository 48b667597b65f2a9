"""Combining records: `extends` overrides, `include` unions, `--set` paths.

- `override(base, child)`: the child's entries replace the base's; a section or call of the
  same name is merged field by field, so `optimizer = adamw(lr = 1e-3)` in a child changes
  only the learning rate. A different constructor, or a growth in another direction,
  replaces the whole value.
- `union(a, b)`: the same recursion, but a field set on both sides is an error (SW102):
  included files add to a spec, they never silently change it.
- `set_path(root, path, value)`: one `--set a.b.c=v`, creating sections that are missing.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from stackwise_dsl import diagnostics as diag
from stackwise_dsl.elaborate.values import Entry, Record, Sym, Value

Report = Callable[[diag.Diagnostic], None]
LABELLED = ("block", "stack", "stage")


def override(base: Record, child: Record) -> Record:
    """`base` with `child`'s entries on top."""
    entries = list(base.entries)
    index = {e.ident: i for i, e in enumerate(entries)}
    for e in child.entries:
        i = index.get(e.ident)
        if i is None:
            index[e.ident] = len(entries)
            entries.append(e)
            continue
        old = entries[i]
        if _same_record(old.value, e.value):
            e = attrs.evolve(e, value=override(old.value, e.value))
        entries[i] = e
    return attrs.evolve(base, entries=tuple(entries), span=child.span or base.span)


def union(a: Record, b: Record, report: Report) -> Record:
    """Entries of both; a leaf given on both sides is reported and `a`'s is kept."""
    entries = list(a.entries)
    index = {e.ident: i for i, e in enumerate(entries)}
    for e in b.entries:
        i = index.get(e.ident)
        if i is None:
            index[e.ident] = len(entries)
            entries.append(e)
        elif _same_record(entries[i].value, e.value):
            merged = union(entries[i].value, e.value, report)
            entries[i] = attrs.evolve(entries[i], value=merged)
        else:
            report(_conflict(entries[i], e))
    return attrs.evolve(a, entries=tuple(entries))


def _same_record(a: Value, b: Value) -> bool:
    """Records merge when they are the same section or constructor; a growth only when its
    direction is unchanged (a new direction means a new schedule, so it replaces)."""
    if not (isinstance(a, Record) and isinstance(b, Record) and a.name == b.name):
        return False
    if a.name == "grow":
        da, db = a.get("direction"), b.get("direction")
        return da is None or db is None or da.value == db.value
    return True


def _conflict(kept: Entry, other: Entry) -> diag.Diagnostic:
    what = f"{kept.key} {kept.label}" if kept.label else kept.key
    return diag.error(
        "SW102",
        f"`{what}` is set by two included files",
        other.key_span,
        hint="set it in one place; use `extends` to change a value from another file",
        notes=(diag.Note(message="also set here", span=kept.key_span),),
    )


def path_segments(path: str) -> list[str]:
    """`grow.stage.2..3.steps` → [grow, stage, 2..3, steps]: a stage range keeps its dots."""
    import re

    return re.findall(r"\d+\.\.\d+|[^.]+", path)


def split_path(path: str) -> list[tuple[str, str | None]]:
    """`block.enc.attention.heads` → [(block, enc), (attention, None), (heads, None)]."""
    parts = path_segments(path)
    out: list[tuple[str, str | None]] = []
    i = 0
    while i < len(parts):
        if parts[i] in LABELLED and i + 1 < len(parts):
            out.append((parts[i], parts[i + 1]))
            i += 2
        else:
            out.append((parts[i], None))
            i += 1
    return out


def set_path(root: Record, path: list[tuple[str, str | None]], value: Value, span) -> Record | str:
    """`root` with the entry at `path` set to `value`; a message instead when impossible."""
    (key, label), rest = path[0], path[1:]
    current = next((e for e in root.entries if e.ident == (key, label)), None)
    if not rest:
        new = Entry(key=key, value=value, label=label, key_span=span)
    else:
        inner = _descend(current, key, span)
        if isinstance(inner, str):
            return inner
        updated = set_path(inner, rest, value, span)
        if isinstance(updated, str):
            return updated
        new = Entry(key=key, value=updated, label=label, key_span=span)
    if current is None:
        return attrs.evolve(root, entries=(*root.entries, new))
    entries = tuple(new if e is current else e for e in root.entries)
    return attrs.evolve(root, entries=entries)


def _descend(current: Entry | None, key: str, span) -> Record | str:
    if current is None:
        return Record(name=key, entries=(), span=span)
    if isinstance(current.value, Record):
        return current.value
    if isinstance(current.value, Sym):
        return Record(name=current.value.name, entries=(), span=current.value.span)
    return f"`{key}` holds a value, not a section or call; it has no fields to set"
