"""The shape of tasks/ and flows/ (issue 12): no import loops, no Prefect flow outside flows/, no
import-time side effects in the step modules, and every kind implementing the same steps behind one
dispatch. Read from the sources (milliseconds), except the dispatch, which is called."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
# tracking.py: its MLflow environment defaults are another part of issue 12; pyfunc_entry.py: MLflow's
# models-from-code entry point, whose import is what registers the model.
STEP_MODULES = sorted(str(p.relative_to(REPO)) for p in (REPO / "tasks").rglob("*.py")
                      if p.name not in ("tracking.py", "pyfunc_entry.py"))


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(REPO).with_suffix("").parts)
    return name.removesuffix(".__init__")


def project_imports(path: Path, modules: set[str]) -> set[str]:
    """Modules of `modules` that `path` imports, at its top or inside a function alike."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return {m for m in found if m in modules} - {module_name(path)}


def import_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the import graph, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_tasks_and_flows_import_each_other_without_loops():
    files = sorted((REPO / "tasks").rglob("*.py")) + sorted((REPO / "flows").rglob("*.py"))
    modules = {module_name(p) for p in files}
    graph = {module_name(p): project_imports(p, modules) for p in files}
    assert import_cycle(graph) is None, " → ".join(import_cycle(graph))


def test_the_shared_pieces_import_no_kind():
    files = sorted((REPO / "tasks").rglob("*.py"))
    kinds = {module_name(p) for p in files if p.parent.name == "kinds"}
    for shared in ("tasks/common.py", "tasks/references.py"):
        assert not project_imports(REPO / shared, kinds), shared


def decorator_names(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        for dec in getattr(node, "decorator_list", []):
            target = dec.func if isinstance(dec, ast.Call) else dec
            names.add(target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", ""))
    return names


@pytest.mark.parametrize("path", sorted((REPO / "tasks").rglob("*.py")), ids=lambda p: str(p.relative_to(REPO)))
def test_no_prefect_flow_is_defined_in_tasks(path):
    assert "flow" not in decorator_names(ast.parse(path.read_text(encoding="utf-8"))), \
        f"{path.relative_to(REPO)} defines a @flow: flows live in flows/"


@pytest.mark.parametrize("relative", STEP_MODULES)
def test_importing_a_step_module_calls_nothing(relative):
    """A call at a module's top level runs at import (matplotlib.use, os.environ[...] = ...): a
    process-wide change made by merely importing. Definitions and constants only."""
    tree = ast.parse((REPO / relative).read_text(encoding="utf-8"))
    calls = [f"line {node.lineno}" for node in tree.body
             if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)]
    calls += [f"line {node.lineno}" for node in tree.body if isinstance(node, ast.Assign)
              and any(isinstance(t, ast.Subscript) for t in node.targets)]
    assert not calls, f"{relative}: statements run at import: {calls}"


def small_datasets():
    from unlearning.images.data import ImageDataset
    from unlearning.tabular.files import table_from_frame
    from unlearning.text.data import TextCorpus

    frame = pd.DataFrame({"id": [f"r{i}" for i in range(8)], "x": np.arange(8.0), "y": ["a", "b"] * 4})
    table = table_from_frame("people", frame, "y", id_column="id")
    corpus = TextCorpus("notes", (("n1", "a note"),), "test")
    images = ImageDataset("shapes", np.zeros((2, 1, 4, 4), np.uint8), np.array([0, 1]), ("a", "b"), ("i0", "i1"),
                          np.array([True, False]))
    return {"table": table, "text": corpus, "images": images}


def test_each_dataset_maps_to_its_kind_in_one_place():
    from tasks.kinds import KINDS, kind_of

    datasets = small_datasets()
    assert {kind.name for kind in KINDS} == set(datasets)
    for name, dataset in datasets.items():
        assert kind_of(dataset).name == name
    with pytest.raises(TypeError):
        kind_of(object())


@pytest.mark.parametrize("step", ["train_params", "train", "plan", "correct_data", "update", "verify",
                                  "reference_job", "format_forget"])
def test_every_kind_implements_the_steps_of_the_recipe(step):
    from tasks.kinds import KINDS
    from tasks.kinds.base import Kind

    missing = [kind.name for kind in KINDS if getattr(type(kind), step) is getattr(Kind, step)]
    assert not missing, f"kinds without their own {step}: {missing}"


KIND_TYPES = ("Table", "TextCorpus", "ImageDataset", "ModelBundle", "LMBundle", "ImageBundle")


def isinstance_on_a_kind(path: Path) -> list[str]:
    """The lines of `path` that call isinstance with a kind's dataset or model type."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "isinstance" and len(node.args) == 2:
            names = {getattr(n, "id", getattr(n, "attr", "")) for n in ast.walk(node.args[1])}
            if names & set(KIND_TYPES):
                found.append(f"line {node.lineno}")
    return found


@pytest.mark.parametrize("relative", ["tasks/tracking.py", "tasks/data.py", "tasks/scan.py", "flows/cli.py",
                                      "flows/train_cli.py", "flows/erasure_cli.py", "flows/demo_cli.py"])
def test_storage_and_cli_leave_the_kinds_to_their_dispatch(relative):
    """Saving, loading, predicting and describing a dataset or a model goes through tasks.formats
    (one Format per kind), so a new kind is not one more branch in each of these files."""
    assert not isinstance_on_a_kind(REPO / relative), \
        f"{relative} branches on a kind's type: {isinstance_on_a_kind(REPO / relative)}"


def test_each_dataset_and_model_folder_maps_to_its_format(tmp_path):
    from tasks.formats import FORMATS, format_of, format_of_dataset_folder

    datasets = small_datasets()
    assert {f.name for f in FORMATS} == set(datasets)
    for name, dataset in datasets.items():
        assert format_of(dataset).name == name
        format_of(dataset).save_dataset(dataset, tmp_path / name)
        assert format_of_dataset_folder(tmp_path / name).name == name
        assert format_of(dataset).same_dataset(format_of(dataset).load_dataset(tmp_path / name), dataset)
    with pytest.raises(TypeError):
        format_of(object())
