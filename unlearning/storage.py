"""Dataset folders under data/: allowed names, and writes that a killed process cannot leave half
done (a hidden staging folder swapped in by rename; stale ones cleaned up by the next command).
Shared by every kind of dataset (tables, text corpora, image sets)."""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import tempfile
from pathlib import Path

from unlearning.errors import UnlearnError
from unlearning.processes import process_alive

_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")


MAX_NAME = 64  # a dataset's folder and its staging siblings (.NAME.new-<pid>-…) stay far below a file name's 255 bytes


_MODEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_new_model_name(name: str, exists: bool = False) -> None:
    """A registered model's name where one is made (`train --model`, `model import NAME`): the rule of
    check_model_name, and, for a model that does not `exist` yet, not a name the detectors flag
    (refuse_personal_name; one named so before that rule can still be trained again, as erasures ask)."""
    check_model_name(name)
    if not exists:
        refuse_personal_name(name, "model", "MLflow's registry")


def check_model_name(name: str) -> None:
    """A model's name where one enters (also a request's `model:`): it names MLflow's registered model
    and the model's folders under .unlearn/ (escrow, state), so letters, digits, '.', '_', '-', at
    most MAX_NAME characters (MLflow refused '/' and '..' only when the model was registered, with a
    traceback after the run was recorded; any length was accepted)."""
    if not isinstance(name, str) or len(name) > MAX_NAME or not _MODEL_RE.fullmatch(name):
        shown = name if isinstance(name, str) and len(name) <= MAX_NAME else f"of {len(str(name))} characters"
        raise UnlearnError(f"model name {shown!r} is not allowed; use letters, digits, '.', '_' and '-', starting "
                           f"with a letter or digit, at most {MAX_NAME} characters")


def check_new_name(name: str, exists: bool = False) -> None:
    """check_name, and at most MAX_NAME characters: for a dataset being added. The length is checked
    here only, where a name enters: a longer name added before the limit still loads and saves. A
    name the detectors flag is refused for a dataset that does not `exist` yet (one named so before
    that rule can still be replaced, as erasures ask)."""
    if isinstance(name, str) and len(name) > MAX_NAME:
        raise UnlearnError(f"a dataset name of {len(name)} characters is too long; use at most {MAX_NAME}")
    check_name(name)
    if not exists:
        refuse_personal_name(name, "dataset", "data/, MLflow")


def refuse_personal_name(name: str, what: str, where: str) -> None:
    """A new name the detectors take for personal data or a secret (`train --model AKIA…`, `data add
    4111111111111111`) is refused: names are kept whole in `where`, certificates and the append-only
    ledger, for good. The message quotes it masked, as every UnlearnError does."""
    from unlearning.detect.scan import find_matches  # here: only a name being added needs the detectors

    found = find_matches(name)
    if found:
        raise UnlearnError(f"{what} name {name!r} holds personal data or a secret ({found[0].detector}): a {what}'s "
                           f"name is kept whole in {where}, certificates and the ledger; choose another name")


def check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise UnlearnError(
            f"dataset name {name!r} is not allowed; use lower-case letters, digits, '_' and '-', "
            "starting with a letter or digit"
        )


# What file managers, thumbnailers and office suites leave beside a user's files, by name (gitignore
# patterns: DVC's .dvcignore takes them as they are). A Finder window opened on data/ is not a change to
# the data: without these, its .DS_Store made the data "differ from its DVC version" and training refuse.
OS_LITTER = (
    ".DS_Store", "._*", ".AppleDouble", ".Spotlight-V100", ".Trashes", ".fseventsd", ".TemporaryItems",  # macOS
    "Thumbs.db", "ehthumbs.db", "[Dd]esktop.ini", "$RECYCLE.BIN",  # Windows
    ".directory", ".Trash-*",  # Linux desktops
    ".~lock.*#",  # LibreOffice, while a table is open in it
)


def is_os_litter(name: str) -> bool:
    """Whether a file or folder named `name` is OS litter (OS_LITTER), not part of a dataset."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in OS_LITTER)


def staging_dir(directory: Path, kind: str) -> Path:
    """A hidden sibling `.NAME.<kind>-<pid>-*` of `directory` (kind `new`: being written; `old`:
    being retired). The pid tells a later command whether its writer is still running."""
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.{kind}-{os.getpid()}-", dir=directory.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the data folder is not
    return staging


def swap_in(staging: Path, directory: Path) -> None:
    if not directory.exists():
        os.replace(staging, directory)
        return
    retired = staging_dir(directory, "old")
    os.replace(directory, retired / "table")
    os.replace(staging, directory)
    shutil.rmtree(retired, ignore_errors=True)


_STAGING_RE = re.compile(r"\.(?P<name>[a-z0-9][a-z0-9_-]*)\.(?P<kind>new|old)-(?:(?P<pid>\d+)-)?.*")
_LEGACY_STALE_SECONDS = 3600  # staging folders named without a pid (older versions): age decides


def remove_stale_staging(data_dir: Path) -> list[str]:
    """Remove the staging folders of writers that are gone (killed, crashed, out of disk);
    a dataset folder missing because its writer died between the two renames of `swap_in` is
    put back from its `.old-` folder (the version data.dvc still records). Returns the names
    removed."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        return []
    removed = []
    for entry in sorted(data_dir.iterdir()):
        match = _STAGING_RE.fullmatch(entry.name)
        if match is None or not entry.is_dir() or _writer_alive(entry, match["pid"]):
            continue
        dataset = data_dir / match["name"]
        if match["kind"] == "old" and not dataset.exists() and (entry / "table").is_dir():
            os.replace(entry / "table", dataset)
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry.name)
    return removed


def _writer_alive(entry: Path, pid: str | None) -> bool:
    if pid is None:
        import time

        return time.time() - entry.stat().st_mtime < _LEGACY_STALE_SECONDS
    return int(pid) == os.getpid() or process_alive(int(pid))
