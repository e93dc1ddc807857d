"""The service's end of the socket (flows/service.py: the warm path; flows/service_protocol.py: the
frames): `Service` accepts connections, checks each request and runs one command at a time.

The service runs one command at a time, each in a fresh thread (thread-local state such as
MLflow's active run starts empty), with sys.stdout/stderr sent to the client, the client's
per-command settings (REQUEST_ENV) applied, and the process's environment, working folder, temp
folder and logging handlers put back afterwards.
"""

from __future__ import annotations

import os
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from flows.service_protocol import (CONNECT_TIMEOUT_S, DELEGATED, MAX_REQUEST_BYTES, REQUEST_ENV, SERVICE_ENV,
                                    ProtocolError, frame, peer_uid, project_settings, reachable, receive, send,
                                    unsent_after_timeout)

MAX_ARG_CHARS = 4096
HANDSHAKE_TIMEOUT_S = 5.0  # the service's wait for a request and for "go"
# The longest one frame of output may wait for a client that stopped reading (a full socket
# buffer: a terminal paused, a pipe nobody drains): past it the client counts as gone and the
# command goes on to its end without it, instead of holding the project lock for ever.
SEND_TIMEOUT_S = 60.0
# How long the end of a command (the rest of a frame cut short, a note, the exit code) waits for
# such a client to read again: a terminal resumed after a pause then still hears how it ended.
# The wait holds only the connection's own thread, never the project lock.
FINISH_TIMEOUT_S = 600.0


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
        with reachable(self.path) as address:
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
            with reachable(self.path) as address:
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
            if peer_uid(conn) not in (None, os.getuid()):
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
