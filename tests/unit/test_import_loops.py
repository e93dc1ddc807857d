"""The library has no import loops: no module of `unlearning/` reaches itself through its imports
(module level or inside functions; `if TYPE_CHECKING:` blocks are annotations, never run).
`import a.b.c` also runs the packages `a.b` and `a`, so those count as edges too, except a
module's own packages (they always run before it); `from a.b import x` depends on package `a.b`
itself (and on `a.b.x` where that is a module), whoever imports it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "unlearning"
EXPLICIT = "!"  # marks the package named by `from PACKAGE import ...`


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, package: str):
    """Dotted names imported anywhere in `tree` outside TYPE_CHECKING blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                yield from (".".join(parts[:i]) for i in range(1, len(parts) + 1))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            parts = base.split(".")
            yield from (".".join(parts[:i]) for i in range(1, len(parts)))
            yield EXPLICIT + base
            yield from (f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
        stack.extend(ast.iter_child_nodes(node))


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in LIBRARY.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        own_packages = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        edges = set()
        for target in _imports(ast.parse(path.read_text(encoding="utf-8")), package):
            if target.startswith(EXPLICIT):
                edges.add(target.removeprefix(EXPLICIT))
            elif target not in own_packages:
                edges.add(target)
        graph[name] = (edges & modules.keys()) - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_real_imports():
    graph = import_graph()
    assert "unlearning.registry" in graph["unlearning.tabular.methods"]
    assert "unlearning.tabular.logreg" in graph["unlearning.references"]  # an import inside a function
    assert "unlearning.tabular.noise" in graph["unlearning.tabular.problem"]


def test_the_library_has_no_import_loops():
    assert cycles(import_graph()) == []
