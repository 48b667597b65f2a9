"""Text → syntax tree, with every syntax error in the file reported, in words.

Lark's LALR parser builds the tree inline (no intermediate parse tree). On a syntax error we
record a diagnostic, blank out the offending item (spaces, so every offset and line number
stays true) and parse again, until the file parses or nothing more can be skipped.
"""

from __future__ import annotations

import math
import re
import threading

import attrs
import lark
from lark import Token, Transformer

from stackwise_dsl import diagnostics as diag
from stackwise_dsl.source import Source, Span
from stackwise_dsl.syntax import tree as t
from stackwise_dsl.syntax.errors import at_end, describe_syntax_error, number_run
from stackwise_dsl.syntax.lexing import (
    blank_item,
    decode_string,
    deepest_nesting,
    number_value,
    scan_comments,
    unclosed_bracket,
    unclosed_brackets,
    without_bom,
)

MAX_SYNTAX_ERRORS = 25
KEYWORDS = frozenset({"let", "include", "extends", "block", "stack", "grow", "stage", "every", "x"})
MAX_NESTING = 64


@attrs.frozen
class ParseResult:
    """A document, or None when the text has syntax errors; and the diagnostics either way."""

    document: t.Document | None
    diagnostics: tuple[diag.Diagnostic, ...]


def parse(text: str, name: str) -> ParseResult:
    """Parse one file's text; `name` is the path shown in diagnostics. A leading byte-order
    mark is dropped (`without_bom`): the document and its spans are of the text after it."""
    text = without_bom(text)
    source = Source(name, text)
    too_deep = _nesting_problem(source)
    if too_deep is not None:
        return ParseResult(None, (too_deep,))
    lone = re.search(r"\r(?!\n)", text)
    if lone is not None:  # classic Mac line ends: lines and columns would be wrong everywhere
        span = source.span(lone.start(), lone.start() + 1)
        said = "a line ends with a carriage return alone (U+000D without a line feed)"
        hint = "save the file with LF or CRLF line endings"
        return ParseResult(None, (diag.error("SW002", said, span, hint=hint),))
    found: list[diag.Diagnostic] = []
    work, ended = text, False  # ended: an end-of-file error is reported
    for _ in range(MAX_SYNTAX_ERRORS):
        parser, builder = _parser(source)
        try:
            items = parser.parse(work, start="start")
        except lark.exceptions.UnexpectedInput as e:
            if not (at_end(e) and _made_by_recovery(work, text, ended)):
                found.append(describe_syntax_error(e, source, work))
                ended = ended or at_end(e)
            blanked = blank_item(work, e)
            if blanked == work:
                break
            work = blanked
            continue
        found.extend(builder.without_echoes())
        if found:
            break
        document = t.Document(items=tuple(items), comments=scan_comments(source), source=source)
        return ParseResult(document, ())
    return ParseResult(None, tuple(found))


def _made_by_recovery(work: str, text: str, ended: bool) -> bool:
    """Whether an end of file met in `work` (`text` with earlier errors' items blanked) is
    one the recovery made: a second one after one already reported (`ended`), or, once an
    item was blanked, one whose open bracket `text` itself closes (the blanked item held the
    closer)."""
    if ended:
        return True
    if work == text:
        return False
    opener = unclosed_bracket(work)
    return opener is None or opener not in unclosed_brackets(text)


def _nesting_problem(source: Source) -> diag.Diagnostic | None:
    """Brackets nested deeper than MAX_NESTING (no spec needs that; it would only exhaust
    the recursion of the later passes)."""
    offset = deepest_nesting(source.text, MAX_NESTING)
    if offset is None:
        return None
    message = f"brackets are nested more than {MAX_NESTING} levels deep"
    return diag.error("SW001", message, source.span(offset, offset + 1))


def parse_expr(text: str, name: str) -> tuple[t.Expr | None, tuple[diag.Diagnostic, ...]]:
    """Parse a lone expression (the value of a `--set` override): the expression and the
    problems in it (an invalid escape, a number too large), or None and the syntax error
    when the text is not an expression or nests too deeply to be one."""
    source = Source(name, text)
    too_deep = _nesting_problem(source)
    if too_deep is not None:
        return None, (too_deep,)
    parser, builder = _parser(source)
    try:
        expr = parser.parse(text, start="expr")
    except lark.exceptions.UnexpectedInput as e:
        return None, (describe_syntax_error(e, source, text),)
    return expr, tuple(builder.problems)


