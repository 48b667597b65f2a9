"""Hover: what the word under the cursor is. Keywords and fields say what they mean
(stackwise_dsl/reference.py, the glossary's source); a `let` says its value; a block, a stack
or a stage says what the checked spec computes for it (parameters, bytes, what trains)."""

from __future__ import annotations

import enum
import re

from stackwise_dsl.elaborate import registry
from stackwise_dsl.elaborate.attention import CONSTRUCTORS
from stackwise_dsl.lsp import outline
from stackwise_dsl.reference import CONSTRUCTS, meaning
from stackwise_dsl.syntax import tree as t
from stackwise_dsl.syntax.format import inline_expr


def hover(doc: t.Document | None, text: str, offset: int, spec=None,
          path: str = "<spec>") -> str | None:  # fmt: skip
    """Markdown for the word at `offset` of `text` (`doc`: its parse, None when it does not
    parse; `spec`: the checked IR, None when it does not check; `path`: the document's file,
    whose includes and base define names too)."""
    if doc is None:
        word = _word_in_text(text, offset)
        return _words(word) if word else None
    stage = _stage_at(doc, offset)
    if stage is not None:
        return _stages(spec, stage) if spec is not None else _words("stage")
    word = outline.word_at(doc, offset)
    around = outline.at(doc, offset)
    if not isinstance(word, t.Name):
        word = _word_in_text(text, offset)
        cadence = next((x for x in around if isinstance(x, t.Cadence)), None)
        if cadence is not None and word == "steps":
            return (f"**steps**: the unit of a cadence: `{cadence.name.name} every N steps` "
                    "means every N optimizer steps")  # fmt: skip
        return _words(word) if word else None
    name = word.name
    parent = next((x for x in reversed(around[:-1])
                   if not isinstance(x, t.Name)), None)  # fmt: skip
    if isinstance(parent, t.Cadence) and parent.name is word:
        return _field(f"{name}_every") or _words(name)
    if isinstance(parent, t.Assign | t.Kwarg) and parent.name is word:
        return _field(name) or _words(name)
    defined = outline.definitions(doc, path)
    lets = {k: it for k, it in defined.items() if isinstance(it, t.Let)}
    if name in lets:
        return _let(lets[name], lets)
    if spec is not None:
        computed = _computed(spec, name, defined)
        if computed is not None:
            return computed
    if isinstance(parent, t.Assign | t.Kwarg) and parent.value is word:
        field = parent.name.name
        return f"`{name}`: a value of `{field}`" + _said(field)
    return _words(name)


def _stage_at(doc: t.Document, offset: int) -> tuple[int, int] | None:
    """(first, last) of the `stage N` or `stage A..B` whose head is under the cursor."""
    for x in outline.at(doc, offset):
        if isinstance(x, t.Stage) and x.span.start <= offset <= x.body.span.start:
            first = x.first.value if isinstance(x.first, t.Number) else None
            last = x.last.value if isinstance(x.last, t.Number) else first
            if isinstance(first, int) and isinstance(last, int):
                return first, last
    return None


def _stages(spec, which: tuple[int, int]) -> str | None:
    from stackwise_dsl import estimate
    from stackwise_dsl.lower import to_plan

    try:
        plan = to_plan(spec, vocab=spec.model.vocab or 256, name="hover")
    except Exception:  # a plan that needs the data (its vocabulary): no numbers
        return _words("stage")
    lines = []
    for stage in plan.stages[which[0] - 1 : which[1]]:
        count = estimate.stage_count(plan, stage)
        lines.append(f"**stage {stage.number}** ({stage.kind.value}, {stage.steps:,} steps): "
                     f"{count.trainable:,} of {count.total:,} weights train")  # fmt: skip
    return "\n\n".join(lines) or None


def _word_in_text(text: str, offset: int) -> str | None:
    for m in re.finditer(r"[A-Za-z_]\w*", text[max(0, offset - 64) : offset + 64]):
        start = max(0, offset - 64) + m.start()
        if start <= offset <= start + len(m.group()):
            return m.group()
    return None


