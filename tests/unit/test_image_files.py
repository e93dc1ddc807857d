"""Users' image folders and .npz files (unlearning/images/files.py): the conversion rule checked
pixel by pixel on images whose answer is known by construction, ids, classes and the split."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.image_folders import CLASSES, write_image_folder
from unlearning.errors import UnlearnError
from unlearning.images.data import _in_train
from unlearning.images.files import DEFAULT_SIZE, decode_square, read_image_folder, read_image_npz


def decoded(tmp_path: Path, image: Image.Image, size: int, fmt: str = "PNG", **save) -> np.ndarray:
    path = tmp_path / f"x.{fmt.lower()}"
    image.save(path, format=fmt, **save)
    return decode_square(path, "c/x", size)


def test_the_centred_square_is_kept_of_a_wide_and_a_tall_image(tmp_path):
    wide = np.zeros((10, 30), np.uint8)
    wide[:, 10:20] = 255  # only the centred 10×10 square is white
    assert (decoded(tmp_path, Image.fromarray(wide), 10) == 255).all()
    assert (decoded(tmp_path, Image.fromarray(np.ascontiguousarray(wide.T)), 10) == 255).all()


def test_grey_is_itu_601_luma_and_transparency_lies_on_white(tmp_path):
    red = Image.new("RGB", (8, 8), (255, 0, 0))
    assert (decoded(tmp_path, red, 8) == 76).all()  # 0.299 · 255 = 76.2
    clear = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    assert (decoded(tmp_path, clear, 8) == 255).all()
    half = Image.new("RGBA", (8, 8), (0, 0, 0, 128))  # black at 50 % over white
    assert np.abs(decoded(tmp_path, half, 8).astype(int) - 127).max() <= 1


def test_sixteen_bit_greys_are_divided_by_257(tmp_path):
    wide = np.array([[0, 257 * 100, 65535, 65535]] * 4, dtype=np.uint16)
    assert decoded(tmp_path, Image.fromarray(wide), 4)[0].tolist() == [0, 100, 255, 255]


def test_exif_orientation_is_applied(tmp_path):
    """Orientation 6: the stored pixels must turn 90° clockwise to stand upright, so the stored
    left half (black) becomes the top half."""
    stored = np.zeros((32, 64), np.uint8)
    stored[:, 32:] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    grey = decoded(tmp_path, Image.fromarray(stored), 16, "JPEG", exif=exif, quality=95)
    assert grey[:6].mean() < 40 and grey[-6:].mean() > 215


def test_a_large_jpeg_photo_is_reduced_to_the_size(tmp_path):
    """Read through JPEG draft mode (decoded at 1/8 scale, still ≥ the size) then resized."""
    top_dark = np.full((3000, 4000), 200, np.uint8)
    top_dark[:1500] = 40
    path = tmp_path / "photo.jpg"
    Image.fromarray(top_dark).convert("RGB").save(path, quality=90)
    grey = decode_square(path, "c/photo.jpg", DEFAULT_SIZE)
    half = DEFAULT_SIZE // 2
    assert grey.shape == (DEFAULT_SIZE, DEFAULT_SIZE)
    assert np.abs(grey[: half - 1].astype(int) - 40).max() <= 3 and np.abs(grey[half + 1 :].astype(int) - 200).max() <= 3


def test_ids_classes_and_split_of_a_folder(tmp_path):
    folder = write_image_folder(tmp_path / "shapes", per_class=6)
    (folder / "disc" / "2024").mkdir()
    Image.new("L", (20, 30), 200).save(folder / "disc" / "2024" / "late.PNG")
    (folder / "disc" / ".DS_Store").write_bytes(b"\0")
    (folder / "disc" / "Thumbs.db").write_bytes(b"\0")  # Explorer's thumbnails: refused as not an image before
    (folder / "desktop.ini").write_text("[.ShellClassInfo]\n")
    dataset = read_image_folder("shapes", folder, 12)
    assert dataset.classes == CLASSES and dataset.images.shape == (19, 1, 12, 12)
    assert list(dataset.record_ids) == sorted(dataset.record_ids) and "disc/2024/late.PNG" in dataset.record_ids
    assert dataset.labels[dataset.record_ids.index("disc/2024/late.PNG")] == CLASSES.index("disc")
    assert dataset.train.tolist() == [_in_train(i) for i in dataset.record_ids]
    assert read_image_folder("shapes", folder, 12).images.tobytes() == dataset.images.tobytes()


def test_a_class_folder_that_is_a_link_is_refused_not_left_out(tmp_path):
    """A dataset assembled with links to class folders lost those classes unsaid (rglob does not enter
    a linked folder): two of three classes were trained on. Links to files are read."""
    folder = write_image_folder(tmp_path / "shapes", per_class=20)
    (folder / CLASSES[2]).symlink_to((folder / CLASSES[2]).rename(tmp_path / "kept-elsewhere"))
    with pytest.raises(UnlearnError, match=f"'{CLASSES[2]}' in shapes/ is a link to a folder"):
        read_image_folder("shapes", folder, 12)
    (folder / CLASSES[2]).unlink()
    (folder / CLASSES[2]).mkdir()
    for image in sorted((tmp_path / "kept-elsewhere").iterdir()):
        (folder / CLASSES[2] / image.name).symlink_to(image)
    assert read_image_folder("shapes", folder, 12).classes == CLASSES


def test_npz_layouts_labels_and_ids(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(30, 3, 9, 11), dtype=np.uint8)  # RGB, channels first
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=np.array([7, 3, 5] * 10), ids=np.arange(100, 130))
    (tmp_path / "a.npz").write_bytes(buffer.getvalue())
    dataset = read_image_npz("a", tmp_path / "a.npz")
    assert dataset.classes == ("3", "5", "7") and dataset.labels[:3].tolist() == [2, 0, 1]
    assert dataset.record_ids[:2] == ("100", "101") and dataset.images.shape == (30, 1, 9, 11)
    luma = np.rint(np.tensordot([0.299, 0.587, 0.114], x.astype(float), axes=(0, 1)))
    assert np.array_equal(dataset.images[:, 0], luma)

    np.savez(tmp_path / "b.npz", x=x[:, :1], y=np.array(["b", "a"] * 15))  # one channel, no ids
    grey = read_image_npz("b", tmp_path / "b.npz")
    assert grey.record_ids[:3] == ("0", "1", "2") and np.array_equal(grey.images, x[:, :1])
    assert grey.classes == ("a", "b") and grey.labels[:2].tolist() == [1, 0]


@pytest.mark.parametrize("size", [7, 129, True, 16.0])
def test_size_out_of_range_is_refused(tmp_path, size):
    from unlearning.errors import UnlearnError

    with pytest.raises(UnlearnError, match="--size must be a whole number"):
        read_image_folder("x", tmp_path, size)


def test_a_personal_path_in_a_folder_named_with_braces_is_refused_in_one_line(tmp_path):
    """The message named the folder inside a format string: a folder `sh{ap}es` raised KeyError."""
    folder = tmp_path / "sh{ap}es"
    write_image_folder(folder)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / CLASSES[0] / "maud.oakes@example.org.png")
    with pytest.raises(UnlearnError, match=r"of sh\{ap\}es/ \(in sorted order\) holds personal data \(email\)") as e:
        read_image_folder("shapes", folder, 8)
    assert "maud" not in str(e.value)