_KEPT = threading.local()  # this thread's parser and the builder its callbacks are bound to


def _parser(source: Source) -> tuple[lark.Lark, _ToTree]:
    """A parser whose inline callbacks build syntax nodes of `source`. Building one costs
    about as much as parsing a 100-line spec, so each thread keeps one and points its builder
    at each new source (the language server parses on every edit)."""
    from stackwise_dsl.syntax.tables import build_parser

    kept = getattr(_KEPT, "parser", None)
    if kept is None:
        builder = _ToTree(source)
        kept = _KEPT.parser = (build_parser(builder), builder)
    kept[1].reset(source)
    return kept


def _span(source: str, first, last=None) -> Span:
    """The span from the start of `first` to the end of `last` (tokens or nodes)."""
    a = first if isinstance(first, Token) else first.span
    b = a if last is None else (last if isinstance(last, Token) else last.span)
    if isinstance(a, Token):
        a = _token_span(source, a)
    if isinstance(b, Token):
        b = _token_span(source, b)
    return Span(
        source=source,
        start=a.start,
        end=b.end,
        line=a.line,
        column=a.column,
        end_line=b.end_line,
        end_column=b.end_column,
    )


def _abbreviated(literal: str) -> str:
    """A literal for a message: whole when short, else its start and its length."""
    if len(literal) <= 40:
        return literal
    return f"{literal[:20]}... ({len(literal):,} characters)"


def _token_span(source: str, tok: Token) -> Span:
    return Span(
        source=source,
        start=tok.start_pos,
        end=tok.end_pos,
        line=tok.line,
        column=tok.column,
        end_line=tok.end_line,
        end_column=tok.end_column,
    )


