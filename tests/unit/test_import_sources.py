"""A name is imported from the module that defines it: `from M import N` never takes N from a plain
module M that only imports N itself, so a reader finds N where it lives and the import graph has no
arrow that carries nothing. A package's `__init__` is exempt: its names are the package's facade."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("unlearning", "tasks", "flows", "bench", "tests")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_sources() -> dict[str, Path]:
    files = [p for folder in FOLDERS for p in sorted((ROOT / folder).rglob("*.py"))]
    assert len(files) > 100, f"only {len(files)} sources under {ROOT}"  # the walk really found the tree
    return {module_name(p): p for p in files}


def top_level_statements(tree: ast.Module):
    """The module's own statements, those under a top-level `if`/`try` (TYPE_CHECKING, fallbacks) too."""
    for node in tree.body:
        yield node
        if isinstance(node, (ast.If, ast.Try)):
            yield from (n for n in ast.walk(node) if n is not node)


def defined_and_passed_on(tree: ast.Module) -> tuple[set[str], set[str]]:
    """(names the module binds itself, names it only imports)."""
    defined, imported = set(), set()
    for node in top_level_statements(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            defined |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            imported |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return defined, imported - defined


def reached_through(sources: dict[str, Path], root: Path = ROOT) -> list[str]:
    """Every `from M import N` where M is a plain project module that does not define N."""
    trees = {name: ast.parse(path.read_text(encoding="utf-8"), filename=str(path)) for name, path in sources.items()}
    passes_on = {name: defined_and_passed_on(tree)[1] for name, tree in trees.items()
                 if sources[name].name != "__init__.py"}
    found = []
    for name, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in passes_on:
                found += [f"{sources[name].relative_to(root)}:{node.lineno}: {a.name} from {node.module}"
                          for a in node.names if a.name in passes_on[node.module]]
    return found


def test_every_name_is_imported_from_the_module_that_defines_it():
    found = reached_through(project_sources())
    assert not found, "imported through a module that only passes them on:\n" + "\n".join(found)


def test_a_name_passed_on_is_found(tmp_path):
    """The check itself: a module that imports a name and a caller that takes it from there."""
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "maths.py").write_text("def area(r):\n    return 3.14 * r * r\n")
    (tmp_path / "lib" / "shim.py").write_text("from lib.maths import area  # noqa: F401\nSCALE = 2\n")
    (tmp_path / "lib" / "user.py").write_text("from lib.shim import SCALE, area\n")
    sources = {f"lib.{p.stem}": p for p in (tmp_path / "lib").glob("*.py")}
    assert reached_through(sources, tmp_path) == ["lib/user.py:1: area from lib.shim"]
