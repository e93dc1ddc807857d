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
