"""Rendering a plan as a standalone training script (`sw compile`).

The template (codegen/script.py.j2) holds only the script's own parts: its docstring, the
configuration block and `main`. The code in between is our runtime's, extracted by
`extract.py`; every value from the spec enters through `literals.py`. No torch import.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from stackwise_dsl.emit import RUNTIME_MODULES, SECTIONS
from stackwise_dsl.emit.extract import Extracted, extract, import_block, source_file
from stackwise_dsl.emit.literals import comment_text, grouped, literal, pretty, text_block
from stackwise_dsl.emit.specialize import Decided, plan_classes

# what `main` names (codegen/script.py.j2)
ROOTS = ("stackwise_dsl.runtime:begin", "stackwise_dsl.runtime.standalone:reopen",
         "stackwise_dsl.runtime:start", "stackwise_dsl.runtime:finishing", "Printed",
         "stackwise_dsl.runtime:Complete", "from_json", "Device", "RunError",
         "NotCompiled", "PlanFormatError", "compiled_for",
         "stackwise_dsl.runtime.standalone:sample_run", "stackwise_dsl.core.world:joined",
         "stackwise_dsl.core.world:World", "stackwise_dsl.runtime:Elsewhere",
         "stackwise_dsl.runtime:device_for")  # fmt: skip
TEMPLATE = "script.py.j2"


def render(plan, *, spec_text: str, spec_file: str, overrides: list[str],
           script_name: str = "train.py", origins: dict | None = None) -> str:  # fmt: skip
    """The script for `plan` (lowered from `spec_text`, read from `spec_file`); `origins`
    (path → text, from `lower.lower`) become comments on the plan's values."""
    import jinja2

    from stackwise_dsl.lower.dispatch import features, needs, samplers_for
    from stackwise_dsl.lower.serialize import to_json
    from stackwise_dsl.version import __version__

    every, seen = plan_classes(plan)
    decided = Decided(features=features(plan), absent=every - seen)
    code = runtime_code(needs(plan), decided)
    digest = hashlib.sha256(spec_text.encode("utf-8")).hexdigest()
    body = _sections(code.definitions)
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
            [
                *code.imports,
                "import argparse",
                "import dataclasses",
                "import sys",
                "from pathlib import Path",
            ]
        ),
        spec_file=literal(spec_file),
        spec_sha256=literal(digest),
        header_spec=_in_docstring(spec_file, width=28),
        spec_text=text_block(spec_text, used=len("SPEC_TEXT = ")),
        overrides=pretty(list(overrides), used=len("OVERRIDES = ")),
        plan=grouped("PLAN", to_json(_portable(plan)), comments=origins),
        features=pretty(
            sorted(
                decided.features | {f"{t}:{k}" for t, keys in needs(plan).items() for k in keys}
            ),
            used=len("COMPILED_FOR = frozenset("),
            indent=0,
        ),
        runtime=body,
        stages=_stages(plan),
        stage_count=len(plan.stages),
        samplers=" or ".join(
            dict.fromkeys(x for s in plan.stages for x in samplers_for(s.objective))
        ),
    )


def runtime_code(keep: dict[str, frozenset[str]] | None = None,
                 decided: Decided | None = None) -> Extracted:  # fmt: skip
    """The runtime's code for a script whose plan looks up the `keep` entries of each
    dispatch table (all entries of a table not named), specialized to what is `decided` of
    it (emit/specialize.py; nothing when None), remembered among the memos
    (machine/userdirs.py) under a hash of every source file it is cut from (and of the
    extractor), so it is never stale."""
    import json

    keep = {name: sorted(keys) for name, keys in sorted((keep or {}).items())}

    from stackwise_dsl.machine.userdirs import memo_dir

    extractor = ("stackwise_dsl.emit.extract", "stackwise_dsl.emit.literals",
                 "stackwise_dsl.emit.specialize")  # fmt: skip
    files = [source_file(m) for m in (*RUNTIME_MODULES, *extractor)]
    known = None if decided is None else (sorted(decided.features), sorted(decided.absent))
    digest = hashlib.sha256(repr((ROOTS, keep, known)).encode())
    for path in files:
        digest.update(path.read_bytes())
    root = memo_dir()
    cached = root / "emit" / f"runtime-{digest.hexdigest()[:32]}.json" if root else None
    if cached is not None and cached.is_file():
        try:
            data = json.loads(cached.read_text(encoding="utf-8"))
            return Extracted(imports=tuple(data["imports"]),
                             definitions=tuple(tuple(d) for d in data["definitions"]))  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError):
            pass  # a damaged entry: extract again
    code = extract(RUNTIME_MODULES, ROOTS, keep, decided)
    if cached is not None:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"imports": code.imports, "definitions": code.definitions}))
            os.replace(tmp, cached)
        except OSError:
            pass  # no memo: slower, still correct
    return code


