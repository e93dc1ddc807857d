"""The built-in datasets rebuild byte-for-byte: same DVC version everywhere, and the one committed
(data.dvc versions the whole data/ directory, i.e. every built-in dataset)."""

from pathlib import Path

import pytest

from tasks.data import add_dataset
from tasks.dvc import data_version
from unlearning.builtin import BUILTIN
from unlearning.images.data import FASHION_FILES, FASHION_PACKAGE_DIR, _cache_dir

COMMITTED = Path(__file__).parents[2] / "data.dvc"


def fashion_mnist_present() -> bool:
    """The Fashion-MNIST files are on this machine (Debian package or an earlier download): the
    tests never download them."""
    return any(all((folder / f).is_file() for f, _, _ in FASHION_FILES.values())
               for folder in (FASHION_PACKAGE_DIR, _cache_dir()))


def buildable_builtins() -> list[str]:
    return [n for n in sorted(BUILTIN) if n != "fashion-mnist" or fashion_mnist_present()]


def build_all_builtins(root: Path) -> str:
    version = None
    for name in buildable_builtins():
        version = add_dataset(root, name)[1]
    return version


@pytest.fixture(scope="module")
def adult_versions(tmp_path_factory):
    return [build_all_builtins(tmp_path_factory.mktemp(f"workspace{i}")) for i in range(2)]


def test_two_fresh_builds_give_the_same_version(adult_versions):
    first, second = adult_versions
    assert first == second and first.endswith(".dir")


def test_build_matches_the_committed_version(adult_versions):
    if not COMMITTED.exists():
        pytest.skip("data.dvc is not committed yet: run `unlearn data add NAME` for every built-in at the repo root")
    if buildable_builtins() != sorted(BUILTIN):
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist): data.dvc versions "
                    "every built-in, so a partial build cannot match it")
    assert adult_versions[0] == data_version(COMMITTED.parent)


def test_adult_table_shape(tmp_path):
    from unlearning.builtin import build_adult

    table = build_adult()
    assert len(table.frame) == 48_842 and table.labels == ("<=50K", ">50K")
    assert "fnlwgt" not in table.features and "education-num" in table.features
    assert {"sex", "race", "native-country"} <= set(table.categorical)
    assert table.source.startswith("UCI Adult")
    assert (table.frame[list(table.categorical)] == "?").any().any()  # "?" kept as a category
