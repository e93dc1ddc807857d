"""Scanning datasets and files for secrets and personal data (the leak-detection stage).

Findings leave this module as dicts with the detector, a location, a masked form and a salted
fingerprint — never the raw value. The salt is the project's own secret (`UNLEARN_SALT`, else
`.unlearn/salt`, 0600: unlearning.compliance.signing.project_salt), so fingerprints cannot be
brute-forced by someone who only sees MLflow or a report.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from tasks import data as data_store
from tasks.formats import TEXT, Cells, format_of
from unlearning.compliance.signing import SALT_ENV, SALT_FILE, project_salt, salt_in_env
from unlearning.detect import Allowlist, line_column, scan_text
from unlearning.errors import UnlearnError

if TYPE_CHECKING:  # a type only: hashing a table request with the project's salt loads no text stack
    from unlearning.text.data import TextCorpus

# What the commands that make a folder a project leave in it (data add, train, submit, forget).
PROJECT_MARKERS = ("data.dvc", ".dvc", "mlflow", "ledger.db")


def is_project(root: Path) -> bool:
    """Whether `root` holds a project's state. `.unlearn/` counts only with more than the temp
    folder every command (this one too) makes in it for its run (flows.settings.private_tempdir)."""
    root = Path(root)
    private = root / ".unlearn"
    if private.is_dir() and any(entry.name != "tmp" for entry in private.iterdir()):
        return True
    return any((root / marker).exists() for marker in PROJECT_MARKERS)


def load_allowlist(path: Path | None) -> Allowlist | None:
    return None if path is None else Allowlist.from_file(Path(path))


def scan_cells(cells: Cells, salt: bytes, allowlist: Allowlist | None = None) -> list[dict]:
    """Findings in the text cells of a dataset, located by the cell's place and the offsets in it."""
    found = []
    for text, place in cells:
        for f in scan_text(text, salt, allowlist=allowlist):
            found.append({**f.to_dict(), "location": {**place, "start": f.start, "end": f.end}})
    return found


def scan_corpus(corpus: TextCorpus, salt: bytes, allowlist: Allowlist | None = None) -> list[dict]:
    """Findings in every record of a text corpus, located by record id and offsets."""
    return scan_cells(TEXT.text_cells(corpus), salt, allowlist)


def scan_path(path: Path, salt: bytes, allowlist: Allowlist | None = None) -> list[dict]:
    """Findings in any text or CSV file, located by 1-based line and column. A file that is not UTF-8
    text is refused: read with replacement characters, a binary file (a Parquet table, a model, a
    zip) reported "0 finding(s)" of secrets it may hold compressed or in another encoding."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise UnlearnError(f"cannot read '{path}' ({exc.strerror}); check the path") from None
    try:
        if b"\0" in raw:
            raise UnicodeDecodeError("utf-8", raw, raw.index(b"\0"), raw.index(b"\0") + 1, "a NUL byte")
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise UnlearnError(f"'{Path(path).name}' is not UTF-8 text (byte {exc.start}: {exc.reason}), so scan could not "
                           f"read what it holds: save it as UTF-8 text or CSV, or add a table with `unlearn data "
                           f"add` and scan the dataset") from None
    found = []
    for f in scan_text(text, salt, allowlist=allowlist):
        line, column = line_column(text, f.start)
        found.append({**f.to_dict(), "location": {"path": str(path), "line": line, "column": column}})
    return found


def scan_target(root: Path, target: str, allowlist: Allowlist | None = None) -> tuple[str, list[dict], str]:
    """Scan a dataset name (data/NAME) or a file path; returns (what was scanned, findings, whose salt
    fingerprinted them: file_salt)."""
    if (Path(root) / "data" / target).is_dir():
        dataset = data_store.load_dataset(root, target)
        cells = format_of(dataset).text_cells(dataset)
        if cells is None:  # images: no text to scan (it crashed on a missing .frame); no salt made
            raise UnlearnError(f"dataset '{target}' holds {format_of(dataset).name}: scan finds secrets in "
                               "tables and text only")
        return f"dataset {target}", scan_cells(cells, project_salt(root), allowlist), PROJECT_SALT
    if Path(target).is_file():
        salt, whose = file_salt(root)
        return f"file {target}", scan_path(Path(target), salt, allowlist), whose
    raise UnlearnError(f"{target!r} is neither a dataset under data/ nor a file: give a dataset name "
                       f"(see `unlearn data add`) or a path")


# whose salt a scan's fingerprints are made with (file_salt)
PROJECT_SALT, ONE_OFF_SALT = "project", "one-off"


def file_salt(root: Path) -> tuple[bytes, str]:
    """The salt a file is scanned with, and whose it is: in a project, the project's; outside one,
    UNLEARN_SALT when set (the fingerprints then match those of the project it is the salt of), else
    a one-off salt, whose fingerprints match no other scan: the folder the scan is run in is not made
    a project by a salt file."""
    if is_project(root):
        return project_salt(root), PROJECT_SALT
    given = salt_in_env(Path(root) / SALT_FILE)
    return (given, SALT_ENV) if given is not None else (secrets.token_bytes(32), ONE_OFF_SALT)


def counts_by_detector(findings: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for f in findings:
        counts[f["detector"]] = counts.get(f["detector"], 0) + 1
    return dict(sorted(counts.items()))
