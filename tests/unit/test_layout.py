"""The layout a newcomer can draw: data flows down the tree, no module imports one above
it, no two modules import each other (even through others), and no module outgrows
one concept (about 24 KB).

Read from the source (the ``import`` statements), not by importing: an import
inside a function counts as much as one at the top.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "asyncovf"
#: "About 24 KB": a module past this holds more than one concept.
MAX_MODULE_BYTES = 25_000

#: Floors, from the top; a module may import from its own floor and below only.
#: The package's __init__ (the public names, loaded lazily) and __main__ sit above all.
FLOORS = (
    ("asyncovf.cli",),
    ("asyncovf.importer", "asyncovf.report", "asyncovf.progress", "asyncovf.loadreport"),
    ("asyncovf.engine",),
)


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of this package that ``path`` imports (a package's submodules as
    themselves: ``from asyncovf.cli import run`` imports ``asyncovf.cli.run``)."""
    named: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            named.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = [f"{node.module}.{alias.name}" for alias in node.names
                          if f"{node.module}.{alias.name}" in known]
            named.update(submodules)
            if len(submodules) < len(node.names):
                named.add(node.module)
    return {name for name in named if name in known}


def floor(module: str) -> int:
    for number, prefixes in enumerate(FLOORS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return len(FLOORS) - number
    return 0


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, known) - {name} for name, path in known.items()
            if name not in ("asyncovf", "asyncovf.__main__")}


def test_no_module_imports_one_on_a_floor_above_it() -> None:
    edges = graph()
    upward = sorted(f"{module} -> {target}" for module, targets in edges.items()
                    for target in targets if floor(target) > floor(module))
    assert not upward


def test_no_import_cycles() -> None:
    edges = graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(edges.get(module, ())):
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert not cycles


def test_no_module_holds_more_than_about_24_kb() -> None:
    large = {name: path.stat().st_size for name, path in modules().items()
             if path.stat().st_size > MAX_MODULE_BYTES}
    assert not large


def test_the_checks_see_what_they_check() -> None:
    """The graph is read as meant: a known upward import and a known edge are in it."""
    edges = graph()
    assert "asyncovf.engine.options" in edges["asyncovf.engine.plan"]
    assert "asyncovf.cli.import_" in edges["asyncovf.cli.parser"]
    assert floor("asyncovf.cli.run") > floor("asyncovf.report") > floor("asyncovf.engine.job") \
        > floor("asyncovf.vsphere.session")


def test_the_readme_module_table_matches_the_tree() -> None:
    """Every module is in the README's table once, and nothing else is (a package's
    empty ``__init__.py`` aside)."""
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("| module | owns |"):]
    table = table[:table.index("\n\n")]
    listed = re.findall(r"^\| `(asyncovf/[\w/]+\.py)` \|", table, re.M)
    tree = sorted(str(path.relative_to(PACKAGE.parent)) for path in PACKAGE.rglob("*.py")
                  if not (path.name == "__init__.py" and path.stat().st_size < 200))
    assert len(listed) == len(set(listed)), "a module is listed twice"
    assert sorted(listed) == tree
