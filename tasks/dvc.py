"""Thin wrapper over DVC: one `data.dvc` at the project root versions the whole `data/` folder.

DVC runs in-process (`dvc.repo.Repo`): the `dvc` command would pay ~1 s of imports per call.
The version of the data is the md5 of the `.dir` manifest DVC writes for `data/`.

Erasure (`purge_version`) deletes an old version's objects from the cache and the remote itself
instead of `dvc gc`: gc keeps what any commit references (so it keeps the old version) or, with
--workspace, deletes every other branch's data too.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from unlearning.errors import UnlearnError
from unlearning.storage import OS_LITTER

DEFAULT_REMOTE = "local"
DATA_DIR = "data"
DVC_FILE = "data.dvc"
STORAGE_DIR = ".dvc-storage"
SITE_CACHE_DIR = "site-cache"  # inside .dvc/
_GITIGNORE_LINES = ("/config.local", "/tmp", "/cache", f"/{SITE_CACHE_DIR}")
# save_table stages into hidden sibling folders; one left by a crash must not enter a version, nor
# what a file manager leaves in data/ (OS_LITTER).
_DVCIGNORE_LINES = ("# staging folders of an interrupted save_table", ".*.new-*", ".*.old-*",
                    "# what file managers and office suites leave beside files (unlearning.storage.OS_LITTER)",
                    *OS_LITTER)


@contextmanager
def _dvc_env() -> Iterator[None]:
    """No analytics, and DVC's info chatter ("To track the changes with git...") silenced."""
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    logger = logging.getLogger("dvc")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextmanager
def _site_cache_env(root: Path) -> Iterator[None]:
    """DVC opens its site cache when a Repo is opened, before our config.local can say where it
    goes, and would create /var/tmp/dvc: point it into the project while setting up."""
    if "DVC_SITE_CACHE_DIR" in os.environ:
        yield
        return
    os.environ["DVC_SITE_CACHE_DIR"] = str(root / ".dvc" / SITE_CACHE_DIR)
    try:
        yield
    finally:
        os.environ.pop("DVC_SITE_CACHE_DIR", None)


@contextmanager
def _open(root: Path):
    from dvc.repo import Repo

    with _dvc_env():
        repo = Repo(str(root))
        try:
            yield repo
        finally:
            repo.close()


# ---------------------------------------------------------------------------------------------
# Setting up


def _git_toplevel(root: Path) -> Path | None:
    for folder in (root, *root.parents):
        if (folder / ".git").exists():
            return folder
    return None


def ensure_repo(root: Path) -> None:
    """Make `root` a git + DVC repository with a default local remote. Idempotent and quiet."""
    from dvc.repo import Repo

    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    toplevel = _git_toplevel(root)
    if toplevel is None:
        subprocess.run(["git", "init", "-q", str(root)], check=True, capture_output=True)
        toplevel = root
    with _site_cache_env(root):
        if not (root / ".dvc").is_dir():
            with _dvc_env():
                Repo.init(str(root), subdir=toplevel != root).close()
        _ensure_config(root)
    _ensure_lines(root / ".dvc" / ".gitignore", _GITIGNORE_LINES)
    _ensure_dvcignore(root)


def _ensure_dvcignore(root: Path) -> None:
    _ensure_lines(root / ".dvcignore", _DVCIGNORE_LINES)


def _ensure_config(root: Path) -> None:
    from dvc.config_schema import RelPath

    with _open(root) as repo:
        config = repo.config.read("repo")
        core = config.get("core", {})
        if core.get("analytics") is not False or not core.get("remote"):
            with repo.config.edit("repo") as conf:
                conf["core"]["analytics"] = False
                if not conf["core"].get("remote"):
                    # RelPath makes DVC store the url relative to .dvc/, so the repo can move.
                    conf["remote"].setdefault(
                        DEFAULT_REMOTE, {"url": RelPath(str(root / STORAGE_DIR))}
                    )
                    conf["core"]["remote"] = DEFAULT_REMOTE
        # An absolute path, so it goes to the git-ignored config.local, never the shared config.
        site_cache = str(root / ".dvc" / SITE_CACHE_DIR)
        if repo.config.read("local").get("core", {}).get("site_cache_dir") != site_cache:
            with repo.config.edit("local") as conf:
                conf["core"]["site_cache_dir"] = site_cache


