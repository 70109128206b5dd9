"""The shape of the code, checked on every plain `pytest` run.

`lint-imports` (make lint) holds the full layering contracts of pyproject.toml; these two
are the ones that must never slip in unnoticed, so they are checked again here with
nothing but ast: no import circle among the modules of bot/ and commands/, and no
command module importing an adapter of bot/ops directly. Imports are read at module
level and inside functions, TYPE_CHECKING included: a circle that only typing hides is
still a circle a reader has to hold in mind.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("bot", "commands")


def modules() -> dict[str, Path]:
    """Every module of the packages, by dotted name (a package by its __init__)."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def imported(module: str, path: Path, known: set[str]) -> set[str]:
    """The project modules that `module` imports, anywhere in its file."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")
                up = up[: len(up) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            # `from a import b` may name a module a.b or a name in a
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for name in names:
            while name and name not in known:
                name = name.rsplit(".", 1)[0] if "." in name else ""
            if name and name != module:
                found.add(name)
    return found


@functools.cache
def import_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    graph: dict[str, set[str]] = {}
    for module, path in mods.items():
        # a package's __init__ re-exporting its children is how packages work, and
        # a child importing its parent package is not a circle worth counting
        graph[module] = {
            dep
            for dep in imported(module, path, known)
            if not (module.startswith(dep + ".") and mods[dep].name == "__init__.py")
        }
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, deps = work[-1]
            for dep in deps:
                if dep not in index:
                    index[dep] = low[dep] = len(index)
                    stack.append(dep)
                    on_stack.add(dep)
                    work.append((dep, iter(sorted(graph.get(dep, ())))))
                    break
                if dep in on_stack:
                    low[node] = min(low[node], index[dep])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_circles_finds_a_circle_and_only_the_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert circles(graph) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_imported_reads_type_checking_function_level_and_relative_imports(
    tmp_path: Path,
) -> None:
    path = tmp_path / "mod.py"
    path.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from pkg.b import Thing\n"
        "def f():\n"
        "    import pkg.c\n"
        "from . import d\n"
    )
    known = {"pkg", "pkg.a", "pkg.b", "pkg.c", "pkg.d"}
    assert imported("pkg.a", path, known) == {"pkg", "pkg.b", "pkg.c", "pkg.d"}


def test_no_import_circle_among_bot_and_commands() -> None:
    found = circles(import_graph())
    assert not found, "import circles:\n" + "\n".join(", ".join(c) for c in found)


@pytest.mark.parametrize("command", sorted(m for m in modules() if m.startswith("commands")))
def test_commands_import_no_adapter(command: str) -> None:
    graph = import_graph()
    adapters = sorted(
        dep for dep in graph[command] if dep == "bot.ops" or dep.startswith("bot.ops.")
    )
    assert not adapters, f"{command} imports {', '.join(adapters)}: go through the features"
