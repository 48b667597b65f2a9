"""Our own source, cut out by name for an emitted script: one source of truth.

`extract(modules, roots)` returns the top-level definitions `roots` need from `modules` (the
definitions they name, transitively, and no others), as the exact text of our modules, in
the order the modules are given and, within a module, in file order. Imports between our
modules disappear: `from stackwise_dsl.core.layers import GeluFfn` is dropped (GeluFfn is
emitted itself), and a module alias `p.Stage` is written `Stage`. Imports of other packages
(torch, math, ...) that the definitions use are gathered at the top. Every definition's
rewritten text is parsed back and compared, node for node, with the original put through the
same rewrite on its syntax tree, so the text edits can do nothing else; a rewrite that would
change meaning (an alias whose name a local shadows, a module used as a value, two modules
defining one name) is refused. Reading the modules imports nothing.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Iterable, Mapping
from pathlib import Path

import attrs

from stackwise_dsl.emit.literals import literal
from stackwise_dsl.emit.specialize import (
    AllAbsent,
    Decided,
    SpecializeError,
    mentions,
    specialize,
)

PACKAGE = "stackwise_dsl"


class ExtractError(Exception):
    pass


@attrs.frozen
class _Definition:
    module: str
    name: str
    node: ast.stmt
    order: tuple[int, int]  # (module index, position in the module)
    source: str | None = None  # its text, where specialized (node's lines count from 1)


@attrs.frozen
class Extracted:
    imports: tuple[str, ...]  # import statements of other packages, sorted
    definitions: tuple[tuple[str, str, str], ...]  # (module, name, source), emission order

    @property
    def source(self) -> str:
        body = "\n\n\n".join(src for _, _, src in self.definitions)
        # as isort spaces them: two blank lines before a def or class, else one
        first = body.lstrip().split(None, 1)[0] if body.strip() else ""
        gap = "\n\n\n" if first in ("def", "class", "async") or first.startswith("@") else "\n\n"
        return import_block(self.imports) + gap + body + "\n"


def import_block(statements: Iterable[str]) -> str:
    """The imports as isort (and `ruff check`) order them: the standard library, then other
    packages; in each, `import x` lines, then `from x import a, b` merged."""
    import sys

    plain: dict[bool, set[str]] = {True: set(), False: set()}
    froms: dict[bool, dict[str, set[str]]] = {True: {}, False: {}}
    for statement in statements:
        node = ast.parse(statement).body[0]
        if isinstance(node, ast.Import):
            for a in node.names:
                std = a.name.split(".")[0] in sys.stdlib_module_names
                plain[std].add(ast.unparse(ast.Import([a])))
        else:
            std = node.module.split(".")[0] in sys.stdlib_module_names
            names = froms[std].setdefault(node.module, set())
            names.update(ast.unparse(a) for a in node.names)
    groups = []
    for std in (True, False):
        lines = sorted(plain[std], key=_isort_key)
        lines += [f"from {m} import {', '.join(sorted(n, key=str.lower))}"
                  for m, n in sorted(froms[std].items())]  # fmt: skip
        if lines:
            groups.append("\n".join(lines))
    return "\n\n".join(groups)


def _isort_key(line: str) -> str:
    return line.split()[1].lower()


def extract(modules: Iterable[str], roots: Iterable[str],
            keep: Mapping[str, Iterable[str]] | None = None,
            decided: Decided | None = None) -> Extracted:  # fmt: skip
    """`roots` as `module:Name` (or `Name` when only one module defines it). `keep` names
    dispatch tables (module-level dict literals from string keys to names) and the keys to
    keep in each: the other entries, and the code only they use, are left out. `decided`:
    what is known of the plan, to specialize every definition to it (specialize.py)."""
    modules = list(modules)
    parsed = {m: _parse(m) for m in modules}
    defs: dict[tuple[str, str], _Definition] = {}
    tables: dict[str, list[tuple[str, str]]] = {}
    unusable: dict[tuple[str, str], str] = {}
    keep = {name: {k for k in keys if isinstance(k, str)} for name, keys in (keep or {}).items()}
    for index, module in enumerate(modules):
        for position, node in enumerate(parsed[module].tree.body):
            for name in _defined(node):
                source = None
                if name in keep:
                    node = _pruned_table(module, name, node, keep[name])
                    tables.setdefault(name, []).append((module, name))
                elif decided is not None:
                    try:
                        node, source = _specialized(node, parsed[module], decided)
                    except AllAbsent as e:  # fine unless something the plan runs needs it
                        unusable[(module, name)] = f"{module}.{name}: {e}"
                defs[(module, name)] = _Definition(module, name, node, (index, position), source)
    for name in keep:
        if len(tables.get(name, [])) != 1:
            raise ExtractError(f"{len(tables.get(name, []))} of the modules define a table {name}")
    todo = [_resolve_root(r, defs) for r in roots]
    needed: dict[tuple[str, str], _Definition] = {}
    imports: set[str] = set()
    while todo:
        key = todo.pop()
        if key in needed:
            continue
        definition = defs.get(key)
        if definition is None and key[0] in parsed and key[1] in parsed[key[0]].name_imports:
            todo.append(parsed[key[0]].name_imports[key[1]])  # a re-export: follow it
            continue
        if definition is None:
            raise ExtractError(f"{key[0]} defines no `{key[1]}` (or that module is not given)")
        if key in unusable:
            raise ExtractError(unusable[key])
        needed[key] = definition
        scope = parsed[definition.module]
        for name in _names_used(definition.node, scope.module_aliases):
            target = scope.resolve(name)
            if target is None:
                continue
            if target[0] == "import":
                imports.add("import dataclasses" if target[1] == "import attrs" else target[1])
            else:
                todo.append(target[1])
    clashes = _clashes(needed)
    if clashes:
        raise ExtractError(f"two modules define {clashes}: rename one")
    ordered = sorted({id(d.node): d for d in needed.values()}.values(), key=lambda d: d.order)
    out = []
    for d in ordered:
        scope = parsed[d.module]
        text = _table_text(d.node) if d.name in keep else _rewritten(d.node, scope, d.source)
        out.append((d.module, d.name, text))
    return Extracted(imports=tuple(sorted(imports)), definitions=tuple(out))


# --- dispatch tables ------------------------------------------------------------------------


def _pruned_table(module: str, name: str, node: ast.stmt, keys: set[str]) -> ast.Assign:
    """The table's assignment with only the entries under `keys`, in their order. A key the
    table lacks selects nothing: the script's lookup says what is missing when it runs
    (tests/test_emit_tables.py shows every key a valid plan needs is an entry)."""
    table = node.value if isinstance(node, ast.Assign) and len(node.targets) == 1 else None
    if not isinstance(table, ast.Dict):
        raise ExtractError(f"{module}.{name} is not a dict literal, so it cannot be pruned")
    entries = []
    for key, value in zip(table.keys, table.values, strict=True):
        if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
            raise ExtractError(f"{module}.{name}: every key must be a string literal")
        if not isinstance(value, ast.Name):
            raise ExtractError(f"{module}.{name}: every value must be a plain name")
        entries.append((key, value))
    kept = [(k, v) for k, v in entries if k.value in keys]
    pruned = ast.Dict([k for k, _ in kept], [v for _, v in kept])
    out = ast.Assign(node.targets, pruned, lineno=node.lineno, col_offset=node.col_offset,
                     end_lineno=node.end_lineno, end_col_offset=node.end_col_offset)  # fmt: skip
    return ast.fix_missing_locations(out)


def _table_text(node: ast.Assign) -> str:
    """A pruned table as ruff formats it: one entry per line (`{}` when none is left),
    checked against its syntax tree."""
    name = node.targets[0].id
    entries = [f"    {literal(k.value)}: {v.id},\n" for k, v in
               zip(node.value.keys, node.value.values, strict=True)]  # fmt: skip
    text = f"{name} = {{\n{''.join(entries)}}}" if entries else f"{name} = {{}}"
    if ast.dump(ast.parse(text).body[0]) != ast.dump(ast.parse(ast.unparse(node)).body[0]):
        raise ExtractError(f"writing the table {name} changed it")
    return text


# --- reading a module ---------------------------------------------------------------------


@attrs.define
class _Module:
    name: str
    text: str
    tree: ast.Module
    module_aliases: dict[str, str]  # alias → our module (`p` → stackwise_dsl.lower.plan)
    name_imports: dict[str, tuple[str, str]]  # local name → (our module, its name)
    external: dict[str, str]  # local name → import statement of another package

    def resolve(self, name: str):
        """What a name used in this module refers to: ("import", statement), ("def", key)
        or None (a builtin, a local variable, or a parameter)."""
        if "." in name:  # alias.attr of our module
            alias, attr = name.split(".", 1)
            return ("def", (self.module_aliases[alias], attr))
        if name in self.name_imports:
            return ("def", self.name_imports[name])
        if name in self.external:
            return ("import", self.external[name])
        if any(name in _defined(node) for node in self.tree.body):
            return ("def", (self.name, name))
        return None


def source_file(module: str) -> Path | None:
    """The source file of one of our modules, found without importing anything."""
    root = Path(importlib.util.find_spec(PACKAGE).origin).parent
    base = root.joinpath(*module.split(".")[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _is_package(module: str) -> bool:
    path = source_file(module)
    return path is not None and path.name == "__init__.py"


def _parse(module: str) -> _Module:
    path = source_file(module) if module.startswith(PACKAGE) else None
    if path is None:
        raise ExtractError(f"no module {module} of ours")
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text)
    package = module.rpartition(".")[0]
    aliases: dict[str, str] = {}
    names: dict[str, tuple[str, str]] = {}
    external: dict[str, str] = {}
    for node in ast.walk(tree):  # top level and lazy imports inside functions alike
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            source = node.module if not node.level else _relative(package, node)
            for a in node.names:
                local = a.asname or a.name
                if source.startswith(PACKAGE):
                    sub = f"{source}.{a.name}"
                    if _is_package(source) and source_file(sub) is not None:
                        aliases[local] = sub
                    else:
                        names[local] = (source, a.name)
                elif node.col_offset == 0:
                    external[local] = ast.unparse(ast.ImportFrom(source, [a], 0))
        elif isinstance(node, ast.Import) and node.col_offset == 0:
            for a in node.names:
                if a.name.startswith(PACKAGE):
                    aliases[a.asname or a.name] = a.name
                else:
                    external[a.asname or a.name.split(".")[0]] = ast.unparse(ast.Import([a]))
    return _Module(module, text, tree, aliases, names, external)


def _relative(package: str, node: ast.ImportFrom) -> str:
    parts = package.split(".")
    base = ".".join(parts[: len(parts) - node.level + 1])
    return f"{base}.{node.module}" if node.module else base


def _defined(node: ast.stmt) -> list[str]:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return [node.name]
    if isinstance(node, ast.Assign):
        return [t.id for t in node.targets if isinstance(t, ast.Name)]
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return [node.target.id]
    return []


def _names_used(node: ast.stmt, aliases: dict[str, str]) -> list[str]:
    """Names a definition reads (and `alias.attr` for our module aliases), in text order."""
    used = []
    for sub in ast.walk(node):
        if (
            isinstance(sub, ast.Attribute)
            and isinstance(sub.value, ast.Name)
            and sub.value.id in aliases
        ):
            used.append(f"{sub.value.id}.{sub.attr}")
        elif isinstance(sub, ast.Name) and sub.id not in aliases:
            used.append(sub.id)
        elif isinstance(sub, ast.Name) and not _is_attribute_base(sub, node):
            raise ExtractError(
                f"`{sub.id}` (one of our modules) is used as a value; a script "
                "has no such module: name what it needs from it instead"
            )
        elif isinstance(sub, ast.ImportFrom) and sub.module and sub.module.startswith(PACKAGE):
            used += [a.asname or a.name for a in sub.names]
    return used


def _is_attribute_base(name: ast.Name, root: ast.AST) -> bool:
    return any(isinstance(sub, ast.Attribute) and sub.value is name for sub in ast.walk(root))


def _resolve_root(root: str, defs) -> tuple[str, str]:
    if ":" in root:
        module, name = root.split(":")
        return module, name
    matches = [key for key in defs if key[1] == root]
    if len(matches) != 1:
        raise ExtractError(f"`{root}` is defined in {len(matches)} of the modules; name one")
    return matches[0]


def _clashes(needed) -> list[str]:
    seen: dict[str, str] = {}
    out = []
    for module, name in needed:
        if name in seen and seen[name] != module:
            out.append(name)
        seen[name] = module
    return sorted(out)


# --- rewriting ------------------------------------------------------------------------------


def _specialized(node: ast.stmt, scope: _Module, decided: Decided) -> tuple[ast.stmt, str | None]:
    """The definition specialized to the plan, and its new text (None: nothing to do)."""
    if not mentions(node, decided, scope.resolve):
        return node, None
    lines = scope.text.splitlines(keepends=True)
    first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
    try:
        text = specialize("".join(lines[first - 1 : node.end_lineno]), decided, scope.resolve)
    except AllAbsent:
        raise
    except SpecializeError as e:
        raise ExtractError(f"{scope.name}.{_defined(node)[0]}: {e}") from None
    return ast.parse(text).body[0], text


def _rewritten(node: ast.stmt, scope: _Module, source: str | None = None) -> str:
    """The definition's text (`source` where it was specialized) with our modules' aliases
    and imports taken out, checked."""
    lines = (source if source is not None else scope.text).splitlines(keepends=True)
    first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
    start, end = first - 1, node.end_lineno
    edits: list[tuple[int, int, int, int, str]] = []  # (line, col, end line, end col, new)
    for sub in ast.walk(node):
        if (
            isinstance(sub, ast.Attribute)
            and isinstance(sub.value, ast.Name)
            and sub.value.id in scope.module_aliases
        ):  # `p.Stage` → `Stage`: delete "p."
            v = sub.value
            edits.append((v.lineno, v.col_offset, v.end_lineno, v.end_col_offset + 1, ""))
        elif isinstance(sub, ast.Attribute) and _is_attrs(sub):
            edits += _attrs_edits(sub, node)
        elif isinstance(sub, ast.keyword) and sub.arg == "factory" and _in_attrs_field(sub, node):
            edits.append((sub.lineno, sub.col_offset, sub.lineno, sub.col_offset + 7,
                          "default_factory"))  # fmt: skip
        elif isinstance(sub, ast.FunctionDef) and sub.name == "__attrs_post_init__":
            col = lines[sub.lineno - 1].index("__attrs_post_init__")
            edits.append((sub.lineno, col, sub.lineno, col + 19, "__post_init__"))
        elif isinstance(sub, ast.ImportFrom | ast.Import) and sub is not node:
            source = sub.module if isinstance(sub, ast.ImportFrom) else sub.names[0].name
            if source and source.startswith(PACKAGE):  # a lazy import of our own module
                stop = sub.end_lineno + 1
                if _opens_block(sub, node) and not lines[sub.end_lineno].strip():
                    stop += 1  # and the blank line after it: a block starts with code
                edits.append((sub.lineno, 0, stop, 0, ""))
    _refuse_shadowing(node, scope)
    text = _apply(lines[start:end], edits, offset=start)
    _check(node, text, scope)
    return text.rstrip("\n")


# attrs → dataclasses: the subset our runtime uses, and nothing else.
_ATTRS = {"frozen": "dataclasses.dataclass", "define": "dataclasses.dataclass",
          "field": "dataclasses.field", "evolve": "dataclasses.replace",
          "asdict": "dataclasses.asdict", "has": "dataclasses.is_dataclass",
          "fields": "dataclasses.fields"}  # fmt: skip


def _is_attrs(node: ast.Attribute) -> bool:
    return isinstance(node.value, ast.Name) and node.value.id == "attrs"


def _attrs_edits(attr: ast.Attribute, root: ast.AST) -> list:
    """`attrs.frozen` → `dataclasses.dataclass(frozen=True)` (merged into a call's
    arguments when called), `attrs.define` → `dataclasses.dataclass`, `attrs.field` →
    `dataclasses.field`, `attrs.evolve` → `dataclasses.replace`, `attrs.asdict` →
    `dataclasses.asdict`."""
    if attr.attr not in _ATTRS:
        raise ExtractError(f"attrs.{attr.attr} has no dataclasses equivalent here")
    span = (attr.lineno, attr.col_offset, attr.end_lineno, attr.end_col_offset)
    call = _parent_call(attr, root)
    if attr.attr != "frozen":
        return [(*span, _ATTRS[attr.attr])]
    if call is None:
        return [(*span, "dataclasses.dataclass(frozen=True)")]
    glue = "frozen=True, " if call.args or call.keywords else "frozen=True"
    return [(*span, "dataclasses.dataclass"),
            (attr.end_lineno, attr.end_col_offset + 1, attr.end_lineno,
             attr.end_col_offset + 1, glue)]  # fmt: skip


def _parent_call(attr: ast.Attribute, root: ast.AST) -> ast.Call | None:
    for sub in ast.walk(root):
        if isinstance(sub, ast.Call) and sub.func is attr:
            return sub
    return None


def _in_attrs_field(kw: ast.keyword, root: ast.AST) -> bool:
    for sub in ast.walk(root):
        if (isinstance(sub, ast.Call) and kw in sub.keywords
                and isinstance(sub.func, ast.Attribute) and _is_attrs(sub.func)):  # fmt: skip
            return sub.func.attr == "field"
    return False


def _opens_block(stmt: ast.stmt, root: ast.AST) -> bool:
    """Whether `stmt` is the first statement of some block in `root`."""
    for sub in ast.walk(root):
        for field in ("body", "orelse", "finalbody"):
            block = getattr(sub, field, None)
            if isinstance(block, list) and block and block[0] is stmt:
                return True
    return False


def _refuse_shadowing(node: ast.stmt, scope: _Module) -> None:
    """`alias.X` becomes `X`: in a function where `X` is a local name (a parameter or
    an assignment), that would silently mean the local. Refuse it."""
    for fn in ast.walk(node):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        local = {a.arg for a in [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs]}
        local |= {x.arg for x in (fn.args.vararg, fn.args.kwarg) if x is not None}
        local |= {n.id for n in ast.walk(fn) if isinstance(n, ast.Name)
                  and isinstance(n.ctx, ast.Store)}  # fmt: skip
        for sub in ast.walk(fn):
            if (isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name)
                    and sub.value.id in scope.module_aliases and sub.attr in local):  # fmt: skip
                raise ExtractError(
                    f"{scope.name}, line {sub.lineno}: `{sub.value.id}.{sub.attr}` would become "
                    f"`{sub.attr}`, which is also a local name there: rename the local"
                )


def _apply(lines: list[str], edits, offset: int) -> str:
    """Apply (line, col, end line, end col, replacement) edits, 1-based lines."""
    text = "".join(lines)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))

    def at(line: int, col: int) -> int:
        i = line - 1 - offset
        if i >= len(lines):
            return len(text)
        return starts[i] + len(lines[i].encode("utf-8")[:col].decode("utf-8"))

    for line, col, end_line, end_col, new in sorted(edits, reverse=True):
        a, b = at(line, col), at(end_line, end_col)
        text = text[:a] + new + text[b:]
    return text


def _check(node: ast.stmt, text: str, scope: _Module) -> None:
    """The rewritten text must be the original definition with aliases and our own lazy
    imports removed, and nothing else."""
    import textwrap

    expected = _Strip(scope.module_aliases).visit(ast.parse(ast.unparse(node)))
    try:
        got = ast.parse(textwrap.dedent(text))
    except SyntaxError as e:
        raise ExtractError(f"rewriting {_defined(node)} broke its syntax: {e}") from None
    if ast.dump(got) != ast.dump(ast.fix_missing_locations(expected)):
        raise ExtractError(f"rewriting {_defined(node)} changed it")


class _Strip(ast.NodeTransformer):
    def __init__(self, aliases: dict[str, str]) -> None:
        self.aliases = aliases

    def visit_Attribute(self, node: ast.Attribute):
        if isinstance(node.value, ast.Name) and node.value.id in self.aliases:
            return ast.copy_location(ast.Name(node.attr, node.ctx), node)
        if _is_attrs(node):
            target = ast.parse(_ATTRS[node.attr], mode="eval").body
            if node.attr == "frozen":  # a bare decorator becomes a call
                return ast.Call(target, [], [ast.keyword("frozen", ast.Constant(True))])
            return target
        return self.generic_visit(node)

    def visit_Call(self, node: ast.Call):
        if isinstance(node.func, ast.Attribute) and _is_attrs(node.func):
            keywords = [self.visit(k) for k in node.keywords]
            args = [self.visit(a) for a in node.args]
            if node.func.attr == "field":
                keywords = [ast.keyword("default_factory" if k.arg == "factory" else k.arg,
                                        k.value) for k in keywords]  # fmt: skip
            if node.func.attr == "frozen":
                keywords = [ast.keyword("frozen", ast.Constant(True)), *keywords]
            return ast.Call(ast.parse(_ATTRS[node.func.attr], mode="eval").body, args, keywords)
        return self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef):
        if node.name == "__attrs_post_init__":
            node.name = "__post_init__"
        return self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom):
        return None if node.module and node.module.startswith(PACKAGE) else node

    def visit_Import(self, node: ast.Import):
        return None if node.names[0].name.startswith(PACKAGE) else node
