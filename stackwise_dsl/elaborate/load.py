"""Reading a spec and everything it includes or extends, with cycles reported.

Paths in `include` and `extends` are relative to the file that names them. A file included
twice along different routes (a diamond) is read once; a file that includes itself, directly
or through others, is a cycle (SW005).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

import attrs

from stackwise_dsl import diagnostics as diag
from stackwise_dsl.source import MAX_FILE_BYTES, Source, Span
from stackwise_dsl.syntax import tree as t
from stackwise_dsl.syntax.lexing import without_bom
from stackwise_dsl.syntax.parser import parse

Report = Callable[[diag.Diagnostic], None]


@attrs.frozen
class Unit:
    """One file and what it pulls in: its `extends` base and its includes."""

    document: t.Document
    base: Unit | None
    includes: tuple[Unit, ...]


MAX_DEPTH = 32  # files in an include or extends chain


class NotASpecFile(OSError):
    """A path that is not a regular file of a spec's size (a device, a FIFO, a huge file);
    the message is what is wrong, after the path."""


def read_text(path: Path) -> str:
    """A regular file's text as UTF-8, up to MAX_FILE_BYTES; raises OSError (NotASpecFile for
    devices, FIFOs, sockets and files over the cap: reading them could hang or exhaust memory)
    or UnicodeDecodeError with the cause."""
    info = path.stat()
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(str(path))
    if not stat.S_ISREG(info.st_mode):
        raise NotASpecFile("is not a regular file (a device, FIFO or socket)")
    if info.st_size > MAX_FILE_BYTES:
        raise NotASpecFile(f"is {info.st_size:,} bytes; spec files are read up to "
                           f"{MAX_FILE_BYTES:,} bytes (1 MiB)")  # fmt: skip
    with path.open("rb") as f:
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:  # grew since stat
        raise NotASpecFile(f"is larger than {MAX_FILE_BYTES:,} bytes (1 MiB)")
    return data.decode("utf-8")


def describe_read_error(path: str, e: Exception) -> str:
    if isinstance(e, UnicodeDecodeError):
        return f"{path} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start})"
    if isinstance(e, FileNotFoundError):
        return f"{path} does not exist"
    if isinstance(e, IsADirectoryError):
        return f"{path} is a directory, not a spec file"
    if isinstance(e, NotASpecFile):
        return f"{path} {e}"
    if getattr(e, "errno", None) == errno.ELOOP:
        return f"{path} is a loop of symbolic links that never reaches a file"
    if isinstance(e, PermissionError):
        return f"{path} cannot be read (permission denied)"
    return f"{path} cannot be read ({e.__class__.__name__}: {e})"


class Loader:
    """Loads a tree of units; remembers every source for rendering diagnostics."""

    def __init__(self, report: Report, parse_text=parse) -> None:
        self.report = report
        self.parse_text = parse_text  # `parse`, or an editor's `reparse` (syntax/incremental.py)
        self.sources: dict[str, Source] = {}
        self.loaded: set[Path] = set()
        self.attempted: list[str] = []  # every file this spec tried to read, as absolute paths
        self.via: dict[str, Span] = {}  # a file's name -> the include or extends that read it

    def load_text(self, text: str, name: str, chain: tuple = ()) -> Unit | None:
        result = self.parse_text(text, name)
        self.sources[name] = Source(name, without_bom(text))  # the text the spans are of
        for d in result.diagnostics:
            self.report(d)
        if result.document is None:
            return None
        return self._unit(result.document, name, chain)

    def load_file(self, path: Path, name: str, chain=(), via: Span | None = None) -> Unit | None:
        self.attempted.append(os.path.abspath(path))
        try:
            text = read_text(path)
        except (OSError, UnicodeDecodeError, ValueError) as e:
            loop = getattr(e, "errno", None) == errno.ELOOP
            hint = "point the links at the spec file, or name the file itself" if loop else None
            self.report(diag.error("SW004", describe_read_error(name, e), via, hint=hint))
            return None
        real = _real_path(path)
        self.loaded.add(real)
        if via is not None:
            self.via.setdefault(name, via)
        return self.load_text(text, name, (*chain, (real, name)))

    def _unit(self, doc: t.Document, name: str, chain: tuple) -> Unit | None:
        base = None
        includes: list[Unit] = []
        extends = [it for it in doc.items if isinstance(it, t.Extends)]
        for extra in extends[1:]:
            self.report(
                diag.error(
                    "SW102",
                    "a spec extends at most one other spec",
                    extra.span,
                    notes=(diag.Note(message="first `extends` here", span=extends[0].span),),
                )
            )
        if extends:
            base = self._follow(extends[0].path, name, chain, kind="extends")
        for it in doc.items:
            if isinstance(it, t.Include):
                unit = self._follow(it.path, name, chain, kind="include")
                if unit is not None:
                    includes.append(unit)
        return Unit(document=doc, base=base, includes=tuple(includes))

    def _follow(self, path: t.String, name: str, chain, kind: str) -> Unit | None:
        if "\0" in path.value or not path.value.strip():
            what = "contains a NUL character" if "\0" in path.value else "is empty"
            self.report(diag.error("SW004", f"the {kind} path {what}", path.span))
            return None
        target = _relative_to(name, path.value)
        resolved = _real_path(Path(target))
        if resolved in (p for p, _ in chain):
            self._cycle(path, target, resolved, chain, kind)
            return None
        if kind == "include" and resolved in self.loaded:
            return None  # already part of this spec (a diamond): read once
        if len(chain) >= MAX_DEPTH:
            self.report(diag.error(
                "SW007", f"{kind} chain deeper than {MAX_DEPTH} files", path.span,
                hint="flatten the chain: include the shared files from one spec",
            ))  # fmt: skip
            return None
        return self.load_file(Path(target), target, chain, via=path.span)

    def _cycle(self, path: t.String, target: str, resolved: Path, chain, kind: str) -> None:
        """The loop, in the names the specs use for the files."""
        start = next(i for i, (p, _) in enumerate(chain) if p == resolved)
        loop = " -> ".join([*(shown for _, shown in chain[start:]), target])
        self.report(
            diag.error(
                "SW005",
                f"{kind} cycle: {loop}",
                path.span,
                hint=f"remove this {kind} or the one that leads back here",
            )
        )


def own_file(name: str) -> tuple:
    """The include chain a text named `name` starts: the file it stands for, where `name` is
    a path (not `<spec>`, `<stdin>` or `-`)."""
    if not name or name.startswith("<") or name == "-":
        return ()
    return ((_real_path(Path(name)), name),)


def _real_path(path: Path) -> Path:
    """The absolute path with every symbolic link followed: the identity of a file, for
    cycles and diamonds. os.path.realpath, not Path.resolve, which raises RuntimeError on a
    loop of links; such a path is reported when it is read (SW004)."""
    return Path(os.path.realpath(path))


def _relative_to(including: str, target: str) -> str:
    """`target` relative to the directory of the file that names it."""
    if os.path.isabs(target) or including.startswith("<"):
        return target
    return os.path.normpath(os.path.join(os.path.dirname(including), target))
