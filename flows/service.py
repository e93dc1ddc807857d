"""The warm path: `unlearn serve` runs `forget`, `comply` and `audit` for the CLI in its own,
already warm process (torch, Prefect, MLflow imported; the Prefect and MLflow clients set up), so
a command costs its compute instead of ~5 s of imports and a temporary Prefect server.

The service listens on a Unix domain socket, `.unlearn/service.sock` in the project (0600, and
a connection from another user is refused: the kernel names the peer), so it serves one project,
to its own user. The CLI asks it first (stdlib only, nothing heavy imported) and runs the command
itself when nothing answers (no service, or a socket left by a killed one), when the service is
busy with another command (the local run then meets the project lock exactly as two local runs
would), or when the service runs with other project-wide settings or other code. `--local` or
UNLEARN_SERVICE=off skips the service; UNLEARN_SERVICE=PATH names another socket.

One connection carries one command; frames are a 4-byte big-endian length and a JSON object:

    client  → {"argv", "cwd", "root", "env", "settings"}     (at most MAX_REQUEST_BYTES)
    service → {"accepted": true} or {"declined": why, "note": bool}
    client  → {"go": true}          the client is committed: no local run after this point
    service → {"started": true}, then {"out": text} / {"err": text} …, then {"exit": code}

A client that times out before "accepted" closes without "go" and runs locally; the service runs
nothing without "go". A connection that ends after "go" but before "started" ran nothing (the
client runs locally); one that ends after "started" without "exit" means the service died during
the command: the client says so in one line and exits 1, and the next command's recovery
(tasks.release) finishes or rolls back the release the command left.

The service runs one command at a time, each in a fresh thread (thread-local state such as
MLflow's active run starts empty), with sys.stdout/stderr sent to the client, the client's
per-command settings (REQUEST_ENV) applied, and the process's environment, working folder, temp
folder and logging handlers put back afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import struct
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

SOCKET = Path(".unlearn") / "service.sock"
SERVICE_ENV = "UNLEARN_SERVICE"
OFF = ("off", "0", "no", "false", "local")
DELEGATED = ("forget", "comply", "audit")
# Settings a command reads per run: the client's values apply to its command.
REQUEST_ENV = ("UNLEARN_KEEP_SUPERSEDED_DAYS", "UNLEARN_TASK_RUNNER", "UNLEARN_DASK_ADDRESS")
# What a served command changes in the process environment while it runs (its client's settings,
# its private temp folder): a scheduled flow run started meanwhile must start from the service's.
COMMAND_ENV = (*REQUEST_ENV, "TMPDIR")
# Settings that choose the project's stores and keys: a client whose values differ from the
# service's runs its command itself. Compared by digest, so no value (a signing key) crosses.
# PREFECT_API_URL: where the command's flow runs are recorded (a service without one records them
# in its own temporary server, which the client's configured UI never shows).
PROJECT_ENV = ("MLFLOW_TRACKING_URI", "UNLEARN_LEDGER_URL", "UNLEARN_LEDGER_HEAD", "UNLEARN_SIGNING_KEY",
               "UNLEARNFLOW_PLUGINS", "PREFECT_API_URL")
# The packages whose files make up "the code" a service runs (see code_digest).
CODE_PACKAGES = ("flows", "tasks", "unlearning")
MAX_REQUEST_BYTES = 64 * 1024  # an argv and a few settings; anything longer is not from the CLI
MAX_ARG_CHARS = 4096
CONNECT_TIMEOUT_S = 2.0
ANSWER_TIMEOUT_S = 10.0  # the client's wait for "accepted"; past it the command runs locally
HANDSHAKE_TIMEOUT_S = 5.0  # the service's wait for a request and for "go"
# The longest one frame of output may wait for a client that stopped reading (a full socket
# buffer: a terminal paused, a pipe nobody drains): past it the client counts as gone and the
# command goes on to its end without it, instead of holding the project lock for ever.
SEND_TIMEOUT_S = 60.0
# How long the end of a command (the rest of a frame cut short, a note, the exit code) waits for
# such a client to read again: a terminal resumed after a pause then still hears how it ended.
# The wait holds only the connection's own thread, never the project lock.
FINISH_TIMEOUT_S = 600.0
HEADER = struct.Struct(">I")
SUN_PATH_MAX = 100  # AF_UNIX paths are limited to 108 bytes: longer ones are reached from their folder


class ProtocolError(Exception):
    """A frame that is too long, not JSON, or not an object."""


def socket_path(root: Path) -> Path | None:
    """Where the CLI looks for the service, and where `unlearn serve` listens; None when off."""
    setting = os.environ.get(SERVICE_ENV, "").strip()
    if setting.lower() in OFF:
        return None
    if setting and setting.lower() not in ("on", "auto"):
        return Path(setting).expanduser().absolute()
    return Path(root) / SOCKET


def project_settings() -> dict[str, str]:
    """A digest per PROJECT_ENV setting as the user gave it: read before `configure_environment`
    (MLflow rewrites MLFLOW_TRACKING_URI once a store is chosen), and the code (code_digest)."""
    values = {key: os.environ.get(key) for key in PROJECT_ENV}
    # the user's MLflow store as tasks.tracking.tracking_uri reads it (UNLEARN_TRACKING_URI: what
    # configure_environment recorded before MLflow rewrote MLFLOW_TRACKING_URI)
    values["MLFLOW_TRACKING_URI"] = os.environ.get("UNLEARN_TRACKING_URI", os.environ.get("MLFLOW_TRACKING_URI", ""))
    values["code"] = code_digest()
    return {key: hashlib.sha256(f"{key}={value}".encode()).hexdigest()[:32] for key, value in values.items()}


def code_digest(base: Path | None = None) -> str:
    """The code a process would run: every module file of CODE_PACKAGES under `base` (where this
    package is installed) by name, size and modification time. The install path alone stays the
    same across a `git pull` or `pip install` into it, and a service started before would go on
    running the old code for a client that has the new (measured: 2–8 ms for its ~115 files)."""
    base = Path(__file__).resolve().parent.parent if base is None else base
    digest = hashlib.sha256(str(base).encode())
    for package in CODE_PACKAGES:
        for path in sorted((base / package).rglob("*.py")):
            try:
                status = path.stat()
            except OSError:  # removed while we read: the next call sees the new tree
                continue
            digest.update(f"\0{path.relative_to(base)}:{status.st_size}:{status.st_mtime_ns}".encode())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# frames


def frame(message: dict) -> bytes:
    data = json.dumps(message).encode()
    return HEADER.pack(len(data)) + data


def send(conn: socket.socket, message: dict) -> None:
    conn.sendall(frame(message))


def unsent_after_timeout(conn: socket.socket, data: bytes, timeout: float) -> bytes:
    """Send `data` within `timeout` seconds in all; what is left of it then (b"": all sent).
    sendall cannot say how much a timeout left, and the rest is what keeps the stream whole. One
    deadline for the whole frame: a client taking a few bytes a minute must not hold the command."""
    view, deadline = memoryview(data), time.monotonic() + timeout
    while view:
        left = deadline - time.monotonic()
        if left <= 0:
            return bytes(view)
        conn.settimeout(left)
        try:
            view = view[conn.send(view):]
        except TimeoutError:
            return bytes(view)
    return b""


def receive(conn: socket.socket, limit: int | None = None) -> dict | None:
    """The next frame; None at a clean end of the connection."""
    header = _exactly(conn, HEADER.size)
    if header is None:
        return None
    (size,) = HEADER.unpack(header)
    if limit is not None and size > limit:
        raise ProtocolError(f"message of {size} bytes: the limit is {limit}")
    data = _exactly(conn, size)
    if data is None:
        raise ProtocolError("connection ended inside a message")
    try:
        message = json.loads(data.decode())
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError("message is not JSON") from None
    if not isinstance(message, dict):
        raise ProtocolError("message is not a JSON object")
    return message


def _exactly(conn: socket.socket, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = conn.recv(min(left, 1 << 16))
        if not chunk:
            if left == size:
                return None
            raise ProtocolError("connection ended inside a message")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


@contextmanager
def _reachable(path: Path):
    """The address to bind or connect `path` by: the path itself, or for a path longer than an
    AF_UNIX address holds, its name with the working folder moved to its folder meanwhile."""
    if len(os.fsencode(path)) <= SUN_PATH_MAX:
        yield str(path)
        return
    before = os.getcwd()
    os.chdir(path.parent)
    try:
        yield path.name
    finally:
        os.chdir(before)


# ---------------------------------------------------------------------------------------------
# the client (the CLI): stdlib only


def hand_over(argv: list[str], root: Path) -> int | None:
    """Run `unlearn ARGV` in the project's service: its exit code, with its output written here;
    None when the command is to run in this process (no service answered, or it declined)."""
    path = socket_path(root)
    if path is None or not path.exists():
        return None
    out, err = sys.stdout, sys.stderr  # where the service's output goes, whatever redirects later
    conn = _connect(path)
    if conn is None:
        return None
    with conn:
        try:
            send(conn, {"argv": list(argv), "cwd": os.getcwd(), "root": str(root),
                        "env": {k: os.environ[k] for k in REQUEST_ENV if k in os.environ},
                        "settings": project_settings()})
            answer = receive(conn, MAX_REQUEST_BYTES)
            if answer is None or not answer.get("accepted"):
                if answer and answer.get("note"):
                    print(f"note: {answer.get('declined')}; running the command here", file=err)
                return None
        except (OSError, ProtocolError):
            return None
        except KeyboardInterrupt:  # before "go": the service runs nothing
            return 130
        return relay(conn, argv, out, err)


def _connect(path: Path) -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(CONNECT_TIMEOUT_S)
    try:
        with _reachable(path) as address:
            conn.connect(address)
    except OSError:  # no listener (a socket file a killed service left), no permission, a timeout
        conn.close()
        return None
    if _peer_uid(conn) not in (None, os.getuid()):
        # a socket another user listens on (a shared UNLEARN_SERVICE path): never trust its answers
        conn.close()
        return None
    conn.settimeout(ANSWER_TIMEOUT_S)
    return conn


def relay(conn: socket.socket, argv: list[str], out, err) -> int | None:
    """Say "go", then write the service's output here as it comes; its exit code (None: the
    service ended before it started the command, which is the CLI's to run then)."""
    command = f"unlearn {argv[0]}" if argv else "unlearn"
    try:
        try:
            send(conn, {"go": True})
            conn.settimeout(None)  # committed: the command may take as long as it takes
            if (receive(conn) or {}).get("started") is not True:
                return None
        except (OSError, ProtocolError):
            return None
        while True:
            try:
                message = receive(conn)
            except (OSError, ProtocolError):
                message = None
            if message is None:
                print(f"error: the unlearn service stopped during `{command}`; run the command again: it first "
                      "finishes or rolls back what the stopped run left", file=err)
                return 1
            if "exit" in message:
                return message["exit"] if isinstance(message["exit"], int) else 1
            for key, stream in (("out", out), ("err", err)):
                if key in message:
                    stream.write(str(message[key]))
                    stream.flush()
    except KeyboardInterrupt:
        print(f"interrupted: the service goes on with `{command}` to its end (its outcome: `unlearn requests "
              "list`, the ledger and MLflow)", file=err)
        return 130


