"""`sw fmt`: print a syntax tree in the one canonical style, keeping every comment.

The style: two-space indentation, `a = b` with single spaces, `{ a = 1, b = 2 }` for bodies
written on one line that still fit in 100 columns, one item per line otherwise; the same for
calls and lists; at most one blank line between items, as the author placed them. Comments
stay with the item they precede or trail; none is dropped.
"""

from __future__ import annotations

from stackwise_dsl.syntax import tree as t

WIDTH = 100
_INDENT = "  "
_PREC = {"->": 1, "+": 2, "-": 2, "x": 3, "*": 4, "/": 4, "//": 4}
_NEG_PREC = 5
_ATOM_PREC = 6


def format_document(doc: t.Document) -> str:
    """The canonical text of a document; formatting the result again changes nothing. Lines
    end as the document's first line ends (CRLF stays CRLF), else with LF."""
    printer = _Printer(doc)
    lines = printer.sequence(doc.items, indent=0, end=len(doc.source.text) + 1)
    text = "\n".join(lines).rstrip("\n") + "\n" if lines else ""
    first = doc.source.text.find("\n")
    if first > 0 and doc.source.text[first - 1] == "\r":
        text = text.replace("\n", "\r\n")
    return text


def format_string(value: str) -> str:
    """A string literal for `value`, escaping quotes, backslashes and invisible characters."""
    out = ['"']
    for ch in value:
        out.append(_escape(ch))
    out.append('"')
    return "".join(out)


def _escape(ch: str) -> str:
    simple = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r", "\0": "\\0"}
    if ch in simple:
        return simple[ch]
    code = ord(ch)
    if code < 0x20 or code == 0x7F or 0x80 <= code < 0xA0 or ch in "\u2028\u2029\ufeff":
        return f"\\u{code:04x}"
    return ch


def inline_expr(e: t.Expr) -> str:
    """An expression on one line, with only the parentheses its structure needs."""
    if isinstance(e, t.Number):
        return e.text
    if isinstance(e, t.String):
        return format_string(e.value)
    if isinstance(e, t.Name):
        return e.name
    if isinstance(e, t.Call):
        return f"{e.name.name}({', '.join(_inline_arg(a) for a in e.args)})"
    if isinstance(e, t.ListExpr):
        return f"[{', '.join(inline_expr(i) for i in e.items)}]"
    if isinstance(e, t.Neg):
        return "-" + _wrap(e.operand, _prec(e.operand) < _NEG_PREC)
    return _inline_binary(e)


def _inline_binary(e: t.Binary) -> str:
    """Left-associative chains are printed iteratively, however long."""
    p = _PREC[e.op]
    if e.op in ("x", "->"):
        left = _wrap(e.left, _prec(e.left) <= p)
        return f"{left} {e.op} {_wrap(e.right, _prec(e.right) <= p)}"
    spine = []
    node: t.Expr = e
    while isinstance(node, t.Binary) and _PREC[node.op] == p and node.op not in ("x", "->"):
        spine.append(node)
        node = node.left
    parts = [_wrap(node, _prec(node) < p)]
    for b in reversed(spine):
        parts.append(f"{b.op} {_wrap(b.right, _prec(b.right) <= p)}")
    return " ".join(parts)


def _wrap(e: t.Expr, parens: bool) -> str:
    text = inline_expr(e)
    return f"({text})" if parens else text


def _prec(e: t.Expr) -> int:
    if isinstance(e, t.Binary):
        return _PREC[e.op]
    if isinstance(e, t.Neg):
        return _NEG_PREC
    return _ATOM_PREC


def _inline_arg(a: t.Expr | t.Kwarg) -> str:
    if isinstance(a, t.Kwarg):
        return f"{a.name.name} = {inline_expr(a.value)}"
    return inline_expr(a)


