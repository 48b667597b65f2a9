"""Where stackwise-dsl keeps its per-user cache (parser tables, remembered check results)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path | None:
    """`$XDG_CACHE_HOME/stackwise-dsl` (default `~/.cache/stackwise-dsl`), or None when there
    is no home to put it in."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    if not base or base.startswith("~"):
        return None
    return Path(base) / "stackwise-dsl"
