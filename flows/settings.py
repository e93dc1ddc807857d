"""Process-wide settings that must be in place before prefect or mlflow is imported.

Quiet, private and offline by default: a project-local Prefect home, no analytics, warnings only;
MLflow and DVC telemetry off. Values already set by the user win.
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import os
import shutil
import socket
import subprocess
import sys
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
    from urllib.parse import parse_qsl, urlsplit

    from unlearning.errors import UnlearnError

    uri = os.environ.get("UNLEARN_TRACKING_URI") or ""
    if not uri.lower().startswith(("http://", "https://")):
        return
    parts = urlsplit(uri)
    # never echo credentials in the URI: user info, nor a token in its query (values hidden, keys kept)
    query = "&".join(f"{key}=***" for key, _ in parse_qsl(parts.query, keep_blank_values=True))
    shown = parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else ""), query=query,
                           fragment="").geturl() if parts.hostname else uri.split("@")[-1].split("?")[0]
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

class PrefectServer:
    """The temporary Prefect API server a command records its flow runs in, started by the command
    itself as its first step, so that the server's start-up (~3 s, a process of its own) overlaps
    the command's imports and planning instead of following them.

    Without it Prefect starts the same server (uvicorn over prefect.server.api.server:create_app,
    the UI off, the database under PREFECT_HOME) when the first flow run asks for a client, after
    importing that module in the command's own process (~2 s) and polling it every 0.1 s. The flow
    runs land in the same database, so `unlearn ui --prefect` shows them as before.

    Started only where it replaces Prefect's: PREFECT_API_URL unset (a configured server is used
    as it is), and only in a project that has recorded flow runs before (.prefect/ exists): a
    command run in a folder that is not a project still leaves nothing there."""

    def __init__(self, home: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        import importlib.util

        # prefect's location, not prefect itself: importing it would read its settings before
        # PREFECT_API_URL names this server
        app_dir = Path(importlib.util.find_spec("prefect").submodule_search_locations[0]).parent
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVER_TIED_TO_PARENT, str(os.getpid()), "--app-dir", str(app_dir), "--factory",
             "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(self.port),
             "--log-level", "error", "--lifespan", "on"],
            env={**os.environ, "PREFECT_HOME": str(home), "PREFECT_UI_ENABLED": "0",
                 "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"},
            stdout=subprocess.DEVNULL)
        self.ready = False
        atexit.register(self.stop)

    def wait_ready(self) -> None:
        """Block until the server answers its health check (PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS)."""
        if self.ready:
            return
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", 90))
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the temporary Prefect server exited with code {self.process.returncode} "
                                   f"before answering; set PREFECT_API_URL to a running Prefect server")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        self.ready = True
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.05)
        raise RuntimeError("timed out waiting for the temporary Prefect server; set PREFECT_API_URL to a running "
                           "Prefect server or raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS")

    def stop(self) -> None:
        send_pending_run_logs()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


RUN_LOGS_DRAIN_S = 5.0


def send_pending_run_logs() -> None:
    """Let Prefect send the run logs it still queues (a failed run's record, batched every 2 s)
    before the server that receives them stops: sent after it, each batch prints '--- Error
    logging to API ---' under the command's own one-line error. Prefect drains them only in the
    interpreter's threading shutdown, which the CLI's exit skips (flows.cli.exit_without_teardown)."""
    handlers = sys.modules.get("prefect.logging.handlers")
    if handlers is None:
        return
    try:
        handlers.APILogWorker.drain_all(timeout=RUN_LOGS_DRAIN_S)
    except Exception:  # noqa: BLE001 — at exit, best effort: the logs only feed the Prefect UI
        pass


# uvicorn, in a process that ends with the command's: Linux sends it SIGTERM when its parent dies
# (PR_SET_PDEATHSIG), so a command killed by SIGKILL (OOM killer, `kill -9`, a CI timeout), which
# runs no atexit handler, leaves no server behind. The parent pid is checked after the prctl, for
# a parent that died before it. Elsewhere (no prctl) the atexit handler is the only stop.
SERVER_TIED_TO_PARENT = """
import ctypes, os, runpy, signal, sys
parent = int(sys.argv[1])
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
except (OSError, AttributeError):
    pass
if os.getppid() != parent:
    sys.exit(0)
sys.argv = ["uvicorn", *sys.argv[2:]]
runpy.run_module("uvicorn", run_name="__main__", alter_sys=True)
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_EARLY_SERVER: PrefectServer | None = None


def start_prefect_server_early(root: Path) -> PrefectServer | None:
    """Start the command's temporary Prefect server now and point the process (and its children:
    Dask workers) at it with PREFECT_API_URL; None where it does not apply (PrefectServer). Call
    before prefect reads its settings, i.e. before anything imports prefect's client side."""
    global _EARLY_SERVER
    home = Path(os.environ.get("PREFECT_HOME") or root / ".prefect")
    if _EARLY_SERVER is not None or os.environ.get("PREFECT_API_URL") or not home.is_dir():
        return None
    if "prefect.context" in sys.modules:  # settings already read: Prefect would not see the URL
        return None
    try:
        _EARLY_SERVER = PrefectServer(home)
    except OSError:
        return None  # Prefect starts its own when the first flow runs, as without this
    os.environ["PREFECT_API_URL"] = _EARLY_SERVER.url
    return _EARLY_SERVER


@contextmanager
def flow_run_settings() -> Iterator[None]:
    """Around a flow run of the command: wait for the temporary server this process started (if it
    did), and send a temporary server no heartbeats. A heartbeat lets a Prefect server mark a run
    whose process died as crashed; a temporary server (this command's, or the one Prefect starts
    itself where no PREFECT_API_URL is set, as in `unlearn serve`) runs no such service and ends
    with the process, while the heartbeat thread costs each run up to 1 s (joined at the run's
    end: measured 0.1-0.8 s per served forget). Against a configured server (PREFECT_API_URL)
    runs keep their heartbeats."""
    if _EARLY_SERVER is not None:
        _EARLY_SERVER.wait_ready()
    elif not prefect_server_is_temporary():
        yield
        return
    with settings_without_heartbeats():
        yield


_WITHOUT_HEARTBEATS: dict = {}  # "settings" → (the settings they were made from, the same without heartbeats)


def settings_without_heartbeats():
    """A Prefect settings context like the current one with heartbeats off (as `temporary_settings`
    makes one), the settings object made once per base settings: re-validating every setting
    costs ~0.1 s per flow run, which `unlearn serve` would pay per command."""
    import prefect.context
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY

    context = prefect.context.get_settings_context()
    kept = _WITHOUT_HEARTBEATS.get("settings")
    if kept is None or kept[0] is not context.settings:
        kept = (context.settings,
                context.settings.copy_with_update(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}))
        _WITHOUT_HEARTBEATS["settings"] = kept
    return prefect.context.SettingsContext(profile=context.profile, settings=kept[1])


def prefect_server_is_temporary() -> bool:
    """Whether this process's flow runs go to a temporary Prefect server: the command's own, or
    the one Prefect starts in a subprocess when no API URL is configured."""
    if _EARLY_SERVER is not None:
        return True
    from prefect.settings import get_current_settings

    return not get_current_settings().api.url


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
