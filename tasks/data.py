"""Dataset tasks: validate a dataset, write it under data/NAME and version it with DVC.

The readers of text, image and built-in data are imported where they are used: loading a table
must not load the text or image stacks (tasks.formats)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from typing import TYPE_CHECKING

from tasks.dvc import DATA_DIR, add_data, ensure_repo
from tasks.formats import format_of, format_of_dataset_folder
from unlearning.tabular.files import read_table_file, table_from_frame
from unlearning.errors import UnlearnError
from unlearning.storage import check_name, check_new_name, remove_stale_staging

if TYPE_CHECKING:
    from unlearning.images.data import ImageDataset
    from unlearning.tabular.data import Table
    from unlearning.text.data import TextCorpus

    Dataset = Table | TextCorpus | ImageDataset


def add_dataset(
    root: Path,
    name: str,
    file: Path | None = None,
    target: str | None = None,
    id_column: str | None = None,
    replace: bool = False,
    text_column: str | None = None,
    images: Path | None = None,
    size: int | None = None,
    admit: Callable[[Path, Dataset], None] | None = None,
) -> tuple[Dataset, str]:
    """Build or read dataset `name`, store it as data/NAME and `dvc add` it. `images` is a folder
    of PNG/JPEG files, one sub-folder per class, converted to `size` × `size` grey images
    (unlearning/images/files.py says how); an .npz `file` holds arrays x, y and ids.

    A file is a text corpus when `text_column` is given or it is .txt/.jsonl (records and ids:
    `unlearning.text.files`), else a table with the `target` column.
    Returns the table and the new data version (md5 of data/). Nothing is written unless the
    dataset is valid. An existing, different data/NAME is only overwritten with `replace`:
    after an erasure, re-adding the source would bring the erased records back. `admit(root,
    dataset)` raises UnlearnError for a dataset that must not be written, before anything is: `unlearn
    data add` passes tasks.erased.refuse_erased, which reads the ledger (that module cannot be
    imported here: the ledger imports this one's readers).
    """
    root = Path(root)
    check_new_name(name, exists=stored(root, name))
    remove_stale_staging(root / DATA_DIR)
    table = _build_table(name, file, target, id_column, text_column, images, size)
    format_of(table).check_dataset(table)
    if not replace:
        _refuse_overwrite(root, table)
    if admit is not None:
        admit(root, table)
    ensure_repo(root)
    save_dataset(table, dataset_dir(root, name))
    return table, add_data(root)


def save_dataset(dataset: Dataset, directory: Path) -> None:
    format_of(dataset).save_dataset(dataset, directory)


def _build_table(
    name: str, file: Path | None, target: str | None, id_column: str | None, text_column: str | None = None,
    images: Path | None = None, size: int | None = None,
) -> Dataset:
    if images is not None or size is not None or (file is not None and Path(file).suffix.lower() == ".npz"):
        if text_column is not None:
            raise UnlearnError("--text-column names the text column of a text file; images have none: drop it")
        return _user_images(name, file, target, id_column, images, size)
    if file is None:
        if text_column is not None:
            raise UnlearnError("--text-column names a column of your own file: give it with --file")
        return _builtin_table(name, target, id_column)
    check_name(name)
    from unlearning.text.files import is_text_input, read_text_corpus

    if is_text_input(Path(file), target, text_column):
        return read_text_corpus(name, Path(file), text_column, id_column)
    if target is None:
        raise UnlearnError("--target is required with --file: name the label column")
    frame = read_table_file(Path(file))
    return table_from_frame(name, frame, target, id_column=id_column, source=Path(file).name)


def _user_images(
    name: str, file: Path | None, target: str | None, id_column: str | None, images: Path | None, size: int | None
) -> ImageDataset:
    check_name(name)
    if target is not None or id_column is not None:
        raise UnlearnError("images carry their own labels and ids (class folders and paths, or the arrays y and "
                           "ids of an .npz file); drop --target/--id")
    if images is not None and file is not None:
        raise UnlearnError("give either --images DIR or --file X.npz, not both")
    if images is None and size is not None:
        raise UnlearnError("--size applies to an image folder (--images DIR); the arrays of an .npz file "
                           "are taken at their own size")
    from unlearning.images.files import read_image_folder, read_image_npz

    if images is not None:
        return read_image_folder(name, Path(images), size)
    return read_image_npz(name, Path(file))


def _builtin_table(name: str, target: str | None, id_column: str | None) -> Dataset:
    from unlearning.builtin import BUILTIN

    if name not in BUILTIN:
        raise UnlearnError(
            f"no built-in dataset '{name}' (built-ins: {', '.join(sorted(BUILTIN))}); "
            "give your own data with --file PATH --target COLUMN, or images with --images DIR"
        )
    if target is not None or id_column is not None:
        raise UnlearnError(
            f"'{name}' is a built-in dataset with a fixed target and ids; drop --target/--id, "
            "or use --file to add your own data"
        )
    return BUILTIN[name]()


def _refuse_overwrite(root: Path, table: Dataset) -> None:
    directory = dataset_dir(root, table.name)
    if not directory.exists():
        return
    stored = load_dataset(root, table.name)
    same = type(stored) is type(table) and format_of(table).same_dataset(stored, table)
    if not same:
        raise UnlearnError(
            f"data/{table.name} already exists with different content (an erasure may have removed "
            f"records from it); pass --replace to overwrite it, which re-ingests everything in the source")


def stored(root: Path, name) -> bool:
    """Whether data/NAME is there, for a name safe to look up (check_name's rule; any other: no)."""
    try:
        check_name(name)
    except UnlearnError:
        return False
    return dataset_dir(root, name).is_dir()


def dataset_dir(root: Path, name: str) -> Path:
    return Path(root) / DATA_DIR / name


def load_dataset(root: Path, name: str) -> Dataset:
    check_name(name)
    remove_stale_staging(Path(root) / DATA_DIR)  # left by a killed writer; an old table is put back
    directory = dataset_dir(root, name)
    return format_of_dataset_folder(directory).load_dataset(directory)