class _Printer:
    """Walks the tree once, handing out comments in source order as it passes them."""

    def __init__(self, doc: t.Document) -> None:
        self.comments = sorted(doc.comments, key=lambda c: c.span.start)
        self.next = 0
        self.lines = doc.source.text.split("\n")  # lines as the lexer counts them

    # comments

    def _take_before(self, pos: int) -> list[t.Comment]:
        taken = []
        while self.next < len(self.comments) and self.comments[self.next].span.start < pos:
            taken.append(self.comments[self.next])
            self.next += 1
        return taken

    def _take_trailing(self, node) -> t.Comment | None:
        if self.next < len(self.comments):
            c = self.comments[self.next]
            if c.span.line == node.span.end_line and c.span.start >= node.span.end:
                self.next += 1
                return c
        return None

    def _comments_within(self, node) -> bool:
        if self.next >= len(self.comments):
            return False
        c = self.comments[self.next]
        return node.span.start <= c.span.start < node.span.end

    def _blank_between(self, after_line: int, before_line: int) -> bool:
        between = self.lines[after_line : before_line - 1]
        return any(not line.strip() for line in between)

    # sequences of items, args or list elements

    def sequence(self, elements, *, indent: int, end: int, render=None, sep: str = "") -> list[str]:
        """Elements one per line with their comments; blank lines kept, collapsed to one."""
        render = render or self.item
        out: list[str] = []
        last_line = None
        for el in elements:
            for c in self._take_before(el.span.start):
                last_line = self._emit(out, [c.text], c.span.line, c.span.line, last_line)
            el_lines = render(el, indent)
            el_lines[-1] += sep
            trailing = self._take_trailing(el)
            if trailing is not None:
                el_lines[-1] += "  " + trailing.text
            last_line = self._emit(out, el_lines, el.span.line, el.span.end_line, last_line)
        for c in self._take_before(end):
            last_line = self._emit(out, [c.text], c.span.line, c.span.line, last_line)
        return out

    def _emit(self, out: list[str], lines: list[str], first: int, last: int, prev) -> int:
        if prev is not None and out and self._blank_between(prev, first):
            out.append("")
        out.extend(lines)
        return last

    # items

    def item(self, it: t.Item, indent: int) -> list[str]:
        if isinstance(it, t.Let):
            return self._with_expr(f"let {it.name.name} = ", it.value, indent)
        if isinstance(it, t.Include):
            return [f"include {format_string(it.path.value)}"]
        if isinstance(it, t.Extends):
            return [f"extends {format_string(it.path.value)}"]
        if isinstance(it, t.StackDef):
            return self._with_expr(f"stack {it.name.name} = ", it.value, indent)
        if isinstance(it, t.Assign):
            return self._with_expr(f"{it.name.name} = ", it.value, indent)
        if isinstance(it, t.Cadence):
            return [f"{it.name.name} every {inline_expr(it.every)} steps"]
        if isinstance(it, t.Flag):
            return self._with_expr("", it.value, indent)
        return self._body(_head(it), it.body, indent)

    def _body(self, head: str, body: t.Body, indent: int) -> list[str]:
        if not body.items and not self._comments_within(body):
            return [f"{head} {{}}"]
        if body.one_line and not self._comments_within(body):
            one = f"{head} {{ {', '.join(_inline_item(i) for i in body.items)} }}"
            if len(_INDENT * indent) + len(one) <= WIDTH:
                return [one]
        inner = self.sequence(body.items, indent=indent + 1, end=body.span.end)
        return [f"{head} {{", *_indented(inner), "}"]

    # expressions that may break over lines

    def _with_expr(self, prefix: str, e: t.Expr, indent: int) -> list[str]:
        lines = self.expr(e, indent, len(_INDENT * indent) + len(prefix))
        lines[0] = prefix + lines[0]
        return lines

    def expr(self, e: t.Expr, indent: int, column: int) -> list[str]:
        """An expression starting at `column`; calls and lists break when they must."""
        breakable = isinstance(e, t.Call | t.ListExpr) and (
            e.args if isinstance(e, t.Call) else e.items
        )
        if not breakable:
            return [inline_expr(e)]
        one = inline_expr(e)
        written_on_one_line = e.span is None or e.span.line == e.span.end_line
        if written_on_one_line and not self._comments_within(e) and column + len(one) <= WIDTH:
            return [one]
        if isinstance(e, t.Call):
            opener, elements, closer = f"{e.name.name}(", e.args, ")"
        else:
            opener, elements, closer = "[", e.items, "]"
        inner = self.sequence(
            elements, indent=indent + 1, end=e.span.end - 1, render=self._element, sep=","
        )
        return [opener, *_indented(inner), closer]

    def _element(self, el, indent: int) -> list[str]:
        if isinstance(el, t.Kwarg):
            return self._with_expr(f"{el.name.name} = ", el.value, indent)
        return self.expr(el, indent, len(_INDENT * indent))


def _head(it: t.Item) -> str:
    if isinstance(it, t.BlockDef):
        return f"block {it.name.name}"
    if isinstance(it, t.Grow):
        stacks = f" {inline_expr(it.stacks)}" if it.stacks is not None else ""
        return f"grow {it.direction.name}{stacks}"
    if isinstance(it, t.Stage):
        last = f"..{inline_expr(it.last)}" if it.last is not None else ""
        return f"stage {inline_expr(it.first)}{last}"
    return it.name.name


def _inline_item(it: t.Item) -> str:
    if isinstance(it, t.Assign):
        return f"{it.name.name} = {inline_expr(it.value)}"
    if isinstance(it, t.Cadence):
        return f"{it.name.name} every {inline_expr(it.every)} steps"
    if isinstance(it, t.Flag):
        return inline_expr(it.value)
    if isinstance(it, t.Section | t.Stage):
        inner = ", ".join(_inline_item(i) for i in it.body.items)
        return f"{_head(it)} {{ {inner} }}" if inner else f"{_head(it)} {{}}"
    return f"{_head(it)} {{ ... }}"


def _indented(lines: list[str]) -> list[str]:
    return [_INDENT + line if line else line for line in lines]
