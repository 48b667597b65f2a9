"""Source texts and spans: where every piece of a spec came from.

A `Span` names its source (a file path, or `--set` for a command-line override) and a
half-open range of character offsets with 1-based line and column numbers. Spans are excluded
from equality everywhere in the IR, so two specs that say the same thing compare equal
wherever they were written.
"""

from __future__ import annotations

import attrs

SET_SOURCE = "--set"
MAX_FILE_BYTES = 1 << 20  # a spec file, or one it includes or extends: 1 MiB


@attrs.frozen(kw_only=True)
class Span:
    """A half-open character range [start, end) in one source, with 1-based line/column."""

    source: str
    start: int
    end: int
    line: int
    column: int
    end_line: int
    end_column: int

    def cover(self, other: Span) -> Span:
        """The smallest span holding both (same source); `self` wins on a source mismatch."""
        if other.source != self.source:
            return self
        first, last = (self, other) if self.start <= other.start else (other, self)
        end = last if last.end >= first.end else first
        return attrs.evolve(first, end=end.end, end_line=end.end_line, end_column=end.end_column)

    @property
    def location(self) -> str:
        return f"{self.source}:{self.line}:{self.column}"


def span_field():
    """An attrs field for a span: optional, and never part of equality, hashing or repr."""
    return attrs.field(default=None, eq=False, hash=False, repr=False)


@attrs.frozen
class Source:
    """One text the compiler read: a file, an included file, or a `--set` override."""

    name: str
    text: str
    # the text split into lines, made on first use (a file with thousands of diagnostics
    # would otherwise split it once per diagnostic)
    _lines: list | None = attrs.field(default=None, init=False, eq=False, repr=False)

    def line_text(self, line: int) -> str:
        """Line `line` (1-based). Lines end at "\n" only, as they do for the lexer."""
        lines = self._lines
        if lines is None:
            lines = self.text.split("\n")
            object.__setattr__(self, "_lines", lines)
        return lines[line - 1].rstrip("\r") if 0 < line <= len(lines) else ""

    def span(self, start: int, end: int) -> Span:
        """The span of text[start:end], with line and column computed from the text."""
        line, column = _position(self.text, start)
        end_line, end_column = _position(self.text, end)
        return Span(
            source=self.name,
            start=start,
            end=end,
            line=line,
            column=column,
            end_line=end_line,
            end_column=end_column,
        )


def _position(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, column
