"""Real servers for the deployment and scale-out tests: a Prefect server (`prefect server start`),
a process that serves or works deployments, an MLflow tracking server, a PostgreSQL cluster.

Each is a subprocess on 127.0.0.1 with a free port and its output in a log file. Leaving a
`service(...)` block — normally or through a failed assertion — stops the whole process tree
(flow-run processes a worker started in their own session included): SIGTERM, then SIGKILL
after a grace period.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
QUIET = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "MLFLOW_DISABLE_TELEMETRY": "true", "DVC_NO_ANALYTICS": "1",
         "PREFECT_UI_ENABLED": "false", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


class ServiceFailed(RuntimeError):
    """A service exited or never became ready; the message carries the end of its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ctrl_c_as_in_a_terminal() -> None:
    """A Popen `preexec_fn`: SIGINT's default disposition, as a command typed in a terminal has. A
    suite started as a background job (`make test &`, nohup in a script) runs with SIGINT ignored,
    every child inherits that, and a Python child that starts with it ignored never raises
    KeyboardInterrupt: a test of Ctrl-C then waits out its timeout."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def child_env(**overrides: str | None) -> dict[str, str]:
    """This process's environment, quiet, with the repository importable (a checkout without
    `pip install -e .` too) and `overrides` applied (None removes a variable)."""
    env = {**os.environ, **QUIET}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def log_tail(path: Path, lines: int = 30) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def stop_tree(proc: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 20.0) -> list:
    """Signal the process and every descendant (collected first: children a worker started in
    their own session would otherwise survive it), then SIGKILL whatever is left; returns what
    had to be killed."""
    try:
        root = psutil.Process(proc.pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    for p in tree:
        try:
            p.send_signal(sig)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(tree, timeout=grace)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    return alive


class Service:
    """A started subprocess; `wait_ready()` blocks until its readiness probe holds."""

    def __init__(self, name: str, proc: subprocess.Popen, log: Path, ready: Callable[[], bool], timeout: float):
        self.name, self.proc, self.log, self.ready, self.timeout = name, proc, log, ready, timeout
        self.started = time.monotonic()
        self.killed: list = []  # what did not stop on the stop signal within the grace period

    def wait_ready(self) -> "Service":
        while not self.ready():
            if self.proc.poll() is not None:
                raise ServiceFailed(f"{self.name} exited with code {self.proc.returncode}:\n{log_tail(self.log)}")
            if time.monotonic() - self.started > self.timeout:
                raise ServiceFailed(f"{self.name} not ready after {self.timeout:.0f} s:\n{log_tail(self.log)}")
            time.sleep(0.5)
        return self


@contextmanager
def service(name: str, cmd: list[str], log: Path, ready: Callable[[], bool], *, env: dict | None = None,
            cwd: Path | None = None, timeout: float = 240.0, user: str | None = None,
            stop_signal: int = signal.SIGTERM, wait: bool = True) -> Iterator[Service]:
    """Start `cmd` (and, unless `wait=False`, wait until `ready()` holds); stop its tree on exit."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=cwd, start_new_session=True, user=user)
    started = Service(name, proc, log, ready, timeout)
    try:
        yield started.wait_ready() if wait else started
    finally:
        started.killed = stop_tree(proc, stop_signal)


def run(cmd: list[str], env: dict, cwd: Path | None = None, timeout: float = 600.0) -> subprocess.CompletedProcess:
    """A command to completion, its output captured (for the assertion message)."""
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------------------------------------
# Prefect


@contextmanager
def prefect_server(home: Path, logs: Path, database_url: str | None = None,
                   wait: bool = True) -> Iterator[tuple[str, Service]]:
    """`prefect server start` on a free port with its own PREFECT_HOME (and its SQLite database
    there unless `database_url` names another); yields (API URL, the service)."""
    port = free_port()
    env = child_env(PREFECT_HOME=str(home), PREFECT_API_URL=None,
                    PREFECT_SERVER_DATABASE_CONNECTION_URL=database_url)
    cmd = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    api = f"http://127.0.0.1:{port}/api"
    with service("prefect server", cmd, logs / "prefect-server.log", lambda: http_ok(f"{api}/health"), env=env,
                 wait=wait) as server:
        yield api, server