def _ensure_lines(path: Path, wanted: tuple[str, ...]) -> None:
    lines = path.read_text().splitlines() if path.exists() else []
    missing = [line for line in wanted if line not in lines]
    if missing:
        path.write_text("\n".join([*lines, *missing]) + "\n")


# ---------------------------------------------------------------------------------------------
# Versions


def add_data(root: Path) -> str:
    """`dvc add data` + `dvc push`; returns the new data version (md5 ending in .dir)."""
    root = Path(root).resolve()
    with _open(root) as repo:
        repo.add(str(root / DATA_DIR))
        repo.push()
    version = data_version(root)
    assert version is not None
    return version


def data_version(root: Path) -> str | None:
    path = Path(root) / DVC_FILE
    if not path.is_file():
        return None
    outs = (yaml.safe_load(path.read_text()) or {}).get("outs") or [{}]
    return outs[0].get("md5")


# How DVC says data/ differs from the version data.dvc names ("not in cache" is not a difference:
# the workspace is that version, its objects are only missing from the local cache).
_CHANGED = ("modified", "deleted", "new")


def require_checked_out(root: Path) -> None:
    """Refuse data/ whose content is not the version data.dvc names: a `data add` killed between
    writing data/NAME and its `dvc add`, or files changed by hand. What is trained on it would be
    tagged with a data version that does not hold its rows (wrong lineage). DVC's state database
    keeps the files' hashes by inode and mtime, so an unchanged data/ is not read again. OS litter
    (a Finder's .DS_Store) is no difference: a project set up before .dvcignore listed it gets the
    lines here, not only at its next `data add`."""
    root = Path(root).resolve()
    if not (root / DVC_FILE).is_file():
        return  # no version to differ from (`load_data` says it is not versioned yet)
    _ensure_dvcignore(root)
    with _open(root) as repo:
        status = repo.status(targets=[str(root / DVC_FILE)])
    # keyed by data.dvc's path relative to the current directory, which need not be the project
    # (UNLEARN_ROOT, a subfolder): only data.dvc was asked about, so every entry is its own
    changes = [change for entries in status.values() for entry in entries if isinstance(entry, dict)
               for change in (entry.get("changed outs") or {}).values()]
    if any(change in _CHANGED for change in changes):
        raise UnlearnError("data/ differs from its DVC version: run `unlearn data add` again or `dvc checkout`")


def version_objects(root: Path, md5: str) -> set[str]:
    """Object ids of a version: the .dir manifest itself and every file it lists.
    Read from the local cache, else from the default remote."""
    with _open(Path(root).resolve()) as repo:
        return _objects(repo, md5)


def _remote_odb(repo):
    return repo.cloud.get_remote_odb(None, "purge")


def _read_manifest(odb, md5: str) -> list[dict] | None:
    path = odb.oid_to_path(md5)
    if not odb.fs.exists(path):
        return None
    with odb.fs.open(path, "r") as handle:
        return json.load(handle)


def _objects(repo, md5: str) -> set[str]:
    manifest = _read_manifest(repo.cache.local, md5)
    if manifest is None:
        manifest = _read_manifest(_remote_odb(repo), md5)
    if manifest is None:
        raise UnlearnError(
            f"data version {md5} is in neither the DVC cache nor the remote "
            "(already purged, or never pushed); nothing to purge"
        )
    return {md5, *(entry["md5"] for entry in manifest)}


@contextmanager
def version_folder(root: Path, md5: str, name: str) -> Iterator[Path | None]:
    """data/NAME as it was at data version `md5`: a temporary folder NAME of links to its files'
    objects in the local cache, else a remote that is a local folder, so that a loader reads it and
    no byte of the data is copied (a temporary folder must hold no personal data). None when the
    version, or a file of the folder, is in neither (purged, never pushed, or on a remote that is
    not a folder of this machine)."""
    with _open(Path(root).resolve()) as repo:
        stores = [odb for odb in (repo.cache.local, _remote_odb(repo)) if odb.fs.protocol == "local"]
    files = _folder_objects(stores, md5, name)
    if files is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="unlearn-version-") as tmp:
        folder = Path(tmp) / name
        for relpath, path in files.items():
            link = folder / relpath
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path)
        yield folder


