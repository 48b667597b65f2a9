"""Cutting a definition down to what one plan uses, before extract.py copies it into a script.

Two kinds of test are decided when a script is compiled (`Decided`):

- `uses("feature")` (lower/dispatch.py) is true in the package, where the code under it does
  what the plan asks either way; in a script it is true just for the features its plan has
  (`dispatch.features`), and the script refuses a PLAN edited to use another.
- `isinstance(x, C)`, where C is a plan class (lower/plan.py) no object of the plan is, is
  false: a script holds only the plan classes its plan has, so its reader refuses an edited
  PLAN that names another.

A decided test becomes a constant; `not`, `and` and `or` over constants fold (in a test); an
`if` statement with a constant test becomes the branch it takes (dedented into place, or
`pass` where a block would be left empty) and a conditional expression the value it takes;
a `|` union of types loses the plan classes the plan has not. Nothing else changes. As in
extract.py, the text is edited, then checked node for node against the same rewrite of its
syntax tree.
"""

from __future__ import annotations

import ast
from collections.abc import Callable

import attrs

TRUE, FALSE = "__sw_true__", "__sw_false__"  # decided values while the text is being edited
FEATURE_TEST = ("stackwise_dsl.lower.dispatch", "uses")
PLAN_MODULE = "stackwise_dsl.lower.plan"

# where a name in a definition refers to: ("def", (module, name)), ("import", ...) or None
Resolve = Callable[[str], tuple | None]


class SpecializeError(Exception):
    pass


class AllAbsent(SpecializeError):
    """A union of plan classes none of which the plan has: only code the plan never runs
    can name it."""


@attrs.frozen
class Decided:
    """What is known of a plan when its script is written."""

    features: frozenset[str]  # dispatch.features(plan)
    absent: frozenset[str]  # plan classes no object of the plan is

    def value(self, call: ast.AST, resolve: Resolve) -> bool | None:
        """The value of a `uses(...)` or `isinstance(...)` call, when it is decided."""
        if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
            return None
        if call.func.id == "uses" and resolve("uses") == ("def", FEATURE_TEST):
            arg = call.args[0] if len(call.args) == 1 else None
            if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
                raise SpecializeError("uses() takes a feature's name as a string literal")
            return arg.value in self.features
        if call.func.id == "isinstance" and len(call.args) == 2:
            kinds = call.args[1].elts if isinstance(call.args[1], ast.Tuple) else [call.args[1]]
            kinds = [m for k in kinds for m in _members(k)]
            if all(self.is_absent(k, resolve) for k in kinds):
                return False
        return None

    def is_absent(self, node: ast.AST, resolve: Resolve) -> bool:
        """Whether `node` names a plan class the plan has no object of."""
        name = _dotted(node)
        try:
            target = resolve(name) if name else None
        except KeyError:  # `torch.Tensor`: not one of our modules
            return False
        return (target is not None and target[0] == "def" and target[1][0] == PLAN_MODULE
                and target[1][1] in self.absent)  # fmt: skip


def plan_classes(plan) -> tuple[frozenset[str], frozenset[str]]:
    """(the names of every plan class, of those the plan has objects of)."""
    from stackwise_dsl.lower import plan as p

    every = frozenset(n for n, v in vars(p).items() if isinstance(v, type) and attrs.has(v))
    seen: set[str] = set()
    todo = [plan]
    while todo:
        obj = todo.pop()
        if attrs.has(type(obj)):
            seen.add(type(obj).__name__)
            todo += [getattr(obj, f.name) for f in attrs.fields(type(obj))]
        elif isinstance(obj, tuple | list):
            todo += list(obj)
    return every, frozenset(seen)


def mentions(node: ast.AST, decided: Decided, resolve: Resolve) -> bool:
    """Whether a definition has anything to specialize."""
    return any(_decidable(sub, decided, resolve) for sub in ast.walk(node))


def _decidable(sub: ast.AST, decided: Decided, resolve: Resolve) -> bool:
    if decided.value(sub, resolve) is not None:
        return True
    return _union(sub) and any(decided.is_absent(x, resolve) for x in _members(sub))


def specialize(text: str, decided: Decided, resolve: Resolve) -> str:
    """A top-level definition's source, specialized; checked against `_Fold` on its tree."""
    expected = _Fold(decided, resolve).run(ast.parse(text))
    current = text
    for _ in range(10_000):
        edited = _one_edit(current, decided, resolve)
        if edited is None:
            break
        current = edited
    else:  # pragma: no cover - every edit removes a decided node
        raise SpecializeError("specializing did not settle")
    final = current.replace(TRUE, "True").replace(FALSE, "False")
    try:
        got = ast.parse(final)
    except SyntaxError as e:
        raise SpecializeError(f"specializing broke the syntax: {e}\n{final}") from None
    if ast.dump(got) != ast.dump(expected):
        raise SpecializeError(f"specializing changed more than it should:\n{final}")
    return final


