"""Image datasets: validation, IDX parsing, deterministic storage, the stored split, D → D'."""

from __future__ import annotations

import gzip
import hashlib
import math

import numpy as np
import pytest
from sklearn.datasets import load_digits

from unlearning.images.data import (
    FASHION_FILES,
    FASHION_PACKAGE_DIR,
    IMAGES_FILE,
    RECORDS_FILE,
    SCHEMA_FILE,
    TRAIN_SHARE,
    build_digits,
    build_fashion_mnist,
    correct_images,
    image_dataset,
    is_image_dataset,
    load_images,
    parse_idx,
    save_images,
)
from unlearning.errors import UnlearnError
from unlearning.tabular.data import save_table
from unlearning.tabular.files import table_from_frame


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message
    return message


def small(n=12, seed=0, **overrides):
    rng = np.random.default_rng(seed)
    args = dict(
        name="toy",
        images=rng.integers(0, 256, (n, 5, 4), dtype=np.uint8),
        labels=rng.integers(0, 3, n),
        classes=["cat", "dog", "T-shirt/top, long"],  # a comma and a slash: CSV must quote
        record_ids=[f"img:{i:03d}" for i in range(n)],
        train=np.arange(n) % 4 != 0,
        source="made up",
    )
    args.update(overrides)
    return image_dataset(**args)


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX written out from its definition: 0 0 8 ndim, big-endian uint32 sizes, the bytes."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    return header + array.astype(np.uint8).tobytes()


# --- IDX -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(7,), (3, 5, 4), (2, 1, 3, 3)])
def test_idx_parse_round_trip(shape):
    array = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    assert np.array_equal(parse_idx(idx_bytes(array)), array)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\x00\x0d\x01\x00\x00\x00\x01\x05",  # float IDX (0x0d), not unsigned bytes
        b"\x00\x00\x08\x02\x00\x00\x00",  # header cut short
        idx_bytes(np.zeros((2, 3), np.uint8))[:-1],  # one data byte missing
        idx_bytes(np.zeros((2, 3), np.uint8)) + b"\x00",  # one too many
    ],
)
def test_idx_rejects_malformed_files(raw):
    with pytest.raises(UnlearnError) as excinfo:
        parse_idx(raw)
    assert "re-fetch" in one_line_error(excinfo)


# --- validation ----------------------------------------------------------------------------------

def test_grayscale_images_get_a_channel_axis_and_arrays_are_read_only():
    ds = small()
    assert ds.images.shape == (12, 1, 5, 4) and ds.labels.dtype == np.int64
    with pytest.raises(ValueError):
        ds.images[0, 0, 0, 0] = 1
    mask = ds.train_mask()
    mask[:] = False  # a copy: the dataset's split is untouched
    assert ds.train.sum() == 9


@pytest.mark.parametrize(
    "overrides",
    [
        {"images": np.zeros((12, 5, 4), dtype=np.float32)},
        {"images": np.zeros((12, 20), dtype=np.uint8)},
        {"images": np.zeros((0, 5, 4), dtype=np.uint8)},
        {"labels": np.full(12, 3)},  # 3 classes: 0..2
        {"labels": np.full(12, -1)},
        {"labels": np.zeros(12, dtype=float)},
        {"labels": np.zeros(11, dtype=int)},
        {"classes": ["only"]},
        {"classes": ["a", "a", "b"]},
        {"record_ids": [f"img:{i % 11}" for i in range(12)]},  # a duplicate
        {"record_ids": [f"img:{i}" for i in range(11)]},
        {"record_ids": ["a,b", *[f"img:{i}" for i in range(11)]]},
        {"train": np.ones(12, dtype=int)},
        {"name": "Bad Name"},
    ],
)
def test_bad_input_is_refused_with_a_one_line_error(overrides):
    with pytest.raises(UnlearnError) as excinfo:
        small(**overrides)
    one_line_error(excinfo)


def test_positions_name_unknown_ids():
    ds = small()
    assert ds.positions(["img:005", "img:001"]).tolist() == [5, 1]
    with pytest.raises(UnlearnError, match="'img:999'"):
        ds.positions(["img:001", "img:999"])


# --- storage -------------------------------------------------------------------------------------

def test_save_load_round_trip(tmp_path):
    ds = small()
    save_images(ds, tmp_path / "toy")
    assert is_image_dataset(tmp_path / "toy")
    back = load_images(tmp_path / "toy")
    assert np.array_equal(back.images, ds.images) and np.array_equal(back.labels, ds.labels)
    assert np.array_equal(back.train, ds.train)
    assert (back.name, back.classes, back.record_ids, back.source) == (ds.name, ds.classes, ds.record_ids, ds.source)


