"""Explanations of diagnostic codes, for `sw explain` and docs/diagnostics.md.

Each explanation shows its example spec and the diagnostic the front end actually prints for
it, so the documentation cannot drift from the compiler.
"""

from __future__ import annotations

import os
import tempfile

from stackwise_dsl import diagnostics as diag
from stackwise_dsl.codes import CODES, Code


def example_output(code: Code) -> str:
    """What `sw check` prints for the code's example, saved as example.sw in a scratch dir."""
    from stackwise_dsl.frontend import check_file

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "example.sw")
        with open(path, "w", encoding="utf-8") as f:
            f.write(code.example)
        report = check_file(path, code.overrides, host=code.host)
        text = diag.render_text(report.diagnostics, report.sources)
    return text.replace(tmp + os.sep, "")


def explain_text(code: Code) -> str:
    """Plain text for `sw explain`."""
    example = code.example.rstrip("\n")
    sets = "".join(f" --set {o}" for o in code.overrides)
    return (
        f"{code.code} ({code.severity.value}): {code.title}\n\n{code.explanation}\n\n"
        f"Example (example.sw{', checked with' + sets if sets else ''}):\n\n"
        + _indent(example)
        + "\n\n`sw check` reports:\n\n"
        + _indent(example_output(code))
        + f"\n\nFix: {code.fix}\n"
    )


def _indent(text: str) -> str:
    return "\n".join("    " + line if line else "" for line in text.splitlines())


def diagnostics_page() -> str:
    """The whole of docs/diagnostics.md."""
    head = [
        "# Diagnostic codes",
        "",
        "Every problem the front end reports has a stable code. `sw explain CODE` prints the",
        "entry below. Errors stop `sw check` with exit status 1; warnings do not.",
        "This page is generated from `stackwise_dsl/codes.py`",
        "(`python -m stackwise_dsl.cli.explain > docs/diagnostics.md`); a test keeps it current,",
        "and runs every example.",
        "",
        "| Code | Severity | Meaning |",
        "|------|----------|---------|",
    ]
    head += [
        f"| [{c.code}](#{c.code.lower()}) | {c.severity.value} | {c.title} |"
        for c in CODES.values()
    ]
    sections = [_section(c) for c in CODES.values()]
    return "\n".join(head) + "\n\n" + "\n\n".join(sections) + "\n"


def _section(code: Code) -> str:
    sets = " ".join(f"--set {o}" for o in code.overrides)
    run = f"`sw check example.sw {sets}`" if sets else "`sw check example.sw`"
    return (
        f"## {code.code}\n\n**{code.title}** ({code.severity.value}). {code.explanation}\n\n"
        f"```sw\n# example.sw\n{code.example.rstrip()}\n```\n\n{run} prints:\n\n"
        f"```text\n{example_output(code)}\n```\n\n**Fix.** {code.fix}"
    )


if __name__ == "__main__":
    import sys

    sys.stdout.write(diagnostics_page())
