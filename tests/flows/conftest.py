"""Fixtures for flow and CLI tests: real Prefect (test harness), a real MLflow sqlite store and
real DVC, in a temporary workspace with a small synthetic table."""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows.settings import configure_environment


def synthetic_people(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """A small table shaped like a real one: numeric and categorical columns, an id, a label."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 80, n)
    hours = rng.normal(40, 10, n).round(1)
    sex = rng.choice(["female", "male"], n)
    city = rng.choice(["Ames", "Boise", "Cork", "Delft"], n)
    logit = 0.06 * (age - 45) + 0.08 * (hours - 40) + np.where(sex == "male", 0.7, -0.7) + rng.normal(0, 0.8, n)
    return pd.DataFrame({"person": [f"P{1000 + i}" for i in range(n)], "age": age, "hours": hours,
                         "sex": sex, "city": city, "label": np.where(logit > 0, "yes", "no")})


@pytest.fixture(scope="session", autouse=True)
def prefect_harness(tmp_path_factory):
    root = tmp_path_factory.mktemp("prefect-home")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("UNLEARN_TRACKING_URI", None)
    os.environ.pop("UNLEARN_SALT", None)  # the tests' projects keep their salt in .unlearn/salt (pin_project_salt)
    configure_environment(root)
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@contextmanager
def project_root(root: Path, chdir: bool = False):
    """UNLEARN_ROOT (and with `chdir` the working folder) set to `root` for a module-scoped
    workspace, where monkeypatch (function scope) cannot be used; the variable is put back after."""
    old = os.environ.get("UNLEARN_ROOT")
    os.environ["UNLEARN_ROOT"] = str(root)
    if chdir:
        os.chdir(root)
    try:
        yield root
    finally:
        if old is None:
            os.environ.pop("UNLEARN_ROOT", None)
        else:
            os.environ["UNLEARN_ROOT"] = old


@contextmanager
def trained_people_project(tmp_path_factory, name: str):
    """A module-scoped project with the `people` dataset and a trained model `people` (v1, production)."""
    from flows.cli import main

    root = tmp_path_factory.mktemp(name)
    with project_root(root):
        csv = root / "people.csv"
        synthetic_people().to_csv(csv, index=False)
        assert main(["data", "add", "people", "--file", str(csv), "--target", "label", "--id", "person"]) == 0
        assert main(["train", "people"]) == 0
        yield root


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Path:
    """An empty project workspace; the CLI and flows resolve the root from UNLEARN_ROOT."""
    monkeypatch.setenv("UNLEARN_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def pin_project_salt(root: Path) -> None:
    """A fixed fingerprint salt for the project at `root` (a real project draws 32 random bytes).
    A secret's fingerprint seeds its exposure candidates and its controls, so with a random salt
    each run measures every exposure against a different draw (the first text pipeline test's
    retrained model read -8.8 and -5.2 bits above its control band in two runs of one model);
    tests whose verdicts rest on those numbers get the same ones on every run."""
    from unlearning.compliance.signing import SALT_FILE, create_private_once

    pinned = hashlib.sha256(b"unlearnflow tests").digest()
    create_private_once(root / SALT_FILE, pinned)
    assert (root / SALT_FILE).read_bytes() == pinned, "the project drew its salt before it was pinned"


@pytest.fixture
def people_csv(workspace) -> Path:
    path = workspace / "people.csv"
    synthetic_people().to_csv(path, index=False)
    return path


def write_request(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path