def deployment_exists(api: str, name: str) -> bool:
    return http_ok(f"{api}/deployments/name/{name}")


def api_json(url: str, body: dict | None = None):
    """GET (or, with a body, POST) a Prefect API endpoint; the decoded JSON."""
    import json

    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def workers_online(api: str, pool: str) -> bool:
    try:
        return bool(api_json(f"{api}/work_pools/{pool}/workers/filter", {}))
    except (urllib.error.URLError, OSError):
        return False


# ---------------------------------------------------------------------------------------------
# MLflow


@contextmanager
def mlflow_server(backend_store_uri: str, artifacts: Path, logs: Path) -> Iterator[str]:
    """`mlflow server` (one worker, no job execution) over `backend_store_uri`, artifacts served
    from `artifacts`; yields the tracking URI."""
    port = free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", backend_store_uri, "--artifacts-destination", str(artifacts)]
    url = f"http://127.0.0.1:{port}"
    with service("mlflow server", cmd, logs / "mlflow-server.log", lambda: http_ok(f"{url}/health"),
                 env=child_env(MLFLOW_TRACKING_URI=None)):
        yield url


# ---------------------------------------------------------------------------------------------
# PostgreSQL


def postgres_bin() -> Path | None:
    """The directory of initdb/postgres: Debian's /usr/lib/postgresql/<newest>/bin, else PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def postgres_os_user() -> str | None:
    """PostgreSQL refuses to run as root: as root, the cluster belongs to the `postgres` account
    the Debian package creates; otherwise to the current user (None)."""
    if os.geteuid() != 0:
        return None
    try:
        import pwd

        pwd.getpwnam("postgres")
        return "postgres"
    except KeyError:
        return None


@contextmanager
def postgres_cluster(logs: Path, superuser: str = "unlearn") -> Iterator[str]:
    """A throw-away cluster (initdb, trust auth, TCP on 127.0.0.1 only, a free port); yields
    `postgresql://<superuser>@127.0.0.1:<port>` (no database)."""
    bindir = postgres_bin()
    if bindir is None:
        raise ServiceFailed("PostgreSQL is not installed (`make test-scale` installs it from Debian packages)")
    user = postgres_os_user()
    if os.geteuid() == 0 and user is None:
        raise ServiceFailed("running as root needs the `postgres` account (created by the Debian package)")
    # Outside pytest's private temp dir: the `postgres` account must be able to reach it.
    base = Path(tempfile.mkdtemp(prefix="unlearn-pg-"))
    try:
        os.chmod(base, 0o755)
        if user:
            shutil.chown(base, user)
        data = base / "data"
        init = subprocess.run([str(bindir / "initdb"), "-D", str(data), "-U", superuser, "--auth=trust",
                               "-E", "UTF8", "--no-instructions"],
                              capture_output=True, text=True, user=user, cwd=base, timeout=300)
        if init.returncode != 0:
            raise ServiceFailed(f"initdb failed: {init.stderr.strip()[-2000:]}")
        port = free_port()
        url = f"postgresql://{superuser}@127.0.0.1:{port}"
        # SIGINT = "fast" shutdown: SIGTERM would wait for every client to disconnect.
        with service("postgres", [str(bindir / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port),
                                  "-k", str(base), "-c", "fsync=off"],
                     logs / "postgres.log", lambda: _accepts(bindir, port, superuser), user=user, cwd=base,
                     stop_signal=signal.SIGINT):
            yield url
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _accepts(bindir: Path, port: int, user: str) -> bool:
    probe = subprocess.run([str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-U", user, "-q"],
                           capture_output=True)
    return probe.returncode == 0


def create_databases(server_url: str, *names: str) -> dict[str, str]:
    """CREATE DATABASE for each name; returns name → URL (psycopg2 driver)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(f"{server_url}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for name in names:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return {name: f"{server_url}/{name}" for name in names}
