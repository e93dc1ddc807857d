"""Image datasets through the data tasks: `data add` stores and versions them, `load_dataset`
dispatches on the stored kind, and a different stored copy is not overwritten silently."""

import numpy as np
import pytest

from tasks.data import add_dataset, dataset_dir, load_dataset, save_dataset
from unlearning.errors import UnlearnError
from unlearning.images.data import ImageDataset, build_digits, correct_images


def test_digits_add_twice_gives_the_same_version_and_loads_back(tmp_path):
    first, version = add_dataset(tmp_path / "a", "digits")
    _, other_root_version = add_dataset(tmp_path / "b", "digits")
    _, again = add_dataset(tmp_path / "a", "digits")  # identical content: no --replace needed
    assert version == other_root_version == again and version.endswith(".dir")
    loaded = load_dataset(tmp_path / "a", "digits")
    assert isinstance(loaded, ImageDataset)
    assert np.array_equal(loaded.images, first.images) and loaded.record_ids == first.record_ids


def test_a_corrected_copy_is_not_overwritten_without_replace(tmp_path):
    add_dataset(tmp_path, "digits")
    digits = build_digits()
    forgotten = [i for i, label in zip(digits.record_ids, digits.labels) if label == 3]
    save_dataset(correct_images(digits, delete_records=forgotten), dataset_dir(tmp_path, "digits"))
    with pytest.raises(UnlearnError, match="--replace"):
        add_dataset(tmp_path, "digits")
    restored, _ = add_dataset(tmp_path, "digits", replace=True)
    assert len(load_dataset(tmp_path, "digits")) == len(restored) == 1797


def test_builtin_images_take_no_target(tmp_path):
    with pytest.raises(UnlearnError, match="built-in"):
        add_dataset(tmp_path, "digits", target="label")
    assert not (tmp_path / "data").exists()  # nothing written before validation
