"""Users' own images as an `ImageDataset`: a folder of PNG/JPEG files, one sub-folder per class, or
an .npz file of arrays. Everything is checked before anything is returned; a problem is one
`UnlearnError` naming the file and what to do.

A folder (`read_image_folder`):

    DIR/cat/0001.png        class = the first-level folder, record id = the path relative to DIR
    DIR/cat/2024/0002.jpg   (POSIX separators); deeper folders belong to their first-level class
    DIR/dog/a.jpeg          classes in sorted order of their names, records sorted by id

Conversion rule, the same for every file, to the input of the CNN presets (one grey channel,
square, `size` × `size`, default 28 as Fashion-MNIST and the `small` preset):
1. EXIF orientation applied (a photo taken upright stays upright);
2. transparency flattened onto white (how viewers show it), then grey levels by ITU-R 601-2 luma,
   L = 0.299 R + 0.587 G + 0.114 B (Pillow's "L"); 16-bit greys scaled to 8 bits (÷ 257);
3. the largest centred square kept (centre crop: nothing is squeezed and no border is added; the
   cut is on the longer side), then resized to `size` × `size` with Pillow's antialiased bilinear
   filter (JPEG files are first decoded at the smallest scale that is still ≥ `size`, which makes
   large photos cheap to read).

The train/test split is the one of every dataset without an official split: about 80 % train by a
salted sha256 of the record id (`unlearning.images.data`), so it is reproducible, independent of
the order files are listed in, and deleting an image never moves another one between the two.

Refused, naming the file: a file that is not .png/.jpg/.jpeg (hidden files, names starting with
".", are skipped), one that does not decode as PNG/JPEG (truncated, corrupt, another format under
that name), one wider or taller than its header may promise (`MAX_DECODE_PIXELS`, against
decompression bombs) or larger than `MAX_FILE_BYTES`, a file directly in DIR (outside a class), a
path that cannot be a record id (comma, quote, line break, edge space, not UTF-8). Refused as a
whole: no images, one class, a class without images or without a training image, no test image,
more than `MAX_IMAGES` files, more than `MAX_PIXELS_TOTAL` pixels after resizing.

An .npz file (`read_image_npz`): arrays `x` (uint8 pixels, (n, H, W), (n, 1, H, W), (n, H, W, 1),
or RGB as (n, 3, H, W) / (n, H, W, 3), converted with the same luma), `y` (n integer labels or
strings; class names are the sorted distinct values as text) and optionally `ids` (n unique
strings or integers; default "0".."n-1"). Taken at their own size (the CNN pools globally); no
other arrays, no pickled objects, sizes bounded as above.
"""

from __future__ import annotations

import unicodedata
import warnings
import zipfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from unlearning.errors import UnlearnError
from unlearning.images.data import ImageDataset, image_dataset
from unlearning.storage import is_os_litter

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
FORMATS = ("JPEG", "PNG")  # a camera's MPO (multi-picture JPEG) opens as JPEG
DEFAULT_SIZE = 28  # Fashion-MNIST's side, which the `small` CNN preset was tuned on
MIN_SIZE, MAX_SIZE = 8, 128
MAX_IMAGES = 100_000
MAX_FILE_BYTES = 64 * 2**20
MAX_DECODE_PIXELS = 50_000_000  # an 8K photo is 33 M; a decompression bomb promises far more
MAX_PIXELS_TOTAL = 2**29  # 512 MiB of uint8 pixels after resizing
MIN_TRAIN_IMAGES = 10  # as tables' MIN_TRAIN_ROWS: fewer cannot train and be evaluated
_BAD_ID_CHARS = ",\"\n\r"
_WHITE = (255, 255, 255, 255)


# ---------------------------------------------------------------------------------------------
# A folder of PNG/JPEG files


def read_image_folder(name: str, directory: Path, size: int | None = None) -> ImageDataset:
    """The images under `directory`, one first-level folder per class, converted by the module's
    rule to (n, 1, size, size) uint8; ids = POSIX paths relative to `directory`."""
    directory, size = Path(directory), DEFAULT_SIZE if size is None else size
    check_size(size)
    if not directory.is_dir():
        what = "is a file, not a folder (an .npz goes with --file)" if directory.exists() else "not found"
        raise UnlearnError(f"image folder '{directory}' {what}; give a folder with one sub-folder of "
                           f"PNG/JPEG files per class with --images")
    files = image_files(directory)
    check_total(len(files), size)
    classes = sorted({relative.split("/", 1)[0] for relative in files})
    check_classes(classes, directory)
    pixels = np.empty((len(files), size, size), dtype=np.uint8)
    for i, (relative, path) in enumerate(files.items()):
        pixels[i] = decode_square(path, relative, size)
    labels = np.array([classes.index(relative.split("/", 1)[0]) for relative in files], dtype=np.int64)
    source = (f"image folder '{directory.name}': PNG/JPEG, grey (ITU-R 601-2 luma, transparency on white), "
              f"centre square, {size}x{size} bilinear")
    return checked_for_training(image_dataset(name, pixels, labels, classes, list(files), source=source))


