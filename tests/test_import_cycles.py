"""The package's modules import each other without cycles, counting imports inside functions
(the usual way to hide one) as much as those at the top."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "stackwise_dsl"


def _modules() -> dict[str, Path]:
    out = {}
    for file in PACKAGE.rglob("*.py"):
        parts = list(file.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = file
    return out


def _imports(file: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules `file` imports anywhere in it. `from pkg import sub` names the
    module pkg.sub, not pkg (whose __init__ only runs first, as for any submodule)."""

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    found = set()
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {owner(a.name) for a in node.names if a.name.startswith("stackwise_dsl")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if not node.module.startswith("stackwise_dsl"):
                continue
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else owner(node.module))
    return found - {None}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_module_imports_itself_through_others():
    modules = _modules()
    graph = {m: _imports(f, modules) - {m} for m, f in modules.items()}
    cycles = _cycles(graph)
    shown = [
        " -> ".join(c) + ": " + "; ".join(f"{a} imports {b}" for a in c for b in graph[a] if b in c)
        for c in cycles
    ]
    assert not cycles, "\n".join(shown)


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_core_stands_alone_and_only_the_cli_is_the_cli():
    """The core (model, objectives, the loop) needs nothing of the harness, the emitter or the
    command line; the harness needs nothing of the command line; nothing but the command line
    (and `python -m stackwise_dsl`) imports it."""
    modules = _modules()
    graph = {m: _imports(f, modules) for m, f in modules.items()}

    def under(name: str, package: str) -> bool:
        return name == f"stackwise_dsl.{package}" or name.startswith(f"stackwise_dsl.{package}.")

    wrong = [
        (m, x)
        for m, targets in graph.items()
        for x in targets
        if (under(m, "core") and any(under(x, pkg) for pkg in ("runtime", "emit", "cli")))
        or (under(m, "runtime") and under(x, "cli"))
        or (under(x, "cli") and not under(m, "cli") and m != "stackwise_dsl.__main__")
    ]
    assert not wrong, wrong
