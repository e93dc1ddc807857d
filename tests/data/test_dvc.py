"""DVC versioning and erasure on real repositories in temp dirs."""

import os
from pathlib import Path

import pytest

from tasks.common import dataset_digest
from tasks.data import add_dataset, load_dataset
from tasks.dvc import (
    DEFAULT_REMOTE,
    add_data,
    data_version,
    ensure_repo,
    purge_version,
    require_checked_out,
    version_objects,
)
from unlearning.errors import UnlearnError
from unlearning.tabular.data import correct_table, save_table


def object_path(store: Path, oid: str) -> Path:
    return store / "files" / "md5" / oid[:2] / oid[2:]


def stores(root: Path) -> list[Path]:
    return [root / ".dvc" / "cache", root / ".dvc-storage"]


def dvc_status(root: Path) -> tuple[dict, dict]:
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return repo.status(), repo.status(cloud=True)


def test_ensure_repo_is_idempotent_and_portable(tmp_path):
    root = tmp_path / "project"
    ensure_repo(root)
    config = (root / ".dvc" / "config").read_text()
    ensure_repo(root)
    assert (root / ".dvc" / "config").read_text() == config
    assert (root / ".git").is_dir()
    assert "analytics = False" in config and f"remote = {DEFAULT_REMOTE}" in config
    assert "url = ../.dvc-storage" in config and str(tmp_path) not in config  # relative only
    ignored = (root / ".dvc" / ".gitignore").read_text().splitlines()
    assert {"/cache", "/tmp", "/site-cache", "/config.local"} <= set(ignored)
    local = (root / ".dvc" / "config.local").read_text()
    assert str(root / ".dvc" / "site-cache") in local


def test_version_change_and_purge(tmp_path, toy_csv, other_csv):
    root = tmp_path / "project"
    toy, _ = add_dataset(root, "toy", file=toy_csv, target="y", id_column="pid")
    other, old = add_dataset(root, "other", file=other_csv, target="y")
    assert old.endswith(".dir") and data_version(root) == old
    old_objects = version_objects(root, old)
    assert old in old_objects and len(old_objects) == 5  # manifest + 2 files per dataset

    fixed = correct_table(toy, ["p001"], ["sex"], {"p002": "yes"})
    save_table(fixed, root / "data" / "toy")
    new = add_data(root)
    assert new != old and data_version(root) == new
    new_objects = version_objects(root, new)
    shared = old_objects & new_objects  # the untouched "other" dataset
    assert len(shared) == 2

    result = purge_version(root, old)

    doomed = old_objects - new_objects
    assert result["verified"] is True
    assert set(result["objects"]) == doomed and result["kept"] == new and result["old"] == old
    assert result["removed_cache"] == result["removed_remote"] == len(doomed) == 3
    for store in stores(root):
        assert not any(object_path(store, oid).exists() for oid in doomed)
        assert all(object_path(store, oid).exists() for oid in new_objects)
    assert dvc_status(root) == ({}, {})
    reloaded = load_dataset(root, "toy")
    assert "p001" not in reloaded.frame.index and reloaded.revoked == ("sex",)
    assert load_dataset(root, "other").frame.equals(other.frame)


def test_leftover_staging_folders_stay_out_of_the_version(tmp_path, toy_csv):
    root = tmp_path / "project"
    _, version = add_dataset(root, "toy", file=toy_csv, target="y", id_column="pid")
    leftover = root / "data" / ".toy.new-x1y2"  # what a crash inside save_table leaves
    leftover.mkdir()
    (leftover / "records.csv").write_text("pid,age\n")
    assert add_data(root) == version


# what Finder, Explorer and LibreOffice leave where a user looked at the data
LITTER = ["data/.DS_Store", "data/toy/.DS_Store", "data/toy/._records.csv", "data/Thumbs.db", "data/toy/desktop.ini",
          "data/toy/.~lock.records.csv#"]


