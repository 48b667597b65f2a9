"""Where stackwise-dsl keeps its memos: what it computed once and may reuse (parser tables,
remembered check results, trained BPE vocabularies, the runtime code of compiled scripts).
They live in the user's cache folder, which is what the operating system calls it; in this
project "cache" means only the activation cache of a training stage."""

from __future__ import annotations

import os
from pathlib import Path


def memo_dir() -> Path | None:
    """`$XDG_CACHE_HOME/stackwise-dsl` (default `~/.cache/stackwise-dsl`), or None when there
    is no home to put it in."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    if not base or base.startswith("~"):
        return None
    return Path(base) / "stackwise-dsl"
