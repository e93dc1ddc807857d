"""Image datasets: labelled grayscale images with record ids and a stored train/test split.

An `ImageDataset` is the training data D of science.md §1 for an image classifier (§4). Images are
uint8 (n, C, H, W) in 0..255 (C = 1 for the built-ins), labels are class indices into `classes`,
and every image has a stable string id, so an unlearning request can name it. The split is part
of the data (`train`): Fashion-MNIST keeps its official 60k/10k split, other datasets are split
per record from sha256(id) as `Table.train_mask` does, so deleting images never moves another one
between train and test.

Storage (`save_images`): a folder with
- images.npy: the (n, C, H, W) uint8 array, .npy format version 1.0, C order;
- records.csv: `id,label,split` per image in dataset order (label = class name, split = train/test);
- schema.json: `{"kind": "images", "format", "name", "source", "classes", "shape", "n_images",
  "n_train", "images_sha256"}`.
Raw .npy rather than np.savez: a zip stores the time of writing and compressed bytes depend on the
zlib build, either of which would change the DVC hash between two builds of the same data. Here
the bytes depend on the content alone (sorted JSON keys, "\\n" line ends).

Built-ins: `build_fashion_mnist` (Zalando's Fashion-MNIST, MIT) and `build_digits` (scikit-learn's
bundled 8×8 digits, for fast tests).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from unlearning.storage import check_name, staging_dir, swap_in
from unlearning.errors import UnlearnError

IMAGES_FILE = "images.npy"
RECORDS_FILE = "records.csv"
SCHEMA_FILE = "schema.json"
SCHEMA_VERSION = 1
SPLITS = ("train", "test")
TRAIN_SHARE = 0.8  # for datasets without an official split (hash of the id, as tables)

# Salted like Table.train_mask, with its own purpose so the image split is unrelated to it.
_SPLIT_SALT = b"unlearnflow/image-train-split/v1:"


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """A validated image dataset; build it with `image_dataset`, which checks every field.

    images: (n, C, H, W) uint8; labels: (n,) int64 indices into `classes`; record_ids: n unique
    strings; train: (n,) bool, True = training image. Arrays are read-only.
    """

    name: str
    images: np.ndarray  # (n, C, H, W) uint8
    labels: np.ndarray  # (n,) int64
    classes: tuple[str, ...]
    record_ids: tuple[str, ...]
    train: np.ndarray  # (n,) bool
    source: str = ""

    def ids(self) -> list[str]:
        return list(self.record_ids)

    def train_mask(self) -> np.ndarray:
        """(n,) bool, True = training image (a copy of the stored split)."""
        return self.train.copy()

    def positions(self, ids: Iterable[str]) -> np.ndarray:
        """Row indices of the given record ids, in the order given."""
        ids = list(ids)
        unknown = [i for i in ids if i not in self._row]
        if unknown:
            shown = ", ".join(f"'{i}'" for i in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
            raise UnlearnError(
                f"{len(unknown)} record ids are not in dataset '{self.name}' ({shown}); "
                f"ids look like '{self.record_ids[0]}'"
            )
        return np.array([self._row[i] for i in ids], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.record_ids)

    @cached_property
    def _row(self) -> dict[str, int]:
        return {record_id: i for i, record_id in enumerate(self.record_ids)}


def image_dataset(
    name: str,
    images: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    classes: Sequence[str],
    record_ids: Sequence[str],
    train: Sequence[bool] | np.ndarray | None = None,
    source: str = "",
) -> ImageDataset:
    """Validate and normalise: images (n, H, W) or (n, C, H, W) uint8; labels integer class
    indices; unique string ids; train split given, or decided from sha256(id) when None."""
    check_name(name)
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise UnlearnError(f"images must be uint8 (0..255), got {images.dtype}; convert them first")
    if images.ndim == 3:
        images = images[:, None]  # one channel
    if images.ndim != 4 or 0 in images.shape:
        raise UnlearnError(f"images must have shape (n, H, W) or (n, C, H, W), got {images.shape}")
    n = len(images)
    classes = tuple(str(c) for c in classes)
    if len(classes) < 2 or len(set(classes)) != len(classes) or not all(classes):
        raise UnlearnError(f"give at least 2 distinct, non-empty class names, got {list(classes)}")
    labels = np.asarray(labels)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise UnlearnError(f"labels must be {n} integer class indices, got {labels.dtype} {labels.shape}")
    if labels.min() < 0 or labels.max() >= len(classes):
        raise UnlearnError(f"labels must lie in 0..{len(classes) - 1} (one per class name)")
    record_ids = tuple(record_ids)
    if len(record_ids) != n or not all(isinstance(i, str) and i for i in record_ids):
        raise UnlearnError(f"give {n} non-empty string record ids, one per image")
    if len(set(record_ids)) != n:
        raise UnlearnError(f"record ids of dataset '{name}' must be unique")
    bad = [i for i in record_ids if i != i.strip() or any(c in i for c in ",\"\n\r")]
    if bad:
        raise UnlearnError(f"record id {bad[0]!r} has a comma, quote, line break or edge space; use plain ids")
    train = _hash_split(record_ids) if train is None else np.asarray(train)
    if train.shape != (n,) or train.dtype != bool:
        raise UnlearnError(f"train must be {n} booleans (True = training image), got {train.dtype} {train.shape}")
    return ImageDataset(
        name=name,
        images=_frozen(np.ascontiguousarray(images)),
        labels=_frozen(labels.astype(np.int64)),
        classes=classes,
        record_ids=record_ids,
        train=_frozen(train.copy()),
        source=source,
    )


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def _in_train(record_id: str) -> bool:
    digest = hashlib.sha256(_SPLIT_SALT + record_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") < int(TRAIN_SHARE * 2**64)


def _hash_split(record_ids: Sequence[str]) -> np.ndarray:
    return np.fromiter((_in_train(i) for i in record_ids), dtype=bool, count=len(record_ids))


# ---------------------------------------------------------------------------------------------
# D -> D'


def correct_images(
    dataset: ImageDataset,
    delete_records: Iterable[str] = (),
    fix_labels: dict[str, str] | None = None,
) -> ImageDataset:
    """D' = (D \\ Z) ∪ Z̃ (science.md §1): drop the deleted images, relabel the fixed ones
    (record id → class name). Forgetting a class is deleting the ids of its images."""
    delete = list(dict.fromkeys(str(i) for i in delete_records))
    fixes = {str(k): str(v) for k, v in (fix_labels or {}).items()}
    dataset.positions([*delete, *fixes])  # raises on unknown ids
    unknown = sorted(set(fixes.values()) - set(dataset.classes))
    if unknown:
        raise UnlearnError(
            f"unknown class names {unknown} in fix_labels; classes of '{dataset.name}' are "
            + ", ".join(f"'{c}'" for c in dataset.classes)
        )
    labels = dataset.labels.copy()
    for record_id, label in fixes.items():
        labels[dataset._row[record_id]] = dataset.classes.index(label)
    keep = np.ones(len(dataset), dtype=bool)
    keep[dataset.positions(delete)] = False
    return image_dataset(
        dataset.name,
        dataset.images[keep],
        labels[keep],
        dataset.classes,
        [i for i, kept in zip(dataset.record_ids, keep) if kept],
        dataset.train[keep],
        dataset.source,
    )


# ---------------------------------------------------------------------------------------------
# Storage


def _npy_bytes(images: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ascontiguousarray(images), version=(1, 0), allow_pickle=False)
    return buffer.getvalue()


def _records_bytes(dataset: ImageDataset) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "label", "split"])
    for record_id, label, train in zip(dataset.record_ids, dataset.labels, dataset.train):
        writer.writerow([record_id, dataset.classes[label], SPLITS[0] if train else SPLITS[1]])
    return buffer.getvalue().encode("utf-8")


def _schema(dataset: ImageDataset, images_sha256: str) -> dict:
    return {
        "kind": "images",
        "format": SCHEMA_VERSION,
        "name": dataset.name,
        "source": dataset.source,
        "classes": list(dataset.classes),
        "shape": list(dataset.images.shape[1:]),
        "n_images": len(dataset),
        "n_train": int(dataset.train.sum()),
        "images_sha256": images_sha256,
    }


def save_images(dataset: ImageDataset, directory: Path) -> None:
    """Write images.npy, records.csv and schema.json into `directory`, replacing the folder as a
    whole (staged in a hidden sibling folder and swapped in with renames, as `save_table`)."""
    check_name(dataset.name)
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(directory, "new")
    try:
        npy = _npy_bytes(dataset.images)
        (staging / IMAGES_FILE).write_bytes(npy)
        (staging / RECORDS_FILE).write_bytes(_records_bytes(dataset))
        schema = _schema(dataset, hashlib.sha256(npy).hexdigest())
        text = json.dumps(schema, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
        (staging / SCHEMA_FILE).write_bytes(text.encode("utf-8"))
        swap_in(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def is_image_dataset(directory: Path) -> bool:
    """True if `directory` holds a stored image dataset (schema.json says "kind": "images")."""
    try:
        schema = json.loads((Path(directory) / SCHEMA_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(schema, dict) and schema.get("kind") == "images"


def load_images(directory: Path) -> ImageDataset:
    directory = Path(directory)
    name = directory.name
    if not (directory / SCHEMA_FILE).is_file():
        raise UnlearnError(f"dataset '{name}' not found in {directory.parent}; run `unlearn data add {name}` first")
    unreadable = UnlearnError(
        f"dataset '{name}' is unreadable or does not match its schema.json; "
        f"run `unlearn data add {name}` again or `dvc checkout`"
    )
    try:
        schema = json.loads((directory / SCHEMA_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise unreadable from None
    if not isinstance(schema, dict) or schema.get("kind") != "images":
        raise UnlearnError(f"dataset '{name}' is not an image dataset; load it with its own loader")
    try:
        npy = (directory / IMAGES_FILE).read_bytes()
        if hashlib.sha256(npy).hexdigest() != schema["images_sha256"]:
            raise unreadable
        images = np.lib.format.read_array(io.BytesIO(npy), allow_pickle=False)
        rows = list(csv.reader(io.StringIO((directory / RECORDS_FILE).read_text(encoding="utf-8"))))
        if not rows or rows[0] != ["id", "label", "split"] or any(len(r) != 3 for r in rows[1:]):
            raise unreadable
        classes, records = list(schema["classes"]), rows[1:]
        dataset = image_dataset(
            schema["name"],
            images,
            np.array([classes.index(label) for _, label, _ in records], dtype=np.int64),
            classes,
            [record_id for record_id, _, _ in records],
            np.array([SPLITS.index(split) == 0 for _, _, split in records], dtype=bool),
            schema["source"],
        )
    except (UnlearnError, OSError, ValueError, KeyError, TypeError, IndexError):
        raise unreadable from None  # a stored dataset that fails validation was altered
    consistent = (
        list(dataset.images.shape[1:]) == schema["shape"]
        and len(dataset) == schema["n_images"]
        and int(dataset.train.sum()) == schema["n_train"]
    )
    if not consistent:
        raise unreadable
    return dataset


# ---------------------------------------------------------------------------------------------
# Built-in: scikit-learn's 8×8 digits

DIGITS_SOURCE = "scikit-learn load_digits (UCI optical digits test set, 8x8, bundled)"


def build_digits() -> ImageDataset:
    """The 1,797 8×8 digit images bundled with scikit-learn (no download), ids `digits:0000` in
    sklearn's order, ~80 % train by id hash. Pixels 0..16 (counts of set pixels in 4×4 blocks)
    are mapped to round(v · 255 / 16), one-to-one, so every image dataset is 0..255."""
    from sklearn.datasets import load_digits  # only this built-in needs it

    bunch = load_digits()
    images = np.rint(bunch.images * (255 / 16)).astype(np.uint8)  # (1797, 8, 8)
    return image_dataset(
        "digits",
        images,
        bunch.target.astype(np.int64),
        [str(d) for d in range(10)],
        [f"digits:{i:04d}" for i in range(len(images))],
        source=DIGITS_SOURCE,
    )


# ---------------------------------------------------------------------------------------------
# Built-in: Fashion-MNIST

FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
# One source string whichever copy was read (all are checked to hold the same bytes), so the
# stored schema.json, and the DVC hash, do not depend on the machine.
FASHION_SOURCE = "Fashion-MNIST (Zalando Research, MIT): official IDX files"
FASHION_PACKAGE_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian: dataset-fashion-mnist
FASHION_URLS = (
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
)
# (file, md5 of the official .gz as published upstream, sha256 of its decompressed IDX bytes).
# A download is checked against the first; the Debian copy (recompressed, so its .gz differs) and
# any cached file against the second.
FASHION_FILES = {
    "train_images": ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                     "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
    "train_labels": ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe",
                     "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
    "test_images": ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79",
                    "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310",
                    "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
}  # fmt: skip
FASHION_SIZES = {"train": 60_000, "test": 10_000}
_FASHION_HELP = (
    "install its offline copy with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), "
    "or allow network access to download it"
)


def parse_idx(raw: bytes) -> np.ndarray:
    """An IDX file (LeCun's MNIST format) of unsigned bytes as an array: 4-byte magic
    0x00 0x00 0x08 ndim, then ndim big-endian uint32 sizes, then the data in C order."""
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08" or raw[3] == 0:
        raise UnlearnError("not an IDX file of unsigned bytes (bad magic number); re-fetch the dataset files")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UnlearnError("IDX file is truncated inside its header; re-fetch the dataset files")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) - header != int(np.prod(shape)):
        raise UnlearnError(
            f"IDX file holds {len(raw) - header} bytes of data, its header promises shape {shape}; "
            "re-fetch the dataset files"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "unlearnflow" / "fashion-mnist"


def _verified_content(gz: bytes, sha256: str) -> bytes | None:
    try:
        raw = gzip.decompress(gz)
    except (OSError, EOFError):
        return None
    return raw if hashlib.sha256(raw).hexdigest() == sha256 else None


def _download(file: str, md5: str) -> bytes:
    for base in FASHION_URLS:
        try:
            gz = urllib.request.urlopen(base + file, timeout=60).read()
        except (urllib.error.URLError, OSError):
            continue
        if hashlib.md5(gz, usedforsecurity=False).hexdigest() == md5:
            return gz
    raise UnlearnError(f"Fashion-MNIST is not available (no valid copy of {file}): {_FASHION_HELP}")


def _fashion_raw(key: str, package_dir: Path, allow_download: bool) -> bytes:
    """Decompressed, verified bytes of one file: from the Debian package, else the download
    cache, else a download (kept in the cache for next time)."""
    file, md5, sha256 = FASHION_FILES[key]
    for folder in (package_dir, _cache_dir()):
        path = folder / file
        if path.is_file():
            raw = _verified_content(path.read_bytes(), sha256)
            if raw is None:
                raise UnlearnError(f"{path} does not match the published Fashion-MNIST file; delete or reinstall it")
            return raw
    if not allow_download:
        raise UnlearnError(f"Fashion-MNIST is not available: {_FASHION_HELP}")
    gz = _download(file, md5)
    raw = _verified_content(gz, sha256)
    if raw is None:
        raise UnlearnError(f"downloaded {file} does not decompress to the published data; retry later")
    _cache_dir().mkdir(parents=True, exist_ok=True)
    (_cache_dir() / file).write_bytes(gz)
    return raw


def build_fashion_mnist(
    n_train: int | None = None,
    n_test: int | None = None,
    name: str = "fashion-mnist",
    package_dir: Path = FASHION_PACKAGE_DIR,
    allow_download: bool = True,
) -> ImageDataset:
    """Zalando's Fashion-MNIST (28×28 grayscale, 10 classes, MIT): the official 60,000 train and
    10,000 test images, or the first n_train / n_test of each file (the files are in a fixed,
    class-mixed order, so a prefix is a deterministic, near-balanced subset whose ids are the same
    as in the full set). Ids `train:00042` / `test:00042` = file and position.

    Source, first found wins: the Debian package `dataset-fashion-mnist` (`package_dir`), a
    previous download in ~/.cache/unlearnflow, a download from the official URLs (checked against
    the published md5). Every copy is checked against the sha256 of the published content.
    """
    sizes = {"train": n_train, "test": n_test}
    for split, n in sizes.items():
        full = FASHION_SIZES[split]
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= full):
            raise UnlearnError(f"n_{split} must be a whole number from 1 to {full}, got {n!r}")
    parts = []
    for split in SPLITS:
        full = FASHION_SIZES[split]
        images = parse_idx(_fashion_raw(f"{split}_images", Path(package_dir), allow_download))
        labels = parse_idx(_fashion_raw(f"{split}_labels", Path(package_dir), allow_download))
        if images.shape != (full, 28, 28) or labels.shape != (full,):
            raise UnlearnError(f"Fashion-MNIST {split} files have unexpected shapes; {_FASHION_HELP}")
        n = sizes[split] or full
        parts.append((split, images[:n], labels[:n]))
    return image_dataset(
        name,
        np.concatenate([images for _, images, _ in parts]),
        np.concatenate([labels for _, _, labels in parts]).astype(np.int64),
        FASHION_CLASSES,
        [f"{split}:{i:05d}" for split, images, _ in parts for i in range(len(images))],
        np.concatenate([np.full(len(images), split == "train") for split, images, _ in parts]),
        source=FASHION_SOURCE,
    )