def test_os_litter_in_data_is_no_change_to_its_version(tmp_path, toy_csv):
    """A .DS_Store a Finder window left in data/ made `unlearn train` refuse: "data/ differs from its
    DVC version" (red team, session 21)."""
    root = tmp_path / "project"
    _, version = add_dataset(root, "toy", file=toy_csv, target="y", id_column="pid")
    digest = dataset_digest(root, "toy")
    for litter in LITTER:
        (root / litter).write_bytes(b"\0\1")
    require_checked_out(root)
    assert dataset_digest(root, "toy") == digest  # what a request checks its model was trained on
    assert add_data(root) == version  # and it never enters a version
    (root / "data" / "toy" / "notes.txt").write_text("a file of the user's")
    with pytest.raises(UnlearnError, match="data/ differs from its DVC version"):
        require_checked_out(root)


def test_a_project_set_up_before_dvcignore_listed_os_litter_takes_it_too(tmp_path, toy_csv):
    root = tmp_path / "project"
    add_dataset(root, "toy", file=toy_csv, target="y", id_column="pid")
    (root / ".dvcignore").write_text("# staging folders of an interrupted save_table\n.*.new-*\n.*.old-*\n")
    (root / "data" / ".DS_Store").write_bytes(b"\0")
    require_checked_out(root)


def test_purge_refuses_the_current_version_and_unknown_ones(tmp_path, toy_csv):
    root = tmp_path / "project"
    _, version = add_dataset(root, "toy", file=toy_csv, target="y", id_column="pid")
    with pytest.raises(UnlearnError, match="is the current one"):
        purge_version(root, version)
    with pytest.raises(UnlearnError, match="in neither the DVC cache nor the remote"):
        purge_version(root, "0" * 32 + ".dir")
    assert all(object_path(s, o).exists() for s in stores(root) for o in version_objects(root, version))


def test_readding_purged_content_pushes_it_again(tmp_path, toy_csv):
    root = tmp_path / "project"
    toy, first = add_dataset(root, "toy", file=toy_csv, target="y", id_column="pid")
    save_table(correct_table(toy, ["p000"], [], {}), root / "data" / "toy")
    add_data(root)
    purge_version(root, first)
    save_table(toy, root / "data" / "toy")
    assert add_data(root) == first
    # DVC must not trust a stale "already pushed" record: the objects are back in the remote
    assert all(object_path(root / ".dvc-storage", o).exists() for o in version_objects(root, first))


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"name": "nope"}, "no built-in dataset 'nope' (built-ins: adult, digits, fashion-mnist, shakespeare)"),
        ({"name": "adult", "target": "income"}, "drop --target/--id"),
        ({"name": "toy", "file": "toy.csv"}, "--target is required with --file"),
        ({"name": "toy", "file": "toy.csv", "target": "missing"}, "target column 'missing' not found"),
        ({"name": "Bad Name", "file": "toy.csv", "target": "y"}, "is not allowed"),
        ({"name": "toy", "file": "missing.csv", "target": "y"}, "not found"),
    ],
)
def test_invalid_datasets_write_nothing(tmp_path, toy_csv, kwargs, expected):
    root = tmp_path / "project"
    if "file" in kwargs:
        kwargs["file"] = tmp_path / kwargs["file"]
    with pytest.raises(UnlearnError) as excinfo:
        add_dataset(root, **kwargs)
    assert expected in str(excinfo.value) and "\n" not in str(excinfo.value)
    assert not root.exists()


def test_no_site_cache_outside_the_project(tmp_path, toy_csv, monkeypatch):
    monkeypatch.delenv("DVC_SITE_CACHE_DIR", raising=False)
    root = tmp_path / "project"
    add_dataset(root, "toy", file=toy_csv, target="y", id_column="pid")
    assert (root / ".dvc" / "site-cache").is_dir()
    assert "DVC_SITE_CACHE_DIR" not in os.environ