class _ToTree(Transformer):
    """Lark callbacks, one per grammar rule, each building one syntax node."""

    def __init__(self, source: Source) -> None:
        super().__init__()
        self.reset(source)

    def reset(self, source: Source) -> None:
        """Build the nodes of `source` from now on, with no problems found yet."""
        self.source = source
        self.problems: list[diag.Diagnostic] = []
        self.numbers: list[diag.Diagnostic] = []  # numbers run into a name (`2_000`)

    def without_echoes(self) -> list[diag.Diagnostic]:
        """The problems found; but on a line where a number runs into a name (`2_000 x b`),
        that number's alone: the words after it make odd items (`x` as a name, a cadence
        counted in `_000`) that only echo it."""
        lines = {d.span.line for d in self.numbers}
        return [d for d in self.problems if d in self.numbers or d.span.line not in lines]

    def _s(self, first, last=None) -> Span:
        return _span(self.source.name, first, last)

    def _name(self, tok: Token) -> t.Name:
        """A name. Keywords are reserved: where the lexer lets one through as a name (after a
        comma, say), it would read as the keyword once `sw fmt` puts items on their own lines."""
        span = self._s(tok)
        if tok in KEYWORDS:
            why = " (it repeats: `2 x s`)" if tok == "x" else ""
            problem = diag.error(
                "SW001",
                f"`{tok}` is a keyword and cannot be a name{why}",
                span,
                hint="choose another name",
            )
            self.problems.append(problem)
        return t.Name(name=str(tok), span=span)

    # items

    def start(self, c):
        return c

    def let(self, c):
        return t.Let(name=self._name(c[1]), value=c[2], span=self._s(c[0], c[2]))

    def include(self, c):
        return t.Include(path=self.string([c[1]]), span=self._s(c[0], c[1]))

    def extends(self, c):
        return t.Extends(path=self.string([c[1]]), span=self._s(c[0], c[1]))

    def block_def(self, c):
        return t.BlockDef(name=self._name(c[1]), body=c[2], span=self._s(c[0], c[2]))

    def stack_def(self, c):
        return t.StackDef(name=self._name(c[1]), value=c[2], span=self._s(c[0], c[2]))

    def grow(self, c):
        return t.Grow(direction=self._name(c[1]), stacks=c[2], body=c[3], span=self._s(c[0], c[3]))

    def stage(self, c):
        return t.Stage(first=c[1], last=c[2], body=c[3], span=self._s(c[0], c[3]))

    def body(self, c):
        one_line = c[0].line == c[-1].line
        return t.Body(items=tuple(c[1:-1]), one_line=one_line, span=self._s(c[0], c[-1]))

    def assign(self, c):
        return t.Assign(name=self._name(c[0]), value=c[1], span=self._s(c[0], c[1]))

    def section(self, c):
        return t.Section(name=self._name(c[0]), body=c[1], span=self._s(c[0], c[1]))

    def cadence(self, c):
        if str(c[2]) != "steps":
            self.problems.append(
                diag.error(
                    "SW001",
                    f'a cadence is counted in steps, not "{c[2]}"',
                    self._s(c[2]),
                    hint=f"write `{c[0]} every N steps`",
                )
            )
        return t.Cadence(name=self._name(c[0]), every=c[1], span=self._s(c[0], c[2]))

    def flag(self, c):
        value = self._name(c[0]) if isinstance(c[0], Token) else c[0]
        return t.Flag(value=value, span=value.span)

    # expressions

    def _binary(self, op: str, left, right):
        return t.Binary(op=op, left=left, right=right, span=self._s(left, right))

    def arrow(self, c):
        return self._binary("->", c[0], c[1])

    def add(self, c):
        return self._binary("+", c[0], c[1])

    def sub(self, c):
        return self._binary("-", c[0], c[2])

    def repeat(self, c):
        return self._binary("x", c[0], c[1])

    def mul(self, c):
        return self._binary("*", c[0], c[1])

    def div(self, c):
        return self._binary("/", c[0], c[1])

    def floordiv(self, c):
        return self._binary("//", c[0], c[1])

    def neg(self, c):
        node = t.Neg(operand=c[1], span=self._s(c[0], c[1]))
        depth, inner = 1, c[1]
        while isinstance(inner, t.Neg) and depth <= MAX_NESTING + 1:
            depth, inner = depth + 1, inner.operand
        if depth == MAX_NESTING + 1:  # reported once, at the outermost `-` past the limit
            self.problems.append(
                diag.error("SW001", f"more than {MAX_NESTING} signs in a row", node.span)
            )
        return node

    def number(self, c):
        value = number_value(str(c[0]))
        span = self._s(c[0])
        if value is None:
            shown = _abbreviated(str(c[0]))
            message = f"the number {shown} is larger than 10^18"
            hint = "no field takes a whole number that large"
            self.problems.append(diag.error("SW007", message, span, hint=hint))
            value = 0
        elif isinstance(value, float) and not math.isfinite(value):
            message = f"the number {_abbreviated(str(c[0]))} is too large"
            self.problems.append(diag.error("SW109", message, span))
            value = 0
        self._runs_into_name(c[0])
        return t.Number(text=str(c[0]), value=value, span=span)

    def _runs_into_name(self, tok: Token) -> None:
        """`2K` reads as the number 2 and then an item `K`: refused (errors.number_run)."""
        problem = number_run(self.source, tok.start_pos, tok.end_pos)
        if problem is not None:
            self.problems.append(problem)
            self.numbers.append(problem)

    def string(self, c):
        span = self._s(c[0])
        value, problem = decode_string(str(c[0]))
        if problem is not None:
            self.problems.append(diag.error("SW003", problem.message, span, hint=problem.hint))
        return t.String(value=value, text=str(c[0]), span=span)

    def name(self, c):
        return self._name(c[0])

    def group(self, c):
        return attrs.evolve(c[1], span=self._s(c[0], c[2]))

    def call(self, c):
        args = tuple(c[2:-1])
        return t.Call(name=self._name(c[0]), args=args, span=self._s(c[0], c[-1]))

    def kwarg(self, c):
        return t.Kwarg(name=self._name(c[0]), value=c[1], span=self._s(c[0], c[1]))

    def list(self, c):
        return t.ListExpr(items=tuple(c[1:-1]), span=self._s(c[0], c[-1]))