def _sections(definitions) -> str:
    """The definitions, each section under a banner (emit/__init__.py's SECTIONS)."""
    title_of = {m: title for title, modules in SECTIONS for m in modules}
    out, current = [], None
    for module, _, source in definitions:
        title = title_of[module]
        if title != current:
            current = title
            out.append(_banner(title) + "\n\n\n" + source)
        else:
            out.append(source)
    return "\n\n\n".join(out)


def _banner(title: str) -> str:
    return f"# --- {title} ".ljust(99, "-")


def _stages(plan) -> str:
    """The body of `main`'s stage loop, written out: per stage a comment saying what it
    trains (from the plan) and the call that trains it."""
    pad = " " * 12
    out = []
    for stage in plan.stages:
        lines = describe_stage(plan, stage)
        out += [f"{pad}# {comment_text(line, width=100 - len(pad) - 2)}" for line in lines]
        out.append(f"{pad}run.stage({int(stage.number)})")
    return "\n".join(out)


def describe_stage(plan, stage) -> list[str]:
    """What a stage trains, in a few words per stack (grouped when the rack is wide)."""
    from stackwise_dsl.lower import plan as p

    o = stage.objective
    what = {p.Clm: "clm", p.Mlm: "mlm", p.MaskedDiffusion: "masked diffusion"}[type(o)]
    if isinstance(o, p.MaskedDiffusion):
        what += " (time as depth)" if isinstance(o.time, p.DepthTime) else " (time as input)"
    head = (f"Stage {stage.number} of {len(plan.stages)}: {stage.kind.value}, "
            f"{stage.steps:,} steps, {what}, lr {stage.lr:g}")  # fmt: skip
    if stage.merge_adapters:
        head += ", adapters merged first"
    rows = []
    for part in stage.parts:
        name = plan.stacks[part.position].name
        if part.role is p.Role.NEW:
            words = ["new", part.precision.value, f"{stage.init.value} init"]
        else:
            trains = {p.Trains.FULL: "trains", p.Trains.ADAPTERS: "adapters train",
                      p.Trains.NOTHING: "frozen"}[part.trains]  # fmt: skip
            words = ["trunk", part.precision.value, trains]
        loras = [f"r{lora.rank} {kind}" for kind, lora in
                 (("stack", plan.stacks[part.position].stack_lora), ("trunk", part.trunk_lora))
                 if lora is not None]  # fmt: skip
        if loras:
            words.append("LoRA " + " + ".join(loras))
        if part.mask_ratio is not None:
            words.append(f"mask {part.mask_ratio:.2f}")
        rows.append((f"stack {part.position} ({name})", ", ".join(words)))
    if len(rows) <= 8:
        return [head, *(f"  {where}: {words}" for where, words in rows)]
    groups: dict[str, list[int]] = {}
    for part, (_, words) in zip(stage.parts, rows, strict=True):
        groups.setdefault(words, []).append(part.position)
    return [head, *(f"  {'stack' if len(at) == 1 else 'stacks'} {position_ranges(at)}: {words}"
                    for words, at in groups.items())]  # fmt: skip


def position_ranges(positions: list[int]) -> str:
    """[0, 1, 2, 5] → "0-2, 5"."""
    out, first = [], None
    for i, x in enumerate(positions):
        if first is None:
            first = x
        if i + 1 == len(positions) or positions[i + 1] != x + 1:
            out.append(str(first) if first == x else f"{first}-{x}")
            first = None
    return ", ".join(out)


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


def _in_docstring(text: str, *, width: int) -> str:
    """Text safe inside the script's docstring: printable ASCII without quotes or
    backslashes (each written `?`), cut to `width`."""
    safe = comment_text(text, width=width)
    return safe.replace("\\", "?").replace('"', "?")


def _plain(name: str) -> str:
    """A file name for the docstring's usage line: anything unusual becomes `train.py`."""
    ok = name.replace(".", "").replace("_", "").replace("-", "").isalnum() and name.isascii()
    return name if ok and len(name) < 80 else "train.py"


def _templates() -> Path:
    """codegen/ in a checkout, or stackwise_dsl/codegen/ in an installed wheel."""
    from stackwise_dsl.machine.resources import resource_dir

    return resource_dir("codegen")
