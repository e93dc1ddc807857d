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

The client is here (stdlib only, nothing heavy imported); the frames and shared settings are
flows/service_protocol.py, the service's end flows/service_server.py, and `unlearn serve`'s warm
process flows/service_warm.py.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from flows.service_protocol import (CONNECT_TIMEOUT_S, MAX_REQUEST_BYTES, REQUEST_ENV, ProtocolError, peer_uid,
                                    project_settings, reachable, receive, send, socket_path)

ANSWER_TIMEOUT_S = 10.0  # the client's wait for "accepted"; past it the command runs locally


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
        with reachable(path) as address:
            conn.connect(address)
    except OSError:  # no listener (a socket file a killed service left), no permission, a timeout
        conn.close()
        return None
    if peer_uid(conn) not in (None, os.getuid()):
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
