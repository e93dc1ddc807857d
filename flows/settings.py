"""Process-wide settings that must be in place before prefect or mlflow is imported.

Quiet, private and offline by default: a project-local Prefect home, no analytics, warnings only;
MLflow and DVC telemetry off. Values already set by the user win.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from unlearning.processes import process_alive

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
    bound_mlflow_http()
    # Only the value the user started with counts (empty = the project store): MLflow rewrites
    # MLFLOW_TRACKING_URI itself once a store is chosen.
    os.environ.setdefault("UNLEARN_TRACKING_URI", os.environ.get("MLFLOW_TRACKING_URI", ""))
    # MLflow's informational logging and advice warnings would drown the pipeline's own output.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow(\..*)?")
    warnings.filterwarnings("ignore", category=FutureWarning)


# MLflow's own HTTP defaults (120 s per request, 7 retries with exponential backoff) keep a command
# waiting minutes on a tracking server that is down or does not answer. Bounded: a request that
# has not started answering in 30 s is retried twice, 1 s then 2 s later.
MLFLOW_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "30", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
                        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
PROBE_TIMEOUT_S = 5.0


def bound_mlflow_http() -> None:
    for key, value in MLFLOW_HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)


def probe_tracking_server() -> None:
    """A command that will use an MLflow tracking server (MLFLOW_TRACKING_URI=http…) asks it once,
    at start, whether it is there: one line within seconds instead of MLflow's retries. Any HTTP
    answer counts as reachable (a server behind authentication answers 401)."""
    import urllib.error
    import urllib.request
    from urllib.parse import urlsplit

    from unlearning.errors import UnlearnError

    uri = os.environ.get("UNLEARN_TRACKING_URI") or ""
    if not uri.lower().startswith(("http://", "https://")):
        return
    parts = urlsplit(uri)
    shown = parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")).geturl() \
        if parts.hostname else uri.split("@")[-1]  # never echo credentials in the URI
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=PROBE_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise UnlearnError(f"the MLflow tracking server MLFLOW_TRACKING_URI={shown} cannot be reached "
                           f"({' '.join(str(reason).split()) or type(exc).__name__}); start it, or unset "
                           f"MLFLOW_TRACKING_URI to use the project's own store") from None


def keep_run_failures_off_console() -> None:
    """Prefect logs a failed task or flow run with its traceback (tens of lines, once per task and
    flow) on the console; the CLI reports each failure itself, in one line. The run loggers keep
    their own handler (the Prefect API: the runs' logs stay in the Prefect UI) but no longer pass
    records to the console handler. Call after prefect is imported: its logging setup leaves
    `propagate` alone once set."""
    import prefect.logging.configuration as prefect_logging

    prefect_logging.ensure_logging_setup()
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logging.getLogger(name).propagate = False

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
    if pid.isdigit() and not process_alive(int(pid)):
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


# The text demo's training budget. Steps, not seconds, so that what the model memorises does not
# depend on the machine's load: 400 steps of `small` (~9 epochs of the corpus) take ~90 s on 2
# cores and leave the injected secrets' exposure far above 20 bits.
DEMO_TEXT_STEPS = 400