def _words(word: str) -> str | None:
    if word in CONSTRUCTS:
        return f"**{word}**: {CONSTRUCTS[word]}"
    if word in CONSTRUCTORS:
        c = CONSTRUCTORS[word]
        return f"**{word}**(...): {c.summary}; takes {', '.join(f'`{p}`' for p in c.params)}"
    said = _field(word)
    if said is not None:
        return said
    cls = registry.BY_NAME.get(word)
    if cls is not None:
        doc = (cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        fields = ", ".join(f"`{f}`" for f in registry.hints(cls))
        return f"**{word}**" + (f": {doc}" if doc else "") + (f"; takes {fields}" if fields else "")
    for enum_type, field in _WORDS_OF.items():
        if word in {m.value for m in enum_type}:
            return f"`{word}`: a value of `{field}`" + _said(field)
    return None


def _enum_fields() -> dict:
    """Enum type -> a field that holds it (for hovering a bare value word: `frozen`)."""
    out = {}
    for cls in registry.ALL_NODES:
        for field, hint in registry.hints(cls).items():
            if isinstance(hint, type) and issubclass(hint, enum.Enum):
                out.setdefault(hint, field)
    return out


_WORDS_OF = _enum_fields()


def _field(name: str) -> str | None:
    said = meaning(name)
    if not said:
        return None
    return "\n\n".join(f"**{name}** ({where}): {text}" for where, text in said)


def _said(field: str) -> str:
    said = meaning(field)
    return f" ({said[0][1]})" if said else ""


def _let(let: t.Let, lets: dict[str, t.Let]) -> str:
    try:
        value = _value(let.value, lets, set())
        written = inline_expr(let.value)
    except RecursionError:  # thousands of terms: say what it is, not all of it
        return f"```sw\nlet {let.name.name} = ...\n```"
    shown = f"let {let.name.name} = {written}"
    if value is not None and written != _number(value):
        shown += f"  (= {_number(value)})"
    return f"```sw\n{shown}\n```"


def _number(x) -> str:
    return str(int(x)) if isinstance(x, float) and x.is_integer() else str(x)


def _value(e, lets: dict[str, t.Let], seen: set[str]):
    """A let's number, where it is arithmetic over numbers and other lets."""
    if isinstance(e, t.Number):
        return e.value
    if isinstance(e, t.Name) and e.name in lets and e.name not in seen:
        return _value(lets[e.name].value, lets, seen | {e.name})
    if isinstance(e, t.Neg):
        v = _value(e.operand, lets, seen)
        return -v if v is not None else None
    if isinstance(e, t.Binary) and e.op in ("+", "-", "*", "/", "//"):
        a, b = _value(e.left, lets, seen), _value(e.right, lets, seen)
        if a is None or b is None or (e.op in ("/", "//") and b == 0):
            return None
        return {"+": a + b, "-": a - b, "*": a * b, "/": a / b, "//": a // b}[e.op]
    return None


def _computed(spec, name: str, defined: dict) -> str | None:
    """Blocks, stacks and stages of a spec that checks: their sizes as the plan has them
    (`defined`: name -> its definition, here or in an included file)."""
    from stackwise_dsl import estimate
    from stackwise_dsl.lower import to_plan

    if not isinstance(defined.get(name), t.BlockDef | t.StackDef):
        return None
    try:
        plan = to_plan(spec, vocab=spec.model.vocab or 256, name="hover")
    except Exception:  # a plan that needs the data (its vocabulary) and so on: no numbers
        return None
    d = plan.model.d_model
    if isinstance(defined[name], t.BlockDef):
        for s in plan.stacks:
            for b in s.blocks:
                if b.name == name:
                    return f"**block {name}**: {estimate.block_params(b, d):,} parameters"
        return f"**block {name}**: no stack uses it"
    stacks = [s for s in plan.stacks if s.name == name]
    if not stacks:
        return f"**stack {name}**: the growth does not add it"
    count = estimate.stack_params(stacks[0], d)
    places = ", ".join(str(x.position) for x in stacks)
    blocks = len(stacks[0].blocks)
    lines = [f"**stack {name}**: {count:,} parameters ({blocks} block{'s' * (blocks != 1)}); in "
             f"the rack at position {places}"]  # fmt: skip
    mine = {x.position for x in stacks}
    for stage in plan.stages:
        held = []
        for part in stage.parts:
            if part.position in mine:
                bits = 32 if part.trains.name == "FULL" else part.precision.bits
                held.append(f"{part.position}: {part.role.value}, {part.precision.value}, "
                            f"{_bytes(count * bits / 8)}, trains {part.trains.value}")  # fmt: skip
        if held:
            lines.append(f"- stage {stage.number}: " + "; ".join(held))
    return "\n".join(lines)


def _bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return ""
