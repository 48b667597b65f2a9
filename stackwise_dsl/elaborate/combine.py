"""Combining records: `extends` overrides, `include` unions, `--set` paths.

- `override(base, child)`: the child's entries replace the base's; a section or call of the
  same name is combined field by field, so `optimizer = adamw(lr = 1e-3)` in a child changes
  only the learning rate. A different constructor, or a growth in another direction,
  replaces the whole value.
- `union(a, b)`: the same recursion, but a field set on both sides is an error (SW102):
  included files add to a spec, they never silently change it.
- `set_path(root, path, value)`: one `--set a.b.c=v`, creating sections that are missing,
  along a path `resolve_set_path` has checked.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import attrs

from stackwise_dsl import diagnostics as diag
from stackwise_dsl.elaborate.values import Entry, Record, Sym, Value
from stackwise_dsl.source import Span

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
            combined = union(entries[i].value, e.value, report)
            entries[i] = attrs.evolve(entries[i], value=combined)
        else:
            report(_conflict(entries[i], e))
    return attrs.evolve(a, entries=tuple(entries))


def _same_record(a: Value, b: Value) -> bool:
    """Records combine when they are the same section or constructor; a growth only when its
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


MAX_SET_SEGMENTS = 32  # far deeper than any field; bounds the recursion of set_path
_STAGES = re.compile(r"(\d{1,18})(?:\.\.(\d{1,18}))?")
SetPath = list[tuple[str, str | None]]


def resolve_set_path(path: str, span: Callable[[int, int], Span]) -> SetPath | diag.Diagnostic:
    """`split_path(path)` with stage labels as a file writes them (`2..2` → `2`), or why no
    `--set` can take that path; `span(start, end)` locates a part of it."""
    parts = path_segments(path)
    if len(parts) > MAX_SET_SEGMENTS:
        message = f"the path has {len(parts):,} parts; no field lies {MAX_SET_SEGMENTS} deep"
        hint = "a path names a field, as in `--set block.b.attention.heads=8`"
        return diag.error("SW006", message, span(0, len(path)), hint=hint)
    out: SetPath = []
    start = 0
    for key, label in split_path(path):
        label_start = start + len(key) + 1
        end = label_start + len(label) if label is not None else start + len(key)
        problem = _set_step_problem(out, key, label, last=end == len(path))
        if problem is not None:
            code, message, hint, on_label = problem
            at = span(label_start, end) if on_label else span(start, end)
            return diag.error(code, message, at, hint=hint)
        out.append((key, _stage_label(label) if key == "stage" else label))
        start = end + 1
    return out


def _set_step_problem(before: SetPath, key: str, label: str | None, last: bool):
    """(code, message, hint, whether it is the label's fault) for one step of a `--set` path
    that cannot be taken; the same codes as the file form (`stage 0`, `stage 3..2`)."""
    written = ".".join([*(f"{k}.{v}" if v else k for k, v in before), key])
    if key == "stage" and [k for k, _ in before] != ["grow"]:
        return "SW110", "`stage` overrides belong inside `grow`", _STAGE_EXAMPLE, False
    if key in LABELLED and label is None:
        what = "a stage number" if key == "stage" else "a name"
        example = _STAGE_EXAMPLE if key == "stage" else f"write `--set {key}.NAME.FIELD=VALUE`"
        return "SW006", f"`{written}` needs {what} after it", example, False
    if key == "stage":
        found = _STAGES.fullmatch(label)
        if found is None:
            return "SW006", f"`{label}` is not a stage number or range", _STAGE_EXAMPLE, True
        first, last_stage = int(found[1]), int(found[2] or found[1])
        if first < 1:
            message = f"a stage number is an integer from 1; got the number {first}"
            return "SW104", message, "stages are numbered from 1, the first stack grown", True
        if last_stage < first:
            message = f"stage range {first}..{last_stage} runs backwards"
            return "SW109", message, f"write `{last_stage}..{first}`", True
    if last and key in ("block", "stage"):
        message = f"`{written}.{label}` is a section: set one of its fields"
        return "SW006", message, f"write `--set {written}.{label}.FIELD=VALUE`", False
    return None


_STAGE_EXAMPLE = "write `--set grow.stage.2.steps=500` or `--set grow.stage.2..3.lr=1e-4`"


def _stage_label(label: str) -> str:
    """A stage label as the file form writes it: `02` → `2`, `2..2` → `2`."""
    first, _, last = label.partition("..")
    first, last = str(int(first)), str(int(last or first))
    return first if first == last else f"{first}..{last}"


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
