"""Import rules of the code base (DESIGN.md "Dependencies point one way"; STYLE.md 17, 20).

Read from the source with ``ast``, nothing is imported: every import counts, at module level,
inside a function or under ``if TYPE_CHECKING:``, since an import deferred into a function to
dodge a circle is still the circle.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = "promptinit"
# the platform's packages, checked on their own; skipped should they ever sit inside the core
PLATFORM = ("search", "trainables", "spaces", "analysis")
CHECKED_FOLDERS = (CORE, *PLATFORM)


def module_name(path: Path, root: Path) -> str:
    """``promptinit/a/b.py`` -> ``promptinit.a.b``; a package's ``__init__.py`` is the package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def core_files() -> dict[str, Path]:
    """Every module of the core library, by name."""
    files = {}
    for path in sorted((ROOT / CORE).rglob("*.py")):
        inside = path.relative_to(ROOT / CORE).parts
        if inside[0] in PLATFORM:
            continue
        files[module_name(path, ROOT)] = path
    return files


def imported_modules(path: Path, name: str, known: set[str]) -> set[str]:
    """The modules of ``known`` that the file ``path`` (module ``name``) imports anywhere."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: climb from this file's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import mod` imports the submodule; `from mod import name` the module
            found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names)
    return {m for m in found if m in known and m != name}


def import_graph() -> dict[str, set[str]]:
    files = core_files()
    known = set(files)
    return {name: imported_modules(path, name, known) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that ends where it starts, or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(graph, WHITE)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = GREY
        stack.append(node)
        for nxt in sorted(graph[node]):
            if colour[nxt] == GREY:
                return stack[stack.index(nxt):] + [nxt]
            if colour[nxt] == WHITE and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        colour[node] = BLACK
        return None

    for start in sorted(graph):
        if colour[start] == WHITE and (cycle := visit(start)):
            return cycle
    return None


def test_find_cycle_reports_a_circle_and_accepts_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_imports_inside_functions_and_from_packages(tmp_path):
    pkg = tmp_path / "promptinit"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "sub" / "__init__.py").write_text("from promptinit.sub.b import B\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from promptinit import c\n")
    (pkg / "c.py").write_text("from . import sub\n")
    known = {"promptinit.sub", "promptinit.sub.b", "promptinit.c"}
    assert imported_modules(pkg / "sub" / "b.py", "promptinit.sub.b", known) == {"promptinit.c"}
    assert imported_modules(pkg / "c.py", "promptinit.c", known) == {"promptinit.sub"}
    assert imported_modules(pkg / "sub" / "__init__.py", "promptinit.sub", known) == {"promptinit.sub.b"}


def test_core_modules_import_each_other_without_cycles():
    graph = import_graph()
    assert "promptinit.evaluation" in graph and "promptinit.batched" in graph["promptinit.evaluation"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def private_imports(folder: Path) -> list[str]:
    """``file:line`` of every ``from X import _name`` under ``folder`` (``__future__`` aside)."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ImportFrom) or node.module == "__future__":
                continue
            for alias in node.names:
                dunder = alias.name.startswith("__") and alias.name.endswith("__")
                if alias.name.startswith("_") and not dunder:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: from {node.module} import {alias.name}")
    return found


@pytest.mark.parametrize("folder", CHECKED_FOLDERS)
def test_no_module_imports_another_modules_private_names(folder):
    assert (ROOT / folder).is_dir(), f"no folder {folder}/: the layout names it"
    found = private_imports(ROOT / folder)
    assert not found, "private names imported from another module:\n" + "\n".join(found)


MAX_FUNCTION_LINES = 60  # the platform floors read in one sitting: no function longer than a screen


@pytest.mark.parametrize("folder", PLATFORM)
def test_no_platform_function_is_longer_than_a_screen(folder):
    long = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "split these functions: " + "; ".join(long)
