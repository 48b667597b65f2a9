"""`sw fmt` over files: read, format, compare, diff, and write back atomically."""

from __future__ import annotations

import difflib
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs

from stackwise_dsl import diagnostics as diag
from stackwise_dsl.elaborate.load import NotASpecFile, describe_read_error, read_text
from stackwise_dsl.machine.outputs import output_target
from stackwise_dsl.source import MAX_FILE_BYTES, Source
from stackwise_dsl.syntax.format import format_document
from stackwise_dsl.syntax.parser import parse


@attrs.frozen
class FormatResult:
    path: str
    original: str
    formatted: str
    diagnostics: tuple[diag.Diagnostic, ...] = ()
    sources: Mapping[str, Source] = attrs.field(factory=dict)
    error: str | None = None  # the file could not be read

    @property
    def changed(self) -> bool:
        return self.error is None and not self.diagnostics and self.formatted != self.original

    def diff(self) -> str:
        lines = difflib.unified_diff(
            self.original.splitlines(keepends=True),
            self.formatted.splitlines(keepends=True),
            fromfile=f"{self.path} (original)",
            tofile=f"{self.path} (formatted)",
        )
        return "".join(lines)


def format_text(text: str, name: str) -> FormatResult:
    """The canonical text, or the syntax errors that prevent formatting."""
    result = parse(text, name)
    if result.document is None:
        return FormatResult(
            path=name,
            original=text,
            formatted=text,
            diagnostics=result.diagnostics,
            sources={name: Source(name, text)},
        )
    return FormatResult(path=name, original=text, formatted=format_document(result.document))


def format_path(path: str) -> FormatResult:
    """Format a file (or stdin for `-`) without writing anything."""
    try:
        if path == "-":
            data = sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
            if len(data) > MAX_FILE_BYTES:
                raise NotASpecFile(f"is longer than {MAX_FILE_BYTES:,} bytes (1 MiB)")
            text = data.decode("utf-8")
        else:
            text = read_text(Path(path))
    except (OSError, UnicodeDecodeError) as e:
        return FormatResult(
            path=path,
            original="",
            formatted="",
            error=describe_read_error("standard input" if path == "-" else path, e),
        )
    return format_text(text, path)


def write_atomically(path: str, text: str, *, new_mode: int = 0o644) -> None:
    """Replace a file's contents in one step, keeping its permissions (a new file gets
    `new_mode`, less the umask). A symlink is followed (the file it names is written, the
    link stays); a path naming a device, FIFO or directory is an OutputError."""
    path = output_target(path)
    directory = os.path.dirname(path)
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = new_mode & ~umask
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".sw-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def summary(results: Sequence[FormatResult], write: bool) -> str:
    """`2 files reformatted, 1 unchanged` (or `would be reformatted` when not writing)."""
    changed = sum(r.changed for r in results)
    failed = sum(bool(r.error or r.diagnostics) for r in results)
    unchanged = len(results) - changed - failed
    verb = "reformatted" if write else "would be reformatted"
    parts = [f"{changed} file{'s' if changed != 1 else ''} {verb}", f"{unchanged} unchanged"]
    if failed:
        parts.append(f"{failed} not formatted (errors)")
    return ", ".join(parts)