def _folder_objects(stores: list, md5: str, name: str) -> dict[str, str] | None:
    """Path inside data/NAME → the file holding it in the first of `stores` that has it, for data
    version `md5`; None when the manifest or one of those files is in none of them."""
    manifest = next((found for odb in stores if (found := _read_manifest(odb, md5)) is not None), None)
    if manifest is None:
        return None
    files = {}
    for entry in manifest:
        relpath = entry["relpath"]
        if not relpath.startswith(f"{name}/"):
            continue
        held = [odb.oid_to_path(entry["md5"]) for odb in stores if _has(odb, entry["md5"])]
        if not held:
            return None
        files[relpath[len(name) + 1:]] = held[0]
    return files or None


def purge_version(root: Path, old_md5: str) -> dict:
    """Delete the objects of `old_md5` that the current version does not use, from the local
    cache and the default remote, then check they are gone and the current version is intact."""
    root = Path(root).resolve()
    current = data_version(root)
    if old_md5 == current:
        raise UnlearnError(
            f"data version {old_md5} is the current one; add the corrected data before purging"
        )
    with _open(root) as repo:
        keep = _objects(repo, current) if current else set()
        doomed = sorted(_objects(repo, old_md5) - keep)
        # The manifest goes last: if a purge is interrupted, a rerun can still find the objects.
        order = [o for o in doomed if o != old_md5] + [old_md5] * (old_md5 in doomed)
        stores = {"cache": repo.cache.local, "remote": _remote_odb(repo)}
        removed = {name: _remove(odb, order) for name, odb in stores.items()}
        leftover = [o for odb in stores.values() for o in doomed if _has(odb, o)]
        intact = all(_has(repo.cache.local, o) for o in keep)
    return {
        "old": old_md5,
        "kept": current,
        "removed_cache": removed["cache"],
        "removed_remote": removed["remote"],
        "verified": not leftover and intact,
        "objects": doomed,
    }


def _has(odb, oid: str) -> bool:
    return odb.fs.exists(odb.oid_to_path(oid))


def _remove(odb, oids: list[str]) -> int:
    removed = 0
    for oid in oids:
        path = odb.oid_to_path(oid)
        if not odb.fs.exists(path):
            continue
        try:
            odb.fs.remove(path)
        except (NotImplementedError, PermissionError) as exc:
            raise RuntimeError(
                f"cannot delete object {oid} from {odb.fs.protocol} storage "
                f"({type(exc).__name__}); delete it by hand or give DVC write access"
            ) from exc
        removed += 1
    return removed


# ---------------------------------------------------------------------------------------------
# Rolling back


def dvc_file_text(root: Path) -> str | None:
    """The exact text of data.dvc: the restore point of a run that is about to write data."""
    path = Path(root) / DVC_FILE
    return path.read_text() if path.is_file() else None


def restore_version(root: Path, dvc_text: str) -> dict:
    """Put data.dvc back as `dvc_text` and check data/ out at that version (force: files a failed
    run wrote or added are replaced or removed), then delete the abandoned version's own objects
    (they hold the corrected data of a request that was not carried out, and would otherwise sit
    in the cache holding records a later request removes). The restored version's objects must
    still be in the cache or the remote: nothing purges them before a promotion."""
    root = Path(root).resolve()
    abandoned = data_version(root)
    (root / DVC_FILE).write_text(dvc_text)
    restored = data_version(root)
    with _open(root) as repo:
        try:
            repo.checkout(targets=[str(root / DVC_FILE)], force=True)
        except Exception:  # noqa: BLE001 — objects only in the remote: fetch them, then check out again
            repo.fetch(targets=[str(root / DVC_FILE)])
            repo.checkout(targets=[str(root / DVC_FILE)], force=True)
        clean = not repo.status(targets=[str(root / DVC_FILE)])
    removed = None
    if abandoned not in (None, restored):
        try:
            removed = purge_version(root, abandoned)
        except UnlearnError:
            removed = None  # never reached the cache: nothing to remove
    return {"restored": restored, "abandoned": abandoned if abandoned != restored else None,
            "workspace_matches": clean, "removed_objects": removed["objects"] if removed else []}