# ---------------------------------------------------------------------------------------------
# the service


class Channel:
    """The client's end of one served command. Once the client stops reading for SEND_TIMEOUT_S,
    the unsent rest of the frame is kept and later output dropped, so that the command goes on to
    its end; a client that reads again still gets whole frames, a note and the exit code."""

    def __init__(self, conn: socket.socket):
        self.conn = conn
        self.lock = threading.Lock()
        self.gone = False  # the connection failed: nothing more can reach the client
        self.pending = b""  # the rest of the frame a stalled client has not taken
        self.dropped = 0  # characters of output not sent since
        self.finished = False  # the exit code is sent: later writes go to the service's own streams

    @property
    def stalled(self) -> bool:
        return bool(self.pending)

    def write(self, key: str, text: str, closed_to=None) -> None:
        """Send `text` as a frame; after finish() (the command ended) to `closed_to` instead."""
        with self.lock:
            if self.finished:
                if closed_to is not None:
                    closed_to.write(text)
                return
            if self.gone or self.pending:
                self.dropped += len(text)
                return
            try:
                self.pending = unsent_after_timeout(self.conn, frame({key: text}), SEND_TIMEOUT_S)
            except OSError:  # the client left (Ctrl-C, `| head`): the command goes on to its end
                self.gone = True

    def finish(self, code: int) -> None:
        """The end of the command, to a client still connected (it may have stopped reading)."""
        with self.lock:
            self.finished = True
            if self.gone:
                return
            note = b""
            if self.pending or self.dropped:
                note = frame({"err": f"note: this terminal did not read the service's output for "
                                     f"{SEND_TIMEOUT_S:g} s, so {self.dropped} characters of it were dropped; "
                                     "the command ran to its end\n"})
            self.conn.settimeout(FINISH_TIMEOUT_S)  # holds only this connection's thread
            try:
                self.conn.sendall(self.pending + note + frame({"exit": code}))
            except OSError:
                self.gone = True