def test_stored_bytes_depend_on_the_content_only(tmp_path):
    save_images(small(), tmp_path / "a" / "toy")
    save_images(small(), tmp_path / "b" / "toy")
    for file in (IMAGES_FILE, RECORDS_FILE, SCHEMA_FILE):
        assert (tmp_path / "a" / "toy" / file).read_bytes() == (tmp_path / "b" / "toy" / file).read_bytes()
    # Plain numpy reads the array back; the CSV is readable as text.
    assert np.array_equal(np.load(tmp_path / "a" / "toy" / IMAGES_FILE), small().images)


def test_records_csv_lists_id_class_name_and_split(tmp_path):
    ds = image_dataset(
        "two", np.zeros((2, 3, 3), np.uint8), [2, 0], ["cat", "dog", "T-shirt/top, long"], ["a", "b"], [True, False]
    )
    save_images(ds, tmp_path / "two")
    assert (tmp_path / "two" / RECORDS_FILE).read_text() == 'id,label,split\na,"T-shirt/top, long",train\nb,cat,test\n'


def test_saving_replaces_the_folder_as_a_whole(tmp_path):
    save_images(small(n=12), tmp_path / "toy")
    (tmp_path / "toy" / "stray.txt").write_text("left over")
    save_images(small(n=5, seed=3), tmp_path / "toy")
    assert sorted(p.name for p in (tmp_path / "toy").iterdir()) == sorted([IMAGES_FILE, RECORDS_FILE, SCHEMA_FILE])
    assert len(load_images(tmp_path / "toy")) == 5
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind


def corrupt(path, offset=-1):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: corrupt(d / IMAGES_FILE),  # one pixel changed: sha256 no longer matches
        lambda d: (d / RECORDS_FILE).write_text((d / RECORDS_FILE).read_text().replace(",cat,", ",lion,")),
        lambda d: (d / RECORDS_FILE).write_text((d / RECORDS_FILE).read_text().replace(",train", ",dev", 1)),
        lambda d: (d / RECORDS_FILE).write_text("\n".join((d / RECORDS_FILE).read_text().splitlines()[:-1]) + "\n"),
        lambda d: (d / SCHEMA_FILE).write_text("{not json"),
        lambda d: (d / IMAGES_FILE).unlink(),
    ],
)
def test_damaged_datasets_are_refused(tmp_path, damage):
    ds = small()
    ds = image_dataset("toy", ds.images, np.zeros(12, int), ds.classes, ds.record_ids, ds.train)  # has 'cat'
    save_images(ds, tmp_path / "toy")
    damage(tmp_path / "toy")
    with pytest.raises(UnlearnError) as excinfo:
        load_images(tmp_path / "toy")
    assert "unlearn data add toy" in one_line_error(excinfo)


def test_a_table_is_not_an_image_dataset(tmp_path):
    import pandas as pd

    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": ["a", "b", "a", "b"]})
    save_table(table_from_frame("tab", frame, "y"), tmp_path / "tab")
    assert not is_image_dataset(tmp_path / "tab")
    with pytest.raises(UnlearnError, match="not an image dataset"):
        load_images(tmp_path / "tab")


# --- D -> D' -------------------------------------------------------------------------------------

def test_correction_deletes_and_relabels_without_moving_the_split():
    ds = small()
    after = correct_images(ds, delete_records=["img:001", "img:004"], fix_labels={"img:002": "dog"})
    assert len(after) == 10 and "img:001" not in after.record_ids
    kept = ds.positions(after.record_ids)
    assert np.array_equal(after.images, ds.images[kept]) and np.array_equal(after.train, ds.train[kept])
    assert after.labels[after.positions(["img:002"])[0]] == 1
    assert np.array_equal(np.delete(after.labels, after.positions(["img:002"])),
                          np.delete(ds.labels[kept], after.positions(["img:002"])))


@pytest.mark.parametrize(
    "request_",
    [{"delete_records": ["img:999"]}, {"fix_labels": {"img:999": "dog"}}, {"fix_labels": {"img:001": "lion"}}],
)
def test_correction_refuses_unknown_ids_and_classes(request_):
    with pytest.raises(UnlearnError) as excinfo:
        correct_images(small(), **request_)
    one_line_error(excinfo)


# --- built-in: digits ----------------------------------------------------------------------------

