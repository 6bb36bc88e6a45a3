"""No import cycle inside `qact_cli`.

Every module is parsed (not imported) and its imports become edges of a graph: `import a.b`,
`from a import b` (to the submodule `a.b` when there is one, else to `a`), with relative imports
resolved against the importing module's package. Every import counts, at module level, in class
bodies, in `try`/`if` blocks and inside functions: a lazy import defers the circle to the first call,
it does not remove it (a lazy import stays fine for heavy or optional third-party modules, which are
not qact modules and so no edges). `if TYPE_CHECKING:` blocks are excluded (they never run). The
test fails on any strongly connected component of more than one module, or a module importing
itself, and names the modules of each cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import qact_cli

ROOT = Path(qact_cli.__file__).resolve().parent


def module_files() -> dict[str, tuple[Path, bool]]:
    """module name -> (file, is a package's __init__)."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        out[".".join(parts)] = (path, is_pkg)
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(tree: ast.Module):
    """Every import statement that can run: at module level and inside functions and classes
    (not in an `if TYPE_CHECKING:` block)."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
        else:
            stack.extend(n for n in ast.iter_child_nodes(node) if isinstance(n, ast.stmt))


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, (path, is_pkg) in modules.items():
        package = name if is_pkg else name.rpartition(".")[0]
        for node in imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    base_parts = package.split(".")
                    base_parts = base_parts[:len(base_parts) - (node.level - 1)]
                    base = ".".join(base_parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            graph[name] |= {t for t in targets if t in modules}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with a cycle (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph[node]:
                    found.append(sorted(component))
    return found


def test_the_graph_sees_the_imports_it_should():
    graph = import_graph()
    assert "qact_cli.models.registry" in graph["qact_cli.models.lenet"]  # from .registry import ...
    assert "qact_cli.data.corrupted" in graph["qact_cli.data"]  # from . import corrupted
    assert "qact_cli.errors" in graph["qact_cli.models.checkpoint_file"]  # from ..errors import ...
    assert "qact_cli.training.loop" in graph["qact_cli.training"]
    # a lazy import inside a function is an edge too: qact_cli/__init__ loads api on first use
    assert "qact_cli.api" in graph["qact_cli"]


def test_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"a"}, "b": set()}) == [["a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def with_package_inits(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph plus the edges Python adds: importing `qact_cli.a.b` first runs package `qact_cli.a`'s
    `__init__` (a sibling package's, not one the importer is inside of, which is already running). The
    root package is left out: every module is inside it, and its `__init__` loads no qact module
    until the API is first used."""
    out = {name: set(targets) for name, targets in graph.items()}
    for name, targets in graph.items():
        for target in targets:
            parts = target.split(".")
            for i in range(2, len(parts)):
                package = ".".join(parts[:i])
                if package in graph and package != name and not name.startswith(package + "."):
                    out[name].add(package)
    return out


def test_no_import_cycle_in_qact_cli():
    found = cycles(import_graph())
    assert not found, "import cycles (imports inside functions included): " + "; ".join(" <-> ".join(c) for c in found)


def test_no_import_cycle_through_package_inits():
    # probes/ importing training/'s schedule while training/__init__ imports probes/ would fail at import
    # time with a partially initialised module, whichever package is imported first
    toy = {"r": set(), "r.p": set(), "r.p.a": {"r.q.x"}, "r.q": {"r.q.run"}, "r.q.x": set(), "r.q.run": {"r.p.a"}}
    assert cycles(toy) == [] and cycles(with_package_inits(toy)) == [["r.p.a", "r.q", "r.q.run"]]
    found = cycles(with_package_inits(import_graph()))
    assert not found, "import cycles through package __init__s: " + "; ".join(" <-> ".join(c) for c in found)


MAX_FUNCTION_LINES = 80


def long_functions(limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """Functions (methods and nested ones too) of more than `limit` lines, decorators and docstring included."""
    out = []
    for name, (path, _) in module_files().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                if node.end_lineno - start + 1 > limit:
                    out.append(f"{name}.{node.name} ({node.end_lineno - start + 1} lines)")
    return out


def test_long_function_finder():
    assert long_functions(limit=10**6) == []
    assert any(f.startswith("qact_cli.cli.") for f in long_functions(limit=3))


def test_no_function_longer_than_80_lines():
    found = long_functions()
    assert not found, f"functions over {MAX_FUNCTION_LINES} lines (split them by job): " + ", ".join(found)
