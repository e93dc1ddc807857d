"""The library never imports the orchestration stack (house style: `unlearning/` is pure)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

LIBRARY = Path(__file__).resolve().parents[2] / "unlearning"
FORBIDDEN = ("prefect", "mlflow")


def _sources():
    files = sorted(LIBRARY.rglob("*.py"))
    assert files, f"no library sources under {LIBRARY}"
    return files


def _imported_roots(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id == "__import__" and node.args and isinstance(node.args[0], ast.Constant)):
            yield node.lineno, str(node.args[0].value).split(".")[0]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args and isinstance(node.args[0], ast.Constant)):
            yield node.lineno, str(node.args[0].value).split(".")[0]


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(LIBRARY.parent)))
def test_source_does_not_import_orchestration(path):
    text = path.read_text(encoding="utf-8")
    offending = [f"{path.name}:{line} imports {root}"
                 for line, root in _imported_roots(ast.parse(text, filename=str(path))) if root in FORBIDDEN]
    assert not offending, offending
    for word in FORBIDDEN:  # belt and braces: the plain-text forms, wherever they sit
        assert f"import {word}" not in text and f"from {word}" not in text, f"{path}: mentions 'import {word}'"


def test_importing_every_submodule_loads_neither_prefect_nor_mlflow():
    script = f"""
import importlib, json, pkgutil, sys
sys.path.insert(0, {str(LIBRARY.parent)!r})
import unlearning
names = ["unlearning"] + [m.name for m in pkgutil.walk_packages(unlearning.__path__, "unlearning.")]
for name in names:
    importlib.import_module(name)
print(json.dumps({{"modules": names,
                  "loaded": sorted(m for m in sys.modules if m.split(".")[0] in {FORBIDDEN!r})}}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert "unlearning.tabular.methods" in report["modules"]  # the walk really reached the submodules
    assert report["loaded"] == []
