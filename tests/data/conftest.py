"""Fixtures for the data tests: small CSV datasets written into a temp dir."""

import numpy as np
import pandas as pd
import pytest


def write_csv(path, n=60, seed=0):
    rng = np.random.default_rng(seed)
    pd.DataFrame(
        {
            "pid": [f"p{i:03d}" for i in range(n)],
            "age": rng.integers(18, 80, n),
            "sex": rng.choice(["F", "M"], n),
            "y": rng.choice(["no", "yes"], n),
        }
    ).to_csv(path, index=False)
    return path


@pytest.fixture
def toy_csv(tmp_path):
    return write_csv(tmp_path / "toy.csv")


@pytest.fixture
def other_csv(tmp_path):
    return write_csv(tmp_path / "other.csv", n=30, seed=1)
