"""The wire between the CLI and `unlearn serve` (flows/service.py: the warm path): where the socket
is, the settings a client and the service must share, and the frames.

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

Stdlib only: the CLI imports it on every call.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
import time
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
               "UNLEARN_SALT", "UNLEARNFLOW_PLUGINS", "PREFECT_API_URL")
# The packages whose files make up "the code" a service runs (see code_digest).
CODE_PACKAGES = ("flows", "tasks", "unlearning")
MAX_REQUEST_BYTES = 64 * 1024  # an argv and a few settings; anything longer is not from the CLI
CONNECT_TIMEOUT_S = 2.0
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
    values["UNLEARNFLOW_PLUGINS"] = plugin_files(values["UNLEARNFLOW_PLUGINS"])
    # the user's MLflow store as tasks.tracking.tracking_uri reads it (UNLEARN_TRACKING_URI: what
    # configure_environment recorded before MLflow rewrote MLFLOW_TRACKING_URI)
    values["MLFLOW_TRACKING_URI"] = os.environ.get("UNLEARN_TRACKING_URI", os.environ.get("MLFLOW_TRACKING_URI", ""))
    values["code"] = code_digest()
    return {key: hashlib.sha256(f"{key}={value}".encode()).hexdigest()[:32] for key, value in values.items()}


def plugin_files(setting: str | None) -> str | None:
    """UNLEARNFLOW_PLUGINS as the files it names: a relative `.py` path is a file of the folder the
    process runs in (unlearning.registry.load_plugins resolves it there; the service never changes
    folder), so `plugins/m.py` in a client's folder and in the service's are two plugins, which
    compared as one string they were: the client's command ran the service's file."""
    if not setting:
        return setting
    entries = (e.strip() for e in setting.split(","))
    return ",".join(str(Path(e).expanduser().resolve()) if e.endswith(".py") else e for e in entries if e)


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
def reachable(path: Path):
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


def peer_uid(conn: socket.socket) -> int | None:
    """The connecting process's user id, from the kernel (Linux); None where it cannot say."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    creds = conn.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]
