"""`sw check` results remembered between runs, so re-checking an unchanged spec is cheap.

An entry is keyed by everything a result depends on: the installed code (version and the size
and modification time of every module and the grammar), the working directory, the path as
given, the `--set` overrides and the host facts checks read (a GPU, native bf16). It lists
every file the check read (or tried to read) with a SHA-256 of its bytes; the entry is used
only if every one of them
still hashes the same (a file that was missing must still be missing). Entries are JSON,
written atomically; anything unreadable is ignored and recomputed.

This module is deliberately light (no lark, no attrs, no IR): a remembered result is printed
without loading the compiler at all.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from stackwise_dsl.machine.resources import grammar_path
from stackwise_dsl.machine.userdirs import memo_dir
from stackwise_dsl.source import MAX_FILE_BYTES
from stackwise_dsl.version import __version__

FORMAT = 1
_PACKAGE = Path(__file__).resolve().parent.parent  # all of stackwise_dsl/


@functools.cache
def code_fingerprint() -> str:
    """The installed code: the version, and every module's and grammar's size and mtime."""
    h = hashlib.sha256(f"{FORMAT}\0{__version__}".encode())
    for path in sorted([*_PACKAGE.rglob("*.py"), grammar_path()]):
        st = path.stat()
        h.update(f"\0{path}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()


def _entry_path(path: str, overrides: Sequence[str], host: list) -> Path | None:
    base = memo_dir()
    if base is None:
        return None
    key = json.dumps([code_fingerprint(), os.getcwd(), path, list(overrides), host])
    return base / "check" / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"


def digest(file: str) -> str | None:
    """SHA-256 of a file's bytes, or None when it cannot be read. A file that is not regular
    (a device, a FIFO: reading it could hang or never end) or larger than a spec may be is
    known by its kind, size and time instead; checks refuse to read it."""
    try:
        info = os.stat(file)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_FILE_BYTES:
            return f"unread:{stat.S_IFMT(info.st_mode)}:{info.st_size}:{info.st_mtime_ns}"
        with open(file, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except (OSError, ValueError):
        return None


def lookup(path: str, overrides: Sequence[str], host: list) -> dict | None:
    """The remembered result, if every file it read is unchanged."""
    entry_path = _entry_path(path, overrides, host)
    if entry_path is None:
        return None
    try:
        entry = json.loads(entry_path.read_text(encoding="utf-8"))
        files, result = entry["files"], entry["result"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not files or any(digest(f) != d for f, d in files):
        return None
    return result


def store(
    path: str, overrides: Sequence[str], host: list, files: Sequence[str], result: dict
) -> None:
    """Remember a result (quietly does nothing when the memo cannot be written)."""
    entry_path = _entry_path(path, overrides, host)
    if entry_path is None or not files:
        return
    import tempfile  # only when writing: the lookup path stays light

    entry = {"files": [[f, digest(f)] for f in files], "result": result}
    try:
        entry_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=entry_path.parent, prefix=".entry-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(entry, f)
        os.replace(tmp, entry_path)
    except OSError:
        pass