def test_digits_are_sklearns_images_scaled_one_to_one():
    ds, bunch = build_digits(), load_digits()
    assert ds.images.shape == (1797, 1, 8, 8) and ds.classes == tuple("0123456789")
    assert np.array_equal(ds.labels, bunch.target)
    levels = np.arange(17)  # sklearn's pixels are counts 0..16
    scaled = np.rint(levels * 255 / 16)
    assert len(set(scaled)) == 17 and scaled[-1] == 255  # one-to-one onto 0..255
    assert np.array_equal(ds.images[:, 0], scaled[bunch.images.astype(int)])


def test_digits_split_is_stable_and_near_its_share():
    first, second = build_digits(), build_digits()
    assert np.array_equal(first.train, second.train)
    n, share = len(first), first.train.mean()
    assert abs(share - TRAIN_SHARE) < 4 * math.sqrt(TRAIN_SHARE * (1 - TRAIN_SHARE) / n)
    # Decided per id: after deleting images, every remaining one keeps its split.
    after = correct_images(first, delete_records=first.record_ids[::3])
    assert np.array_equal(after.train, first.train[first.positions(after.record_ids)])


def test_digits_rebuild_byte_for_byte(tmp_path):
    save_images(build_digits(), tmp_path / "a" / "digits")
    save_images(build_digits(), tmp_path / "b" / "digits")
    for file in (IMAGES_FILE, RECORDS_FILE, SCHEMA_FILE):
        assert (tmp_path / "a" / "digits" / file).read_bytes() == (tmp_path / "b" / "digits" / file).read_bytes()


# --- built-in: Fashion-MNIST ---------------------------------------------------------------------

needs_fashion = pytest.mark.skipif(
    not all((FASHION_PACKAGE_DIR / f).is_file() for f, _, _ in FASHION_FILES.values()),
    reason="Fashion-MNIST files absent: `apt-get install dataset-fashion-mnist`",
)


@needs_fashion
def test_fashion_mnist_subset_is_a_prefix_of_the_official_files():
    ds = build_fashion_mnist(n_train=300, n_test=100, allow_download=False)
    assert ds.images.shape == (400, 1, 28, 28) and ds.train.sum() == 300
    assert ds.record_ids[0] == "train:00000" and ds.record_ids[300] == "test:00000"
    # Read the files again here, independently of the loader.
    raw = gzip.decompress((FASHION_PACKAGE_DIR / FASHION_FILES["train_labels"][0]).read_bytes())
    assert np.array_equal(ds.labels[:300], np.frombuffer(raw[8:308], np.uint8))
    raw = gzip.decompress((FASHION_PACKAGE_DIR / FASHION_FILES["test_images"][0]).read_bytes())
    assert ds.images[300:].tobytes() == raw[16 : 16 + 100 * 784]
    assert ds.classes[ds.labels[0]] == "Ankle boot"  # the first training image, as published


def fake_package(tmp_path, damaged: str | None = None):
    """A package folder of correct files, one of them replaced by a wrong (but valid gzip) one."""
    folder = tmp_path / "pkg"
    folder.mkdir()
    for key, (file, _, _) in FASHION_FILES.items():
        if key == damaged:
            (folder / file).write_bytes(gzip.compress(idx_bytes(np.zeros(3, np.uint8))))
        else:
            (folder / file).symlink_to(FASHION_PACKAGE_DIR / file)
    return folder


@needs_fashion
def test_fashion_mnist_refuses_files_that_differ_from_the_published_ones(tmp_path):
    with pytest.raises(UnlearnError) as excinfo:
        build_fashion_mnist(10, 10, package_dir=fake_package(tmp_path, "test_labels"), allow_download=False)
    assert "does not match the published" in one_line_error(excinfo)


def test_fashion_mnist_missing_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(UnlearnError) as excinfo:
        build_fashion_mnist(package_dir=tmp_path / "nowhere", allow_download=False)
    assert "apt-get install dataset-fashion-mnist" in one_line_error(excinfo)


@pytest.mark.parametrize("n_train", [0, 60_001, 2.5, True])
def test_fashion_mnist_subset_size_is_checked_first(n_train, tmp_path):
    with pytest.raises(UnlearnError, match="n_train"):
        build_fashion_mnist(n_train=n_train, package_dir=tmp_path, allow_download=False)


def test_pinned_checksums_are_well_formed():
    # md5 of the published .gz (32 hex), sha256 of the content (64 hex): a typo would make every
    # copy look corrupt.
    for file, md5, sha256 in FASHION_FILES.values():
        assert file.endswith("-ubyte.gz") and len(md5) == 32 and len(sha256) == 64
        int(md5, 16), int(sha256, 16)
    assert hashlib.sha256(b"").hexdigest() not in {s for _, _, s in FASHION_FILES.values()}
