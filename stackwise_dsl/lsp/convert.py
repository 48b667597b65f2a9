"""Between the front end's spans and diagnostics and the language server protocol's ranges and
diagnostics (lsprotocol types). Spans count lines from 1 and columns in code points from 1;
the protocol counts both from 0, columns in UTF-16 code units."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from lsprotocol import types as lsp

from stackwise_dsl import diagnostics as diag
from stackwise_dsl.source import Source, Span

SOURCE = "sw"  # the `source` of every diagnostic the server publishes


def uri_of(path: str) -> str:
    return Path(path).resolve().as_uri()


def path_of(uri: str) -> str:
    """The file a `file:` URI names (other schemes: the URI itself, as the document's name)."""
    from urllib.parse import unquote, urlparse

    parsed = urlparse(uri)
    if parsed.scheme != "file":
        return uri
    return unquote(parsed.path)


UTF16 = "utf-16"  # the protocol's default; a client may agree on "utf-8" or "utf-32"


def _width(ch: str, encoding: str) -> int:
    if encoding == "utf-8":
        return len(ch.encode("utf-8"))
    if encoding == "utf-32":
        return 1
    return 2 if ord(ch) > 0xFFFF else 1


def units(text: str, encoding: str = UTF16) -> int:
    """The length of `text` in the position encoding's code units."""
    if encoding == "utf-32" or text.isascii():
        return len(text)
    return sum(_width(ch, encoding) for ch in text)


def code_points(line: str, column: int, encoding: str = UTF16) -> int:
    """The code-point column of the column `column` (in code units) of `line`, clamped."""
    seen = 0
    for i, ch in enumerate(line):
        if seen >= column:
            return i
        seen += _width(ch, encoding)
    return len(line)


def position(source: Source | None, line: int, column: int, encoding: str = UTF16) -> lsp.Position:
    """The protocol position of 1-based `line` and code-point `column`."""
    text = source.line_text(line) if source is not None else ""
    return lsp.Position(line=max(line - 1, 0),
                        character=units(text[: max(column - 1, 0)], encoding))  # fmt: skip


def range_of(span: Span | None, sources: Mapping[str, Source], encoding: str = UTF16) -> lsp.Range:
    """The protocol range of `span` (the start of the file when there is none)."""
    if span is None:
        start = lsp.Position(line=0, character=0)
        return lsp.Range(start=start, end=start)
    source = sources.get(span.source)
    end_line, end_column = span.end_line, span.end_column
    point = (end_line, end_column) == (span.line, span.column) and source is not None
    if point and span.column <= len(source.line_text(span.line)):  # on a character: show it
        end_column += 1  # as `sw check` underlines one character
    return lsp.Range(start=position(source, span.line, span.column, encoding),
                     end=position(source, end_line, end_column, encoding))  # fmt: skip


def offset(text: str, where: lsp.Position, encoding: str = UTF16) -> int:
    """The character offset in `text` of a protocol position."""
    lines = text.split("\n")
    if where.line >= len(lines):
        return len(text)
    before = sum(len(x) + 1 for x in lines[: where.line])
    return before + code_points(lines[where.line], where.character, encoding)


_SEVERITY = {diag.Severity.ERROR: lsp.DiagnosticSeverity.Error,
             diag.Severity.WARNING: lsp.DiagnosticSeverity.Warning}  # fmt: skip


def diagnostics_for(path: str, found, sources: Mapping[str, Source], encoding: str = UTF16,
                    via: Mapping[str, Span] | None = None) -> list[lsp.Diagnostic]:  # fmt: skip
    """The diagnostics to show in the document at `path`: those whose span lies in it; those of
    an included or extended file on the `include`/`extends` that leads to it (`via`: a file's
    name -> the span that read it), said where they are and pointing there as related
    information; those of a `--set` or of no place at the top of it."""
    out = []
    for d in found:
        here = d.span is not None and _same_file(d.span.source, path)
        message = d.message
        shown_at = d.span if here else _entry(d.span, path, via or {})
        related = []
        if d.span is not None and not here:
            message = f"{d.span.location}: {message}"
            if not d.span.source.startswith("<"):
                related.append(_related(d.span, d.message, path, sources, encoding))
        if d.hint:
            message += f"\nhint: {d.hint}"
        related += [
            _related(note.span, note.message, path, sources, encoding)
            for note in d.notes
            if note.span is not None
        ]
        message += "".join(f"\nnote: {note.message}" for note in d.notes if note.span is None)
        out.append(
            lsp.Diagnostic(
                range=range_of(shown_at, sources, encoding),
                message=message,
                severity=_SEVERITY[d.severity],
                code=d.code,
                source=SOURCE,
                related_information=related or None,
                data=_fix(d, sources, encoding) if here and d.replacement is not None else None,
            )
        )
    return out


def _related(span: Span, message: str, path: str, sources: Mapping[str, Source],
             encoding: str) -> lsp.DiagnosticRelatedInformation:  # fmt: skip
    where = lsp.Location(uri=_uri_for(span.source, path), range=range_of(span, sources, encoding))
    return lsp.DiagnosticRelatedInformation(location=where, message=message)


def _entry(span: Span | None, path: str, via: Mapping[str, Span]) -> Span | None:
    """Where the document at `path` reads the file `span` lies in: its `include` or `extends`
    (through included files' own includes); None (the top) when it does not."""
    seen = set()
    while span is not None and span.source in via and span.source not in seen:
        seen.add(span.source)
        span = via[span.source]
        if _same_file(span.source, path):
            return span
    return None


def _same_file(source: str, path: str) -> bool:
    if source == path:
        return True
    if source.startswith("<"):
        return False
    try:
        return Path(source).resolve() == Path(path).resolve()
    except (OSError, ValueError):
        return False


def _uri_for(source: str, path: str) -> str:
    if source.startswith("<"):  # a `--set` or an unnamed text: point at the document
        return uri_of(path)
    return uri_of(source)


def _fix(d, sources: Mapping[str, Source], encoding: str) -> dict | None:
    """The quick fix of a did-you-mean: its word, and the range of the misspelt word alone
    (the diagnostic may underline a whole call, `adamm(lr = 1e-3)`, whose arguments stay)."""
    source = sources.get(d.span.source)
    if source is None:
        return None
    written = re.match(r"\w[\w.]*", source.text[d.span.start : d.span.end])
    if written is None:
        return None
    word = source.span(d.span.start, d.span.start + written.end())
    return {"replace": d.replacement, "range": _plain(range_of(word, sources, encoding))}


def _plain(r: lsp.Range) -> dict:
    return {"start": {"line": r.start.line, "character": r.start.character},
            "end": {"line": r.end.line, "character": r.end.character}}  # fmt: skip