# --- the edits on text ------------------------------------------------------------------------


def _one_edit(text: str, decided: Decided, resolve: Resolve) -> str | None:
    """The text with one decided node rewritten, or None when nothing is left to do."""
    tree = ast.parse(text)
    lines = text.splitlines(keepends=True)
    parents = _parents(tree)
    for node in ast.walk(tree):
        value = decided.value(node, resolve)
        if value is not None:
            return _replace(lines, node, TRUE if value else FALSE)
        if _union(node) and not _union(parents.get(node)):
            members = _members(node)
            kept = [m for m in members if not decided.is_absent(m, resolve)]
            if len(kept) < len(members):
                if not kept:
                    raise AllAbsent(f"every type of `{ast.unparse(node)}` is absent")
                return _replace(lines, node, " | ".join(_segment(lines, m) for m in kept))
        folded = _folded(node, parents)
        if isinstance(folded, str | _Joined):
            return _replace(lines, node, folded)
        if folded is not None:
            tight = isinstance(parents.get(node), _TIGHT)  # an operand: keep it whole
            new = _wrapped(lines, folded) if tight else _segment(lines, folded)
            return _replace(lines, node, new)
        if isinstance(node, ast.If) and _constant(node.test) is not None:
            return _if_replaced(lines, node, _constant(node.test), parents)
    return None


