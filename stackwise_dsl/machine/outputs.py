"""Where a command's output file goes, decided before anything is written.

Outputs are written to a temporary file and renamed into place, which replaces whatever the
name pointed at: a device (as root, `-o /dev/null` would leave a plain file where the device
was), a FIFO, or a symlink (its target left unchanged). So an output path is resolved through
its symlinks to the file it names, and anything there that is not a regular file is refused.
"""

from __future__ import annotations

import os
import stat


class OutputError(Exception):
    """An output path that must not be written; the message says why."""


_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFCHR: "a device",
    stat.S_IFBLK: "a device",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
}


def output_target(path: str | os.PathLike) -> str:
    """The file writing `path` should replace: `path` itself, or the file its symlinks lead
    to. OutputError when that is a directory, a device, a FIFO or a socket."""
    real = os.path.realpath(path)
    try:
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        return real
    except OSError as e:
        raise OutputError(f"{os.fspath(path)} cannot be written ({e.strerror})") from None
    if stat.S_ISREG(mode):
        return real
    kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
    shown = os.fspath(path) if real == os.path.abspath(path) else f"{os.fspath(path)} ({real})"
    raise OutputError(f"{shown} is {kind}, not a file: name a file to write")
