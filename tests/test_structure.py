"""The shape of the code: no import cycle between the modules of khmer_ocr/ or of plugins/ (imports inside
functions count, `if TYPE_CHECKING:` blocks do not), no module over MAX_LINES lines, the library never
imports Airflow.

Run as a script (`python tests/test_structure.py`) it prints the import graph's cycles and largest modules.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"khmer_ocr": ROOT, "khmer_ocr_airflow": ROOT / "plugins"}  # package -> folder holding it
MAX_LINES = 450


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the packages."""
    out = {}
    for package, base in PACKAGES.items():
        for path in sorted((base / package).rglob("*.py")):
            parts = path.relative_to(base).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str, is_package: bool):
    """(imported module name, line) for every import statement outside `if TYPE_CHECKING:` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                stack.extend(child.orelse)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name, None, child.lineno
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative import
                    parts = module.split(".")
                    keep = len(parts) - child.level + (1 if is_package else 0)
                    base = ".".join(parts[:keep] + ([base] if base else []))
                for alias in child.names:
                    yield base, alias.name, child.lineno
            stack.append(child)


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {project module it imports: first line}."""
    modules = _modules()
    graph: dict[str, dict[str, int]] = {m: {} for m in modules}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for base, name, line in _imports(tree, module, path.name == "__init__.py"):
            target = f"{base}.{name}" if name and f"{base}.{name}" in modules else base
            if target in modules and target != module:
                graph[module].setdefault(target, line)
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _describe(component: list[str], graph: dict[str, dict[str, int]]) -> str:
    members = set(component)
    edges = [
        f"{a} -> {b} (line {line})" for a in component for b, line in sorted(graph[a].items()) if b in members
    ]
    return "; ".join(edges)


def test_no_import_cycle_in_the_library_or_the_plugins() -> None:
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(_describe(c, graph) for c in found)


def test_no_module_is_longer_than_the_limit() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for path in _modules().values()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_the_library_never_imports_airflow() -> None:
    modules = _modules()
    offenders = []
    for module, path in modules.items():
        if not module.startswith("khmer_ocr."):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for base, _, line in _imports(tree, module, path.name == "__init__.py"):
            if base.split(".")[0] in ("airflow", "khmer_ocr_airflow"):
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports {base}")
    assert not offenders, offenders


if __name__ == "__main__":
    graph = import_graph()
    print(f"{len(graph)} modules, {sum(map(len, graph.values()))} import edges")
    for component in cycles(graph):
        print("CYCLE:", _describe(component, graph))
    sizes = sorted((len(p.read_text().splitlines()), str(p.relative_to(ROOT))) for p in _modules().values())
    for n, name in sizes[-8:]:
        print(f"{n:5d} {name}")