def _folded(node: ast.AST, parents: dict) -> str | ast.AST | None:
    """What a `not`, `and`, `or` or conditional expression over decided values becomes."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        value = _constant(node.operand)
        return None if value is None else (FALSE if value else TRUE)
    if isinstance(node, ast.BoolOp) and _in_test(node, parents):
        values = [_constant(v) for v in node.values]
        if all(v is None for v in values):
            return None
        stop = isinstance(node.op, ast.Or)  # the value that decides the whole
        if stop in values:
            return TRUE if stop else FALSE
        rest = [v for v, c in zip(node.values, values, strict=True) if c is None]
        if not rest:
            return FALSE if stop else TRUE
        if len(rest) == 1:
            return rest[0]
        return _Joined(node.op, rest)
    if isinstance(node, ast.IfExp):
        value = _constant(node.test)
        return None if value is None else (node.body if value else node.orelse)
    return None


# parents whose operand a folded expression becomes
_TIGHT = (ast.UnaryOp, ast.BinOp, ast.BoolOp, ast.Compare, ast.Attribute, ast.Subscript,
          ast.Call, ast.Await, ast.Starred)  # fmt: skip


@attrs.frozen
class _Joined:
    """What is left of an `and` or `or` once its decided operands are gone."""

    op: ast.boolop
    values: list


def _in_test(node: ast.AST, parents: dict) -> bool:
    """Whether only the truth of `node` matters (so `x and False` may become False)."""
    parent = parents.get(node)
    if isinstance(parent, ast.If | ast.IfExp | ast.While) and parent.test is node:
        return True
    if isinstance(parent, ast.UnaryOp) and isinstance(parent.op, ast.Not):
        return True
    return isinstance(parent, ast.BoolOp) and _in_test(parent, parents)


def _replace(lines: list[str], node: ast.AST, new) -> str:
    if isinstance(new, _Joined):
        word = " and " if isinstance(new.op, ast.And) else " or "
        new = word.join(_wrapped(lines, v) for v in new.values)
    start = _offset(lines, node.lineno, node.col_offset)
    end = _offset(lines, node.end_lineno, node.end_col_offset)
    text = "".join(lines)
    return text[:start] + new + text[end:]


def _wrapped(lines: list[str], node: ast.AST) -> str:
    text = _segment(lines, node)
    loose = ast.BoolOp | ast.IfExp | ast.Lambda | ast.NamedExpr | ast.Compare | ast.UnaryOp
    return f"({text})" if isinstance(node, loose | ast.BinOp) else text


def _segment(lines: list[str], node: ast.AST) -> str:
    text = "".join(lines)
    return text[_offset(lines, node.lineno, node.col_offset) :
                _offset(lines, node.end_lineno, node.end_col_offset)]  # fmt: skip


def _offset(lines: list[str], line: int, col: int) -> int:
    before = sum(len(x) for x in lines[: line - 1])
    return before + len(lines[line - 1].encode("utf-8")[:col].decode("utf-8"))


def _if_replaced(lines: list[str], node: ast.If, value: bool, parents: dict) -> str:
    """The `if` statement replaced by the block it takes (its lines dedented), by nothing,
    or by `pass` where its block would be left empty."""
    head = lines[node.lineno - 1]
    indent = node.col_offset
    if not head[indent:].startswith("if "):
        raise SpecializeError(f"an `elif` is decided ({head.strip()}): write it as `else: if`")
    kept = node.body if value else node.orelse
    start, end = node.lineno - 1, node.end_lineno  # the lines it takes, 0-based
    if kept and _is_elif(lines, kept, indent):  # `if <decided false>: ... elif x:` → `if x:`
        first = kept[0].lineno - 1
        body = [lines[first].replace("elif ", "if ", 1), *lines[first + 1 : end]]
    elif kept:
        first = min([kept[0].lineno, *(d.lineno for d in getattr(kept[0], "decorator_list", []))])
        first -= 1
        while first - 1 > start and _comment_at(lines[first - 1], kept[0].col_offset):
            first -= 1  # the comments that open the block go with it
        last = kept[-1].end_lineno
        shift = kept[0].col_offset - indent
        body = [_dedent(line, shift) for line in lines[first:last]]
    else:
        parent = parents.get(node)
        alone = any(getattr(parent, f, None) == [node] for f in ("body", "orelse", "finalbody"))
        body = [" " * indent + "pass\n"] if alone else []
        if not alone and start > 0 and not lines[start - 1].strip() and end < len(lines) and (
            not lines[end].strip() or _dedented(lines[end], indent)
        ):  # fmt: skip
            start -= 1  # no blank line left doubled, or hanging before a block's end
    return "".join([*lines[:start], *body, *lines[end:]])


def _is_elif(lines: list[str], kept: list, indent: int) -> bool:
    return (len(kept) == 1 and isinstance(kept[0], ast.If)
            and lines[kept[0].lineno - 1][indent:].startswith("elif "))  # fmt: skip


def _comment_at(line: str, col: int) -> bool:
    return line[:col].strip() == "" and line[col:].startswith("#")


def _dedented(line: str, indent: int) -> bool:
    return bool(line.strip()) and len(line) - len(line.lstrip(" ")) < indent


def _dedent(line: str, shift: int) -> str:
    if not line.strip():
        return "\n"
    if not line.startswith(" " * shift):
        raise SpecializeError(f"cannot dedent {line!r} (a string spanning lines?)")
    return line[shift:]


# --- the same rewrite on the tree ------------------------------------------------------------


class _Fold(ast.NodeTransformer):
    """What `specialize` must produce, built on the syntax tree."""

    def __init__(self, decided: Decided, resolve: Resolve) -> None:
        self.decided, self.resolve = decided, resolve

    def run(self, tree: ast.Module) -> ast.Module:
        self.parents = _parents(tree)
        blocks = ("body", "orelse", "finalbody")
        filled = {(id(n), f) for n in ast.walk(tree) for f in blocks if getattr(n, f, None)}
        tree = self.visit(tree)
        for node in ast.walk(tree):  # a block left empty holds `pass`
            for field in blocks:
                if getattr(node, field, None) == [] and (id(node), field) in filled:
                    setattr(node, field, [ast.Pass()])
        tree = _Finish().visit(tree)
        return ast.fix_missing_locations(tree)

    def generic_visit(self, node: ast.AST) -> ast.AST:
        value = self.decided.value(node, self.resolve)
        if value is not None:
            return ast.Name(TRUE if value else FALSE, ast.Load())
        if _union(node) and not _union(self.parents.get(node)):
            kept = [m for m in _members(node) if not self.decided.is_absent(m, self.resolve)]
            if not kept:
                raise AllAbsent(f"every type of `{ast.unparse(node)}` is absent")
            node = kept[0]
            for m in kept[1:]:
                node = ast.BinOp(node, ast.BitOr(), m)
            return node
        super().generic_visit(node)
        if isinstance(node, ast.If) and _constant(node.test) is not None:
            return node.body if _constant(node.test) else node.orelse
        folded = _folded(node, self.parents)
        if isinstance(folded, str):
            return ast.Name(folded, ast.Load())
        if isinstance(folded, _Joined):
            return ast.BoolOp(folded.op, folded.values)
        return folded if folded is not None else node


class _Finish(ast.NodeTransformer):
    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in (TRUE, FALSE):
            return ast.Constant(node.id == TRUE)
        return node


# --- shared ------------------------------------------------------------------------------------


def _constant(node: ast.AST) -> bool | None:
    if isinstance(node, ast.Name) and node.id in (TRUE, FALSE):
        return node.id == TRUE
    return None


def _union(node: ast.AST | None) -> bool:
    return isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr) and all(
        isinstance(m, ast.Name | ast.Attribute | ast.Constant) for m in _members(node)
    )  # fmt: skip


def _members(node: ast.AST) -> list[ast.AST]:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return [*_members(node.left), *_members(node.right)]
    return [node]


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return f"{node.value.id}.{node.attr}"
    return None


def _parents(tree: ast.AST) -> dict:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
