"""Rendering a plan as a standalone training script (`sw compile`).

The template (codegen/script.py.j2) holds only the script's own parts: its docstring, the
configuration block and `main`. The code in between is our runtime's, extracted by
`extract.py`; every value from the spec enters through `literals.py`. No torch import.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from stackwise_dsl.emit import RUNTIME_MODULES
from stackwise_dsl.emit.extract import Extracted, extract, import_block, source_file
from stackwise_dsl.emit.literals import literal, pretty, text_block

ROOTS = ("run", "resume", "from_json", "Device", "RunError")
TEMPLATE = "script.py.j2"


def render(plan, *, spec_text: str, spec_file: str, overrides: list[str],
           script_name: str = "train.py") -> str:  # fmt: skip
    """The script for `plan` (lowered from `spec_text`, read from `spec_file`)."""
    import jinja2

    from stackwise_dsl import __version__
    from stackwise_dsl.lower.serialize import to_json

    code = runtime_code()
    body = "\n\n\n".join(src for _, _, src in code.definitions)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_templates())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    return env.get_template(TEMPLATE).render(
        version=__version__,
        script_name=_plain(script_name),
        import_block=import_block(
            [*code.imports, "import argparse", "import dataclasses", "from pathlib import Path"]
        ),
        spec_file=literal(spec_file),
        spec_sha256=literal(hashlib.sha256(spec_text.encode("utf-8")).hexdigest()),
        spec_text=text_block(spec_text, used=len("SPEC_TEXT = ")),
        overrides=pretty(list(overrides), used=len("OVERRIDES = ")),
        plan=pretty(to_json(_portable(plan)), used=len("PLAN = ")),
        runtime=body,
    )


def runtime_code() -> Extracted:
    """The runtime's code for a script, remembered in the user cache under a hash of every
    source file it is cut from (and of the extractor), so it is never stale."""
    import json

    from stackwise_dsl.userdirs import cache_dir

    files = [source_file(m) for m in (*RUNTIME_MODULES, "stackwise_dsl.emit.extract")]
    digest = hashlib.sha256(repr(ROOTS).encode())
    for path in files:
        digest.update(path.read_bytes())
    root = cache_dir()
    cached = root / "emit" / f"runtime-{digest.hexdigest()[:32]}.json" if root else None
    if cached is not None and cached.is_file():
        try:
            data = json.loads(cached.read_text(encoding="utf-8"))
            return Extracted(imports=tuple(data["imports"]),
                             definitions=tuple(tuple(d) for d in data["definitions"]))  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError):
            pass  # a damaged entry: extract again
    code = extract(RUNTIME_MODULES, ROOTS)
    if cached is not None:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"imports": code.imports, "definitions": code.definitions}))
            os.replace(tmp, cached)
        except OSError:
            pass  # no cache: slower, still correct
    return code


def _portable(plan):
    """The plan with its run directory relative to where the script is started, when it lies
    under the directory `sw compile` ran in (a script moves between machines; `sw run` keeps
    the absolute path it resolved)."""
    import attrs

    where = Path(plan.run.dir)
    try:
        relative = where.relative_to(Path.cwd())
    except ValueError:
        return plan
    return attrs.evolve(plan, run=attrs.evolve(plan.run, dir=relative.as_posix()))


def _plain(name: str) -> str:
    """A file name for the docstring's usage line: anything unusual becomes `train.py`."""
    ok = name.replace(".", "").replace("_", "").replace("-", "").isalnum() and name.isascii()
    return name if ok and len(name) < 80 else "train.py"


def _templates() -> Path:
    """codegen/ in a checkout, or stackwise_dsl/codegen/ in an installed wheel."""
    here = Path(__file__).resolve().parent.parent
    for path in (here / "codegen", here.parent / "codegen"):
        if (path / TEMPLATE).is_file():
            return path
    raise FileNotFoundError(f"the template {TEMPLATE} is not installed")
