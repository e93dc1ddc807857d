"""Which users' model factories a process may import (tasks/factories.py): those `train
--model-factory` recorded in the project the process points at, and those the environment lists —
never those of another project it pointed at before."""

from __future__ import annotations

import pytest

from tasks import factories


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.setattr(factories, "_project", frozenset())
    monkeypatch.delenv(factories.ENV, raising=False)


def test_a_remembered_factory_is_recorded_once_and_allowed(tmp_path):
    factories.remember(tmp_path, "team.nets:build")
    factories.remember(tmp_path, "team.nets:build")
    assert (tmp_path / factories.FILE).read_text() == "team.nets:build\n"
    assert factories.allowed() == {"team.nets:build"}


def test_pointing_at_another_project_drops_the_first_projects_factories(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    factories.remember(first, "team.nets:build")
    factories.use_project(second)
    assert factories.allowed() == frozenset()
    factories.use_project(first)
    assert factories.allowed() == {"team.nets:build"}


def test_the_environment_lists_factories_separated_by_commas(monkeypatch):
    monkeypatch.setenv(factories.ENV, " team.nets:build, ,other.models:make ")
    assert factories.allowed() == {"team.nets:build", "other.models:make"}


def test_a_factory_found_in_the_current_folder_leaves_the_import_path_as_it_was(tmp_path, monkeypatch):
    """The folder is searched for the factory's own import only: a later import of an absent
    optional package must not find a same-named file there."""
    import sys

    from unlearning.images import factory

    (tmp_path / "team_nets_cwd.py").write_text("import torch\n\ndef build(n_classes):\n"
                                              "    return torch.nn.Linear(4, n_classes)\n")
    (tmp_path / "peft_lookalike_cwd.py").write_text("raise SystemExit('a file in the folder was imported')\n")
    monkeypatch.chdir(tmp_path)
    before = list(sys.path)
    assert factory.import_module("team_nets_cwd:build").build(3).out_features == 3
    assert sys.path == before
    import importlib

    try:
        importlib.import_module("peft_lookalike_cwd")
    except ModuleNotFoundError:
        pass
    else:
        raise AssertionError("a module in the current folder was importable after the factory's import")
    finally:
        sys.modules.pop("team_nets_cwd", None)
