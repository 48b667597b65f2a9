"""Diagnostics: what is wrong, where, and how to fix it; rendered like rustc, or as JSON.

Every stage of the front end collects `Diagnostic`s instead of raising, so that one report
lists every problem. Each carries a stable code (`codes.CODES`, documented in
docs/diagnostics.md), the actual values in its message, a span, and where it helps a hint and
notes that point at related places.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping

import attrs

from stackwise_dsl.source import Source, Span


class Severity(enum.Enum):
    ERROR = "error"
    WARNING = "warning"


@attrs.frozen(kw_only=True)
class Note:
    """A remark attached to a diagnostic, optionally pointing at another place."""

    message: str
    span: Span | None = None


@attrs.frozen(kw_only=True)
class Diagnostic:
    """One problem: a stable code, a message with the actual values, and where it is."""

    code: str
    severity: Severity
    message: str
    span: Span | None = None
    label: str | None = None
    hint: str | None = None
    notes: tuple[Note, ...] = ()
    # a fix an editor can apply: the text that replaces the span (a did-you-mean's word)
    replacement: str | None = None

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR


def error(code: str, message: str, span: Span | None, **kw) -> Diagnostic:
    """An error diagnostic; keyword arguments are `label`, `hint`, `notes` and `replacement`
    (elaborate/suggest.py's `suggestion` gives a did-you-mean's hint and replacement)."""
    return Diagnostic(code=code, severity=Severity.ERROR, message=message, span=span, **kw)


def warning(code: str, message: str, span: Span | None, **kw) -> Diagnostic:
    """A warning diagnostic; keyword arguments are `label`, `hint`, `notes` and `replacement`."""
    return Diagnostic(code=code, severity=Severity.WARNING, message=message, span=span, **kw)


def has_errors(diagnostics: Iterable[Diagnostic]) -> bool:
    return any(d.is_error for d in diagnostics)


def sort_key(d: Diagnostic) -> tuple:
    """Report order: by source, then position, then code."""
    if d.span is None:
        return ("", 0, 0, d.code)
    return (d.span.source, d.span.line, d.span.column, d.code)


def dedupe(found: Iterable[Diagnostic]) -> tuple[Diagnostic, ...]:
    """The same code at the same place once, sorted by place: a fact reported by several
    stages (a base setting seen by every stage override) is one diagnostic."""
    seen: set = set()
    out = []
    for d in found:
        span = d.span
        key = (d.code, None if span is None else (span.source, span.start, span.end))
        if key not in seen:
            seen.add(key)
            out.append(d)
    return tuple(sorted(out, key=sort_key))


# A rendered line is a sequence of (text, style) segments; style is a rich style name or "".
Segment = tuple[str, str]
Line = tuple[Segment, ...]

_SEVERITY_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "bold yellow"}


def render(d: Diagnostic, sources: Mapping[str, Source]) -> list[Line]:
    """Render one diagnostic as styled lines: header, location, excerpt with caret, notes."""
    style = _SEVERITY_STYLE[d.severity]
    lines: list[Line] = [
        ((f"{d.severity.value}[{d.code}]", style), (f": {d.message}", "bold")),
    ]
    source = sources.get(d.span.source) if d.span else None
    if d.span is not None:
        gutter = " " * len(str(d.span.line))
        lines.append(((f"{gutter}--> ", "blue"), (d.span.location, "")))
        if source is not None:
            lines.extend(_excerpt(d, source, gutter, style))
    else:
        gutter = ""
    if d.hint:
        lines.append(((f"{gutter} = ", "blue"), ("hint: ", "bold"), (d.hint, "")))
    for note in d.notes:
        where = f" ({note.span.location})" if note.span else ""
        lines.append(((f"{gutter} = ", "blue"), ("note: ", "bold"), (note.message + where, "")))
    return lines


def _excerpt(d: Diagnostic, source: Source, gutter: str, style: str) -> list[Line]:
    """The source line of the span with a caret underline (first line of multi-line spans)."""
    span = d.span
    text = source.line_text(span.line).expandtabs(1)
    start = max(span.column - 1, 0)
    stop = span.end_column - 1 if span.end_line == span.line else len(text)
    width = max(stop - start, 1)
    caret = " " * start + "^" * width
    label = f" {d.label}" if d.label else ""
    return [
        ((f"{gutter} |", "blue"),),
        ((f"{span.line} | ", "blue"), (text, "")),
        ((f"{gutter} | ", "blue"), (caret + label, style)),
    ]


def plain(lines: Iterable[Line]) -> str:
    """Rendered lines as plain text (no styles)."""
    return "\n".join("".join(text for text, _ in line).rstrip() for line in lines)


def render_text(diagnostics: Iterable[Diagnostic], sources: Mapping[str, Source]) -> str:
    """Every diagnostic as plain text, separated by blank lines."""
    return "\n\n".join(plain(render(d, sources)) for d in diagnostics)


def to_json(d: Diagnostic) -> dict:
    """A JSON-ready mapping for `--format json`; positions are 1-based."""
    out: dict = {"code": d.code, "severity": d.severity.value, "message": d.message}
    out.update(_json_span(d.span))
    out["label"] = d.label
    out["hint"] = d.hint
    out["notes"] = [{"message": n.message, **_json_span(n.span)} for n in d.notes]
    return out


def _json_span(span: Span | None) -> dict:
    if span is None:
        return {"file": None, "line": None, "column": None, "end_line": None, "end_column": None}
    return {
        "file": span.source,
        "line": span.line,
        "column": span.column,
        "end_line": span.end_line,
        "end_column": span.end_column,
    }