def check_size(size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
        raise UnlearnError(f"--size must be a whole number of pixels from {MIN_SIZE} to {MAX_SIZE}, got {size!r}")


def image_files(directory: Path) -> dict[str, Path]:
    """{record id: path} of every image file under the class folders, sorted by id; refuses any
    other file (hidden ones and OS litter such as Thumbs.db skipped) before a single image is decoded."""
    files: dict[str, Path] = {}
    for path in directory.rglob("*"):  # counted as listed: a huge tree is refused before sorting
        relative = path.relative_to(directory)
        if any(part.startswith(".") or is_os_litter(part) for part in relative.parts):
            continue
        record_id = relative.as_posix()
        if path.is_dir():
            if path.is_symlink():  # rglob does not enter it: its images (a whole class) were left out unsaid
                raise UnlearnError(f"'{record_id}' in {directory.name}/ is a link to a folder, whose images are not "
                                   f"read; put the folder itself there (links to image files are read)")
            continue
        if len(relative.parts) == 1:
            raise UnlearnError(f"'{record_id}' lies directly in {directory.name}/, outside any class folder; "
                               f"move it into the folder of its class or remove it")
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            raise UnlearnError(f"'{record_id}' is not a PNG or JPEG file; only .png, .jpg and .jpeg files may "
                               f"lie in the class folders: move or remove it")
        check_record_id(record_id)
        files[record_id] = path
        if len(files) > MAX_IMAGES:
            raise UnlearnError(f"{directory.name}/ holds more than {MAX_IMAGES} image files; add a sample "
                               f"of them, or split them into several datasets")
    if not files:
        raise UnlearnError(f"no PNG or JPEG images in {directory.name}/; put each class's images in a "
                           f"sub-folder named after the class (e.g. {directory.name}/cat/0001.png)")
    files = dict(sorted(files.items()))
    # without the suffix, which the e-mail detector reads as a top-level domain it does not take (x@y.png)
    from unlearning.detect.scan import refuse_personal_ids

    refuse_personal_ids((record_id.rsplit(".", 1)[0] for record_id in files),
                        lambda row, detector: f"the path of image {row} of {directory.name}/ (in sorted order) "
                                              f"holds personal data ({detector})",
                        "rename the file or its folders (e.g. to numbers)")
    return files


def check_record_id(record_id: str) -> None:
    """A path becomes a record id: it must survive records.csv and requests unchanged."""
    try:
        record_id.encode("utf-8")
    except UnicodeEncodeError:
        raise UnlearnError(f"the name of {record_id.encode('utf-8', 'replace').decode()!r} is not valid "
                           f"UTF-8; rename it") from None
    if any(c in record_id for c in _BAD_ID_CHARS) or any(p != p.strip() for p in record_id.split("/")) \
            or any(unicodedata.category(c) == "Cc" for c in record_id):
        raise UnlearnError(f"'{record_id}' cannot be a record id (its path has a comma, quote, control "
                           f"character or a name with edge spaces); rename it")


def check_total(n: int, size: int) -> None:
    if n * size * size > MAX_PIXELS_TOTAL:
        raise UnlearnError(f"{n} images of {size}x{size} pixels exceed {MAX_PIXELS_TOTAL // 2**20} MiB; "
                           f"add fewer images or give a smaller --size")


def check_classes(classes: Sequence[str], directory: Path) -> None:
    if len(classes) < 2:
        raise UnlearnError(f"{directory.name}/ has one class ('{classes[0]}'); a classifier needs at least "
                           f"two class folders")


def decode_square(path: Path, record_id: str, size: int) -> np.ndarray:
    """One file by the module's rule: (size, size) uint8."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    bomb = UnlearnError(f"'{record_id}' declares more than {MAX_DECODE_PIXELS // 10**6} million pixels; "
                        f"shrink it or remove it")
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise UnlearnError(f"'{record_id}' is larger than {MAX_FILE_BYTES // 2**20} MiB; shrink it or remove it")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. corrupt EXIF: the console gets one line, ours
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=FORMATS) as image:
                width, height = image.size  # from the header: nothing decoded yet
                if width * height > MAX_DECODE_PIXELS:
                    raise bomb
                if image.format in ("JPEG", "MPO"):
                    image.draft("L", (size, size))  # DCT scaling: decodes at ≥ size, not full resolution
                image.load()
                grey = grey_levels(ImageOps.exif_transpose(image))
    except UnlearnError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise bomb from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, ZeroDivisionError):
        # Pillow's messages name the absolute path: say it with the record id
        raise UnlearnError(f"'{record_id}' is not a readable PNG or JPEG image (corrupt, truncated or "
                           f"another format); re-export or remove it") from None
    return centre_square(grey, size)


def grey_levels(image):
    """A Pillow image in mode "L": 16-bit greys ÷ 257; alpha composited onto white; then luma."""
    from PIL import Image

    if image.mode.startswith("I"):  # 16-bit grey PNG ("I;16", or "I" in some Pillow versions)
        wide = np.asarray(image, dtype=np.int64)
        return Image.fromarray(np.clip(np.rint(wide / 257), 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        image = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", image.size, _WHITE), image).convert("L")
    return image.convert("RGB").convert("L") if image.mode == "CMYK" else image.convert("L")


def centre_square(image, size: int) -> np.ndarray:
    from PIL import Image

    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    square = image.crop((left, top, left + side, top + side))
    return np.asarray(square.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def checked_for_training(dataset: ImageDataset) -> ImageDataset:
    """Refuse a dataset a CNN cannot be trained and evaluated on (as tables' check_trainable)."""
    n_train = int(dataset.train.sum())
    if n_train < MIN_TRAIN_IMAGES or n_train == len(dataset):
        raise UnlearnError(f"'{dataset.name}' is too small to train and evaluate: {n_train} training and "
                           f"{len(dataset) - n_train} held-out images (need ≥ {MIN_TRAIN_IMAGES} and ≥ 1); "
                           f"add more images")
    trained = set(dataset.labels[dataset.train].tolist())
    absent = [c for i, c in enumerate(dataset.classes) if i not in trained]  # classes come from the images
    if absent:
        raise UnlearnError(f"class '{absent[0]}' of '{dataset.name}' has only held-out images (the split is "
                           f"~80 % train by a hash of each id); add more images of it")
    return dataset


# ---------------------------------------------------------------------------------------------
# An .npz file of arrays

NPZ_ARRAYS = ("x", "y", "ids")


def read_image_npz(name: str, path: Path) -> ImageDataset:
    """Arrays x, y (and ids) of an .npz file, checked as the module docstring says."""
    path = Path(path)
    if not path.is_file():
        if path.exists():  # a folder or a pipe (whose read would block): not "not found"
            raise UnlearnError(f"data file '{path}' is not a regular file (a folder, a device or a pipe); give "
                               f"the file itself with --file")
        raise UnlearnError(f"data file '{path}' not found; check the path given with --file")
    arrays = npz_arrays(path)
    x = grey_array(arrays["x"], path.name)
    n = len(x)
    if n > MAX_IMAGES:
        raise UnlearnError(f"{path.name} holds {n} images, more than {MAX_IMAGES}; add a sample of them")
    labels, classes = npz_labels(arrays["y"], n, path.name)
    ids = npz_ids(arrays.get("ids"), n, path.name)
    dataset = image_dataset(name, x, labels, classes, ids, source=f"{path.name}: arrays x, y"
                            + (", ids" if "ids" in arrays else ""))
    return checked_for_training(dataset)


def npz_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays, after checking the archive's declared sizes (a zip bomb is refused unread)."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = {info.filename: info.file_size for info in archive.infolist()}
    except (zipfile.BadZipFile, OSError, ValueError):
        raise UnlearnError(f"cannot read '{path.name}' as .npz (not a zip of .npy arrays); save it with "
                           f"numpy.savez(path, x=..., y=...)") from None
    names = {m.removesuffix(".npy") for m in members}
    unknown, missing = sorted(names - set(NPZ_ARRAYS)), [a for a in ("x", "y") if a not in names]
    if unknown or missing:
        raise UnlearnError(f"{path.name} holds arrays {sorted(names)}; give exactly 'x' and 'y', and optionally "
                           f"'ids'" + (f" (unexpected: {', '.join(unknown)})" if unknown else ""))
    if sum(members.values()) > MAX_PIXELS_TOTAL + 2**26:
        raise UnlearnError(f"{path.name} unpacks to more than {MAX_PIXELS_TOTAL // 2**20} MiB; give fewer "
                           f"or smaller images")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except ValueError as exc:
        pickled = "allow_pickle" in str(exc) or "Object arrays" in str(exc)
        raise UnlearnError(f"cannot read '{path.name}': " + ("an array holds Python objects; save plain "
                           "numbers and strings (e.g. ids as np.array(ids, dtype=str))" if pickled else
                           "an array is not valid .npy data")) from None
    except (OSError, EOFError, zipfile.BadZipFile):
        raise UnlearnError(f"cannot read '{path.name}': an array is truncated or corrupt") from None


def grey_array(x: np.ndarray, file: str) -> np.ndarray:
    """x as (n, H, W) uint8: one channel kept, three (RGB) converted by ITU-R 601-2 luma."""
    if x.dtype != np.uint8:
        raise UnlearnError(f"x in {file} is {x.dtype}; give uint8 pixels 0..255 (e.g. "
                           f"(x * 255).round().astype(np.uint8) for floats in [0, 1])")
    if x.ndim == 4 and x.shape[1] in (1, 3):
        x = np.moveaxis(x, 1, -1)  # (n, C, H, W) → (n, H, W, C)
    if x.ndim == 4 and x.shape[-1] in (1, 3):
        x = x[..., 0] if x.shape[-1] == 1 else np.rint(x @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
    if x.ndim != 3 or 0 in x.shape:
        raise UnlearnError(f"x in {file} has shape {x.shape}; give (n, H, W) grey or (n, H, W, 3) RGB images")
    if not (MIN_SIZE <= min(x.shape[1:]) and max(x.shape[1:]) <= MAX_SIZE):
        raise UnlearnError(f"images in {file} are {x.shape[2]}x{x.shape[1]}; give sides from {MIN_SIZE} to "
                           f"{MAX_SIZE} pixels")
    return x


def npz_labels(y: np.ndarray, n: int, file: str) -> tuple[np.ndarray, list[str]]:
    """(labels as indices, class names): the sorted distinct values of y, as text."""
    if y.shape != (n,):
        raise UnlearnError(f"y in {file} has shape {y.shape} but x holds {n} images; give one label per image")
    if not (np.issubdtype(y.dtype, np.integer) or y.dtype.kind == "U") or y.dtype == np.bool_:
        raise UnlearnError(f"y in {file} is {y.dtype}; give integer labels or class names as strings")
    values, labels = np.unique(y, return_inverse=True)
    classes = [str(v) for v in values.tolist()]
    from unlearning.detect.scan import refuse_personal_ids

    refuse_personal_ids(classes, lambda row, detector: f"class {row} of y in {file} (in sorted order) holds personal "
                                                       f"data ({detector})",  # before the message that quotes one
                        "name the classes by something that is not personal data (e.g. numbers)",
                        kept="class names are kept in every model version and in MLflow")
    if len(classes) < 2:
        raise UnlearnError(f"y in {file} has one class ({classes[0]!r}); a classifier needs at least two")
    if any(not c or c != c.strip() for c in classes):
        raise UnlearnError(f"y in {file} has an empty class name or one with edge spaces; name every class")
    if any(unicodedata.category(ch) == "Cc" for c in classes for ch in c):
        # records.csv is read back as text with universal newlines: a "\r" came back as "\n", and the
        # stored dataset was unreadable for every later command (as a folder's class names, via ids)
        raise UnlearnError(f"y in {file} has a class name with a line break, tab or another control character; "
                           f"name every class in plain text")
    return labels.astype(np.int64), classes


def npz_ids(ids: np.ndarray | None, n: int, file: str) -> list[str]:
    if ids is None:
        return [str(i) for i in range(n)]
    if ids.shape != (n,) or not (np.issubdtype(ids.dtype, np.integer) or ids.dtype.kind == "U"):
        raise UnlearnError(f"ids in {file} must be {n} strings or integers (one per image), got {ids.dtype} "
                           f"{ids.shape}")
    ids = [str(i) for i in ids.tolist()]
    from unlearning.detect.scan import refuse_personal_ids

    refuse_personal_ids(ids, lambda row, detector: f"id {row} of the array ids in {file} holds personal data "
                                                   f"({detector})",  # before the messages that quote an id
                        "give surrogate ids (e.g. numbers), or leave out the array ids to have ids 0..n-1")
    repeated = [i for i, count in Counter(ids).items() if count > 1]
    if repeated:
        duplicate = repeated[0]
        raise UnlearnError(f"ids in {file} repeat '{duplicate}'; every image needs its own id")
    for record_id in ids:
        if not record_id or any(c in record_id for c in _BAD_ID_CHARS) or record_id != record_id.strip():
            raise UnlearnError(f"id {record_id!r} in {file} is empty or has a comma, quote, line break or edge "
                               f"space; use plain ids")
    return ids
