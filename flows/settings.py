"""Process-wide settings that must be in place before prefect or mlflow is imported.

Quiet, private and offline by default: a project-local Prefect home, no analytics, warnings only;
MLflow and DVC telemetry off. Values already set by the user win.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TEMP_DIR = Path(".unlearn") / "tmp"
LOCK_FILE = ".owner.lock"
LOCK_GRACE_SECONDS = 60


def project_root() -> Path:
    """UNLEARN_ROOT when set, else the current directory (the repository a user works in)."""
    return Path(os.environ.get("UNLEARN_ROOT") or Path.cwd()).resolve()


def configure_environment(root: Path) -> None:
    defaults = {
        "PREFECT_HOME": str(root / ".prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DVC_NO_ANALYTICS": "1",
        "GIT_PYTHON_REFRESH": "quiet",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        # With a tracking server MLflow prints "View run ... at: URL" to stdout at every run's
        # end, which would break --json (stdout carries exactly one JSON object).
        "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    # Only the value the user started with counts (empty = the project store): MLflow rewrites
    # MLFLOW_TRACKING_URI itself once a store is chosen.
    os.environ.setdefault("UNLEARN_TRACKING_URI", os.environ.get("MLFLOW_TRACKING_URI", ""))
    # MLflow's informational logging and advice warnings would drown the pipeline's own output.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow(\..*)?")
    warnings.filterwarnings("ignore", category=FutureWarning)


@contextmanager
def private_tempdir(root: Path) -> Iterator[Path | None]:
    """Run the body with the process's temp files (MLflow stages model files there: a bundle, a
    certificate) in a folder of its own under <root>/.unlearn/tmp (0700), not the shared system
    one, and remove them at the end. A process killed before that (SIGKILL, power loss) leaves its
    folder behind: the next command removes it first — every folder whose owner is gone.

    Ownership is an flock on a file in the folder, which the kernel releases when the owner dies,
    however it dies. Where the project cannot be written the system temp folder stays in use."""
    base = Path(root) / TEMP_DIR
    created = [p for p in (base.parent, base) if not p.exists()]
    try:
        base.mkdir(parents=True, exist_ok=True)
        base.chmod(0o700)
        remove_stale_temp(base)
        own = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}.", dir=base))
        lock = (own / LOCK_FILE).open("w")
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        yield None
        return
    previous = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir = str(own)
    os.environ["TMPDIR"] = str(own)  # subprocesses too: served flow runs, Dask workers
    try:
        yield own
    finally:
        tempfile.tempdir = previous[0]
        if previous[1] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = previous[1]
        shutil.rmtree(own, ignore_errors=True)
        lock.close()
        for folder in reversed(created):  # a command run outside a project leaves no trace
            try:
                folder.rmdir()
            except OSError:
                break


def remove_stale_temp(base: Path) -> list[str]:
    """Remove the folders under `base` whose owning process is gone; returns their names."""
    removed = []
    for entry in base.iterdir():
        if not _is_stale(entry):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry.name)
    return removed


def _is_stale(entry: Path) -> bool:
    """Unlocked, and its process (named in the folder name) dead — or unlocked for longer than
    an owner takes to lock it (a recycled pid must not keep a dead process's files)."""
    if _locked(entry):
        return False
    pid = entry.name.split(".", 1)[0]
    if pid.isdigit() and not _pid_alive(int(pid)):
        return True
    return time.time() - entry.lstat().st_mtime > LOCK_GRACE_SECONDS


def _locked(entry: Path) -> bool:
    try:
        with (entry / LOCK_FILE).open("rb") as lock:  # never created here: that would race its owner
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False
    except BlockingIOError:
        return True
    except OSError:  # no lock file (killed before it was made) or not a folder
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# The text demo's training budget. Steps, not seconds, so that what the model memorises does not
# depend on the machine's load: 400 steps of `small` (~9 epochs of the corpus) take ~90 s on 2
# cores and leave the injected secrets' exposure far above 20 bits.
DEMO_TEXT_STEPS = 400