class RequestStream:
    """A text stream whose writes go to the client as frames while the command runs, and to the
    service's own stream after it (a handler or warning that kept a reference writes there)."""

    encoding, errors = "utf-8", "replace"

    def __init__(self, channel: Channel, key: str, after):
        self.channel, self.key, self.after = channel, key, after
        self.open = True

    def write(self, text: str) -> int:
        if not self.open:
            return self.after.write(text)
        if text:  # closed meanwhile (a race with the command's end): the channel hands it to `after`
            self.channel.write(self.key, text, closed_to=self.after)
        return len(text)

    def flush(self) -> None:
        if not self.open:
            self.after.flush()

    def close_request(self) -> None:
        with self.channel.lock:
            self.open = False

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        import io

        raise io.UnsupportedOperation("the output goes to a client of the service")

    def writable(self) -> bool:
        return True


class Service:
    """The socket executor of `unlearn serve`: `execute(argv, cwd)` runs one command (parse,
    relative paths resolved against `cwd`, the command) and returns its exit code."""

    def __init__(self, root: Path, path: Path, execute: Callable[[list[str], str], int], log=None):
        self.root, self.path, self.execute = Path(root).resolve(), path, execute
        self.log = log or sys.stderr
        self.settings = project_settings()
        self.busy = threading.Lock()
        self.listener: socket.socket | None = None
        self.running: threading.Thread | None = None

    def start(self) -> "Service":
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._remove_stale()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with _reachable(self.path) as address:
            listener.bind(address)
        os.chmod(self.path, 0o600)
        listener.listen(8)
        self.listener = listener
        threading.Thread(target=self._accept, name="unlearn-service", daemon=True).start()
        return self

    def _remove_stale(self) -> None:
        """A socket file nobody listens on (a killed service) is replaced; a live one is not, nor
        anything that is not a socket (a mistyped UNLEARN_SERVICE must not delete a file)."""
        from unlearning.errors import UnlearnError

        try:
            if not stat.S_ISSOCK(os.lstat(self.path).st_mode):
                raise UnlearnError(f"{self.path} exists and is not a socket; point {SERVICE_ENV} at a free path")
        except FileNotFoundError:
            return
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(CONNECT_TIMEOUT_S)
        try:
            with _reachable(self.path) as address:
                probe.connect(address)
        except OSError:
            self.path.unlink()
            return
        finally:
            probe.close()
        busy = UnlearnError(f"another `unlearn serve` already serves this project on {self.path}; stop it first, "
                            f"or give this one another socket with {SERVICE_ENV}=PATH")
        busy.exit_code = 1  # not bad input: the other service does the work
        raise busy

    def stop(self) -> None:
        """No new command; the one in progress finishes first (Ctrl-C again stops waiting)."""
        if self.listener is not None:
            self.listener.close()
            self.listener = None
            self.path.unlink(missing_ok=True)
        running = self.running
        if running is not None and running.is_alive():
            print("serve: waiting for the command in progress to finish", file=self.log)
            running.join()

    def _accept(self) -> None:
        while self.listener is not None:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed by stop()
            threading.Thread(target=self._serve, args=(conn,), name="unlearn-command", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            if _peer_uid(conn) not in (None, os.getuid()):
                self._refuse(conn, "the service runs commands for its own user only")
                return
            try:
                conn.settimeout(HANDSHAKE_TIMEOUT_S)
                request = receive(conn, MAX_REQUEST_BYTES)
                if request is None:
                    return
                problem = self.refusal(request)
                if problem:
                    send(conn, {"declined": problem, "note": not problem.startswith("busy")})
                    return
            except (OSError, ProtocolError) as exc:
                self._refuse(conn, str(exc))
                return
            try:  # holding `busy` from here on
                self.running = threading.current_thread()
                send(conn, {"accepted": True})
                if (receive(conn, MAX_REQUEST_BYTES) or {}).get("go") is not True:
                    return
                send(conn, {"started": True})
                conn.settimeout(SEND_TIMEOUT_S)
                code, channel = self._run(conn, request)
            except (OSError, ProtocolError):
                return
            finally:
                self.running = None
                self.busy.release()
            channel.finish(code)  # free before the client hears the end: its next command is served too

    def _refuse(self, conn: socket.socket, why: str) -> None:
        print(f"serve: refused a connection: {why}", file=self.log)
        try:
            send(conn, {"declined": f"refused: {why}", "note": True})
        except OSError:
            pass

    def refusal(self, request: dict) -> str | None:
        """Why this request is not run here (None: it is, and `busy` is now held)."""
        problem = malformed(request)
        if problem:
            return f"refused: {problem}"
        if Path(request["root"]).resolve() != self.root:
            return f"the unlearn service at {self.path} serves the project {self.root}, not {request['root']}"
        differ = sorted(k for k, v in self.settings.items() if request["settings"].get(k) != v)
        if differ:
            return (f"the unlearn service at {self.path} runs with other {', '.join(differ)} than this shell "
                    "(restart `unlearn serve` with the same settings to use it)")
        if not self.busy.acquire(blocking=False):
            return "busy"
        return None

    def _run(self, conn: socket.socket, request: dict) -> tuple[int, Channel]:
        """The command's exit code, and the channel its output went through."""
        channel = Channel(conn)
        out = RequestStream(channel, "out", sys.__stdout__)
        err = RequestStream(channel, "err", sys.__stderr__)
        started, code = time.monotonic(), 1
        with isolated(request["env"], out, err):
            try:
                code = self.execute(request["argv"], request["cwd"])
            except SystemExit as done:  # argparse: --help, a usage error
                code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
                if done.code is not None and not isinstance(done.code, int):
                    print(done.code, file=err)
            except Exception:  # what a local run would print as a traceback, exit 1
                import traceback

                traceback.print_exc(file=err)
                code = 1
        out.close_request()
        err.close_request()
        client = " (the client had left)" if channel.gone else " (the client stopped reading)" if channel.stalled else ""
        print(f"serve: `unlearn {request['argv'][0]}` → exit {code}{client} in "
              f"{time.monotonic() - started:.2f} s", file=self.log)
        return code, channel


def malformed(request: dict) -> str | None:
    """What makes a request not one the CLI sends (None: well formed)."""
    if set(request) != {"argv", "cwd", "root", "env", "settings"}:
        return "unexpected fields"
    argv, env, settings = request["argv"], request["env"], request["settings"]
    if not (isinstance(argv, list) and argv and all(isinstance(a, str) and len(a) <= MAX_ARG_CHARS
                                                   and "\0" not in a for a in argv)):
        return "argv is not a list of strings"
    if argv[0] not in DELEGATED:
        return f"the service runs only {', '.join(DELEGATED)}"
    if not all(isinstance(request[k], str) and os.path.isabs(request[k]) for k in ("cwd", "root")):
        return "cwd and root must be absolute paths"
    if not (isinstance(env, dict) and set(env) <= set(REQUEST_ENV) and all(isinstance(v, str) for v in env.values())):
        return f"env may carry only {', '.join(REQUEST_ENV)}"
    if not (isinstance(settings, dict) and all(isinstance(v, str) for v in settings.values())):
        return "settings are not digests"
    return None


def _peer_uid(conn: socket.socket) -> int | None:
    """The connecting process's user id, from the kernel (Linux); None where it cannot say."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    creds = conn.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


@contextmanager
def isolated(env: dict[str, str], out, err):
    """One command's process-wide state: the client's REQUEST_ENV values and output streams in,
    and afterwards the environment, working folder, temp folder, streams and the handlers of
    every logger as they were before (a command must leave nothing to the next one)."""
    import logging
    import tempfile

    environ, cwd, tempdir = dict(os.environ), os.getcwd(), tempfile.tempdir
    streams = sys.stdout, sys.stderr
    loggers = [logging.getLogger(), *(x for x in list(logging.Logger.manager.loggerDict.values())
                                      if isinstance(x, logging.Logger))]
    handlers = {id(x): list(x.handlers) for x in loggers}
    for key in REQUEST_ENV:
        os.environ.pop(key, None)
    os.environ.update(env)
    sys.stdout, sys.stderr = out, err
    try:
        yield
    finally:
        sys.stdout, sys.stderr = streams
        for key in set(os.environ) - set(environ):
            del os.environ[key]
        os.environ.update({k: v for k, v in environ.items() if os.environ.get(k) != v})
        if os.getcwd() != cwd:
            os.chdir(cwd)
        tempfile.tempdir = tempdir
        for x in loggers:
            x.handlers[:] = handlers[id(x)]
        steps = sys.modules.get("tasks.steps")
        if steps is not None:  # a plan validated but not taken (the command stopped before its flow)
            steps.forget_validated_plans()
        for name in [m for m in sys.modules if m.startswith("code_model_")]:
            # MLflow imports a logged model's code under a new module name each time (models from
            # code): one per command, kept for the service's lifetime unless dropped
            del sys.modules[name]


# ---------------------------------------------------------------------------------------------
# `unlearn serve`

# Imported (and their clients set up) before the service says it is ready: what a command would
# otherwise import on its first call. The kinds' heavy stacks load here once, not per command.
WARM_MODULES = ("flows.forget", "flows.comply", "flows.audit", "tasks.steps", "tasks.release", "tasks.ledger",
                "tasks.tracking", "tasks.dvc", "tasks.kinds.tabular", "tasks.kinds.text", "tasks.kinds.images",
                # what a first command still imported (measured): ~1.5 s of its first call
                "dvc.repo", "scmrepo.git", "git", "prefect.flow_engine", "prefect.task_engine", "mlflow.pyfunc",
                "mlflow.models", "pandas.io.parsers", "pyarrow.pandas_compat",
                # and then what `dvc add`, the registry and the CSV writer import on first use (449
                # modules, measured: ~0.5 s of the first forget beyond the second's)
                "dvc.repo.add", "dvc.repo.index", "dvc.repo.graph", "dvc.repo.stage", "dvc.repo.worktree",
                "dvc.repo.brancher", "dvc.repo.plots", "dvc.repo.metrics", "dvc.repo.params", "dvc.repo.artifacts",
                "dvc.repo.datasets", "dvc.repo.trie", "dvc.lock", "dvc.rwlock", "dvc.cachemgr", "dvc.data_cloud",
                "dvc.dirs", "dvc.scm", "dvc.utils.strictyaml", "dvc_data.index.checkout", "dvc_data.index.collect",
                "dvc_data.index.fetch", "dvc_data.index.push", "dvc_data.hashfile.db.local",
                "dvc_data.hashfile.db.index", "dvc_data.hashfile.status", "dulwich.index", "dulwich.worktree",
                "scmrepo.noscm", "networkx", "pandas.io.formats.csvs", "mlflow.store.model_registry.sqlalchemy_store",
                "mlflow.models.display_utils", "prefect.utilities.visualization", "torch.utils.serialization",
                "anyio.streams.memory", "rich.status")


@contextmanager
def scheduled_runs_with_service_env(baseline: dict[str, str | None]):
    """Prefect 3.8's runner starts each scheduled flow run of a served deployment (the nightly
    comply, the weekly audit) as `python -m prefect.engine` through EngineCommandStarter, whose
    child environment is os.environ as it is at that moment — during a served command, that
    command's client settings and its temp folder (removed when it ends). Give the starters the
    runner makes the service's own values (None: unset), whatever command is running."""
    from prefect.runner import runner

    starter = runner.EngineCommandStarter

    class StarterWithServiceEnv(starter):
        def __init__(self, *args, env: dict[str, str | None] | None = None, **kwargs):
            super().__init__(*args, env={**baseline, **(env or {})}, **kwargs)

    runner.EngineCommandStarter = StarterWithServiceEnv
    try:
        yield
    finally:
        runner.EngineCommandStarter = starter


