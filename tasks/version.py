"""The version of the code that runs, as recorded in lineage tags, certificates and `unlearn
--version`. Cheap to import (no MLflow, no Prefect): `--version` answers at once."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path


def commit_of(folder: Path) -> str | None:
    """The commit HEAD names in the git work tree holding `folder`, or None (no repository, no
    commit yet: `rev-parse HEAD` then prints the word HEAD itself, never a commit to record)."""
    try:
        out = subprocess.run(["git", "-C", str(folder), "rev-parse", "--verify", "--quiet", "HEAD^{commit}"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) == 40 else None


@functools.cache
def code_version() -> str:
    """The code that runs, for lineage tags and certificates: the unlearnflow package version, plus
    '+<commit>' when the package runs from a git checkout of its own (an editable install, a
    clone); a package installed from a wheel has its version only."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        release = version("unlearnflow")
    except PackageNotFoundError:
        release = "0+unknown"
    commit = source_commit()
    return f"{release}+{commit}" if commit else release


def source_commit() -> str | None:
    """The commit of the checkout this package's code is imported from, or None. Only when the
    package's folder is the top of that work tree: a package installed into a virtualenv inside
    some other repository must not report that repository's commit."""
    source = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "-C", str(source), "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0 or Path(out.stdout.strip()).resolve() != source:
        return None
    return commit_of(source)
