"""The front end as one call: text → IR → checks, with every diagnostic collected.

`check_file` and `check_text` never raise for a mistake in a spec; they return a `Report`
whose `spec` is None when the spec could not be built. Nothing here imports torch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs

from stackwise_dsl import diagnostics as diag
from stackwise_dsl.checks import Host, run_checks
from stackwise_dsl.elaborate import Elaborated, elaborate_file, elaborate_text
from stackwise_dsl.ir.nodes import Spec
from stackwise_dsl.machine.host import watched_paths
from stackwise_dsl.source import Source


@attrs.frozen
class Report:
    """What the front end found in one spec."""

    name: str
    spec: Spec | None
    diagnostics: tuple[diag.Diagnostic, ...]
    sources: Mapping[str, Source]
    files: tuple[str, ...] = ()  # every file read (or tried), absolute paths

    @property
    def ok(self) -> bool:
        """No errors (warnings allowed): the spec may be lowered and run."""
        return self.spec is not None and not diag.has_errors(self.diagnostics)

    @property
    def unreadable(self) -> bool:
        """The file itself could not be read (not one it includes)."""
        return any(d.code == "SW004" and d.span is None for d in self.diagnostics)


def check_file(path: str | Path, overrides: Sequence[str] = (), host: Host | None = None) -> Report:
    """Elaborate and check the spec at `path`."""
    return _report(str(path), elaborate_file(path, overrides), host)


def check_text(
    text: str, name: str = "<spec>", overrides: Sequence[str] = (), host: Host | None = None
) -> Report:
    """Elaborate and check spec text held in memory."""
    return _report(name, elaborate_text(text, name, overrides), host)


def check_bytes(
    data: bytes, name: str = "<spec>", overrides: Sequence[str] = (), host: Host | None = None
) -> Report:
    """Check raw bytes: text that is not UTF-8 is a diagnostic like any other problem."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        from stackwise_dsl.elaborate.load import describe_read_error

        problem = diag.error("SW004", describe_read_error(name, e), None)
        return Report(name=name, spec=None, diagnostics=(problem,), sources={})
    return check_text(text, name, overrides, host)


def _report(name: str, result: Elaborated, host: Host | None) -> Report:
    found = list(result.diagnostics)
    files = result.files
    if result.spec is not None and result.complete:
        host = (host or Host.detect()).knowing_data(result.spec)
        found += run_checks(result.spec, host)
        files += tuple(os.path.abspath(f) for f in watched_paths(result.spec))
    return Report(
        name=name,
        spec=result.spec,
        diagnostics=diag.dedupe(found),
        sources=result.sources,
        files=files,
    )