def service_env() -> dict[str, str | None]:
    """COMMAND_ENV as the service itself has it (read while no command runs: at its start)."""
    return {key: os.environ.get(key) for key in COMMAND_ENV}


def serve_commands(root: Path, run: Callable[[list[str], str], int]) -> Service | None:
    """Warm up, listen on the project's socket and say so on one line (`serve: ready …`, which
    scripts wait for); None where UNLEARN_SERVICE=off. `run(argv, cwd)` runs one command as the
    CLI would (flows.cli.run_forwarded: the CLI hands itself in, so this module never imports it)."""
    path = socket_path(root)
    if path is None:
        print(f"serve: {SERVICE_ENV}=off: the CLI runs its commands itself", file=sys.stderr)
        return None
    started = time.monotonic()
    warm_up(Path(root))
    service = Service(root, path, run).start()
    print(f"serve: ready in {time.monotonic() - started:.1f} s — `unlearn forget`, `comply` and `audit` in this "
          f"project run here ({path})", file=sys.stderr)
    return service


def warm_up(root: Path) -> None:
    """Import what the commands use and open the Prefect and MLflow clients once."""
    import importlib

    for name in WARM_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:  # a module a command may never need (a kind's optional stack)
            pass
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:  # starts the temporary server if no PREFECT_API_URL
        client.api_healthcheck()
        # the version check every process's first flow run makes (one per API URL, ~0.4 s)
        client.raise_for_api_version_mismatch_once()
    warm_linear_algebra()
    if (root / ".dvc").is_dir():
        from tasks import dvc

        with dvc._open(root) as repo:  # its config, site cache and stage index, as `dvc add` reads them
            repo.index
    from tasks import tracking

    if tracking.store_exists(root):
        from mlflow import MlflowClient

        tracking.connect(root)
        MlflowClient().search_experiments(max_results=1)
        tracking.registered_model_names()  # the registry's store, opened on first use


def warm_linear_algebra() -> None:
    """torch loads its LAPACK routines on first use (measured: ~0.3 s of the first forget's model
    cache, in eigvalsh and the matrix norm): use each once on a tiny matrix."""
    import torch

    for dtype in (torch.float32, torch.float64):
        a = torch.eye(4, dtype=dtype) * 2
        torch.linalg.eigvalsh(a), torch.linalg.matrix_norm(a, ord=2), torch.linalg.cholesky(a)
        torch.linalg.solve(a, a), torch.linalg.solve_triangular(a, a, upper=False)
        torch.cholesky_solve(a, torch.linalg.cholesky(a))
