"""The socket between the CLI and `unlearn serve` (flows/service*.py): a command's output and exit
code come back as they were written; nothing a command changes in the service's process outlives
it; a socket nobody answers on, a silent one, a busy or a different service leave the command to
the CLI; a service that dies during a command is reported in one line; hostile or oversized
messages are refused without running anything.

The service here is the real one with a stand-in for the CLI's commands (the real commands run
through a real `unlearn serve` in tests/flows/test_service.py)."""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest

from flows import service, service_protocol as protocol, service_server as server, service_warm as warm
from unlearning.errors import UnlearnError

ARGV = ["forget", "request.yaml", "--json"]
THREAD_STATE = threading.local()


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    monkeypatch.delenv(protocol.SERVICE_ENV, raising=False)
    for key in (*protocol.REQUEST_ENV, *protocol.PROJECT_ENV, "UNLEARN_TRACKING_URI"):
        monkeypatch.delenv(key, raising=False)
    return tmp_path


class Recorder:
    """A stand-in command: records what it was given, writes, and returns `code`."""

    def __init__(self, code: int = 0, body=None):
        self.code, self.body, self.calls = code, body, []

    def __call__(self, argv: list[str], cwd: str) -> int:
        import sys

        self.calls.append((argv, cwd, dict(os.environ)))
        print(json.dumps({"argv": argv}))
        print("progress line", file=sys.stderr)
        if self.body:
            self.body()
        return self.code


@pytest.fixture
def served(root):
    running = []

    def start(command) -> server.Service:
        running.append(server.Service(root, root / protocol.SOCKET, command, log=open(os.devnull, "w")).start())
        return running[-1]

    yield start
    for s in running:
        s.stop()


def test_a_command_comes_back_with_its_output_and_exit_code(root, served, capsys, monkeypatch):
    command = Recorder(code=3)
    served(command)
    monkeypatch.setenv("UNLEARN_KEEP_SUPERSEDED_DAYS", "7")
    assert service.hand_over(ARGV, root) == 3
    out, err = capsys.readouterr()
    assert json.loads(out) == {"argv": ARGV} and err == "progress line\n"
    ((argv, cwd, env),) = command.calls
    assert argv == ARGV and cwd == os.getcwd() and env["UNLEARN_KEEP_SUPERSEDED_DAYS"] == "7"
    mode = (root / protocol.SOCKET).stat().st_mode & 0o777
    assert mode == 0o600


def test_nothing_a_command_changes_in_the_service_outlives_it(root, served, capsys, monkeypatch):
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setenv("UNLEARN_TASK_RUNNER", "dask")  # the service's own value: the client has none
    logger = logging.getLogger("prefect.flow_runs")
    before = {"env": dict(os.environ), "cwd": os.getcwd(), "tempdir": tempfile.tempdir,
              "handlers": list(logger.handlers), "root_handlers": list(logging.getLogger().handlers)}
    leaked: list[logging.Handler] = []
    seen_active_run = []

    def changes_everything():
        # thread-local state (MLflow's active run stack is one) starts empty for every command
        seen_active_run.append(getattr(THREAD_STATE, "active_run", None))
        THREAD_STATE.active_run = "left open by the command before"
        os.environ["TMPDIR"] = str(elsewhere)  # as flows.settings.private_tempdir does
        os.environ["MLFLOW_TRACKING_URI"] = "sqlite:///elsewhere.db"
        os.chdir(elsewhere)
        tempfile.tempdir = str(elsewhere)
        leaked.append(logging.StreamHandler())  # bound to the command's stderr: the client
        logger.addHandler(leaked[-1])
        logging.getLogger().addHandler(logging.NullHandler())

    command = Recorder(body=changes_everything)
    served(command)
    with monkeypatch.context() as client_env:
        client_env.delenv("UNLEARN_TASK_RUNNER")
        assert service.hand_over(ARGV, root) == 0
        assert service.hand_over(ARGV, root) == 0
    assert seen_active_run == [None, None]
    assert "UNLEARN_TASK_RUNNER" not in command.calls[0][2]  # the client's settings, not the service's
    assert command.calls[1][2].get("TMPDIR") == before["env"].get("TMPDIR")  # the second saw none of the first
    assert dict(os.environ) == before["env"] and os.getcwd() == before["cwd"]
    assert tempfile.tempdir == before["tempdir"]
    assert logger.handlers == before["handlers"] and logging.getLogger().handlers == before["root_handlers"]
    # a handler that kept the command's stream writes to the service's own stream, not the client
    leaked[0].emit(logging.LogRecord("x", logging.WARNING, __file__, 1, "after the command", None, None))
    capsys.readouterr()
    assert service.hand_over(ARGV, root) == 0
    assert "after the command" not in capsys.readouterr().err


def test_a_socket_left_by_a_killed_service_leaves_the_command_to_the_cli_at_once(root, capsys):
    path = root / protocol.SOCKET
    path.parent.mkdir()
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # the file stays, as after kill -9
    started = time.monotonic()
    assert service.hand_over(ARGV, root) is None
    assert time.monotonic() - started < 1.0
    assert capsys.readouterr() == ("", "")
    restarted = server.Service(root, path, Recorder(), log=open(os.devnull, "w")).start()  # replaces it
    try:
        assert service.hand_over(ARGV, root) == 0
    finally:
        restarted.stop()
    assert not path.exists()


def test_a_service_that_never_answers_is_given_up_within_the_timeout(root, capsys, monkeypatch):
    monkeypatch.setattr(service, "ANSWER_TIMEOUT_S", 0.5)
    path = root / protocol.SOCKET
    path.parent.mkdir()
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stuck.bind(str(path))
    stuck.listen(1)  # a stopped (SIGSTOP) service: connections queue, nothing is read
    try:
        started = time.monotonic()
        assert service.hand_over(ARGV, root) is None
        assert time.monotonic() - started < 3.0
    finally:
        stuck.close()
    assert capsys.readouterr() == ("", "")


def fake_service(path: Path, script) -> threading.Thread:
    """A listener that follows `script(conn)` for one connection: a service that dies on cue."""
    path.parent.mkdir(exist_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def one():
        conn, _ = listener.accept()
        with conn, listener:
            protocol.receive(conn)
            script(conn)

    thread = threading.Thread(target=one, daemon=True)
    thread.start()
    return thread


def test_a_service_that_dies_during_the_command_gives_one_line_and_exit_1(root, capsys):
    def dies_after_starting(conn):
        protocol.send(conn, {"accepted": True})
        protocol.receive(conn)
        protocol.send(conn, {"started": True})
        protocol.send(conn, {"err": "half a line"})

    fake_service(root / protocol.SOCKET, dies_after_starting)
    assert service.hand_over(ARGV, root) == 1
    err = capsys.readouterr().err.removeprefix("half a line")
    assert err.count("\n") == 1 and err.startswith("error: the unlearn service stopped during `unlearn forget`")


def test_a_service_that_dies_before_starting_the_command_leaves_it_to_the_cli(root, capsys):
    def dies_before_starting(conn):
        protocol.send(conn, {"accepted": True})
        protocol.receive(conn)  # the client's "go", then gone without running anything

    fake_service(root / protocol.SOCKET, dies_before_starting)
    assert service.hand_over(ARGV, root) is None
    assert capsys.readouterr() == ("", "")


def raw_exchange(path: Path, payload: bytes) -> dict | None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(10)
        conn.connect(str(path))
        conn.sendall(payload)
        return protocol.receive(conn)


def framed(message) -> bytes:
    data = json.dumps(message).encode()
    return protocol.HEADER.pack(len(data)) + data


def request(root: Path, **changes) -> dict:
    return {"argv": ARGV, "cwd": str(root), "root": str(root), "env": {}, "settings": protocol.project_settings(),
            **changes}


@pytest.mark.parametrize("payload, says", [
    (protocol.HEADER.pack(protocol.MAX_REQUEST_BYTES + 1) + b"{}", "limit"),
    (protocol.HEADER.pack(9) + b"not json!", "not JSON"),
    (framed(["forget", "x.yaml"]), "not a JSON object"),
    (lambda root: framed({**request(root), "extra": 1}), "unexpected fields"),
    (lambda root: framed(request(root, argv=["data", "add", "adult"])), "runs only forget, comply, audit"),
    (lambda root: framed(request(root, argv=["forget", "x" * 5000])), "not a list of strings"),
    (lambda root: framed(request(root, cwd="relative")), "absolute"),
    (lambda root: framed(request(root, env={"LD_PRELOAD": "/tmp/x.so"})), "env may carry only"),
])
def test_hostile_or_oversized_messages_are_refused_and_run_nothing(root, served, payload, says):
    command = Recorder()
    served(command)
    answer = raw_exchange(root / protocol.SOCKET, payload(root) if callable(payload) else payload)
    assert "accepted" not in answer and says in answer["declined"]
    assert command.calls == []


def test_a_request_for_another_project_or_other_settings_runs_here_with_a_note(root, served, capsys, monkeypatch):
    command = Recorder()
    served(command)
    other = root / "other"
    other.mkdir()
    monkeypatch.setenv(protocol.SERVICE_ENV, str(root / protocol.SOCKET))  # pointed at this project's service
    assert service.hand_over(ARGV, other) is None
    assert f"serves the project {root}" in capsys.readouterr().err
    monkeypatch.setenv("UNLEARN_LEDGER_URL", "sqlite:///elsewhere.db")
    assert service.hand_over(ARGV, root) is None
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "other UNLEARN_LEDGER_URL" in err and "elsewhere" not in err
    assert command.calls == []


def test_a_plugin_named_by_a_relative_path_is_the_file_of_the_folder_it_is_named_in(root, served, capsys,
                                                                                    monkeypatch):
    """`UNLEARNFLOW_PLUGINS=plugins/m.py` names the service's file in its folder and the client's in
    another: compared as a string, the client's command ran in the service with the service's file."""
    for folder in (root, root / "elsewhere"):
        (folder / "plugins").mkdir(parents=True)
        (folder / "plugins" / "m.py").write_text(f"# the methods of {folder.name}\n")
    monkeypatch.chdir(root)
    monkeypatch.setenv("UNLEARNFLOW_PLUGINS", "plugins/m.py")
    command = Recorder()
    served(command)  # reads its settings here, in the project's folder
    monkeypatch.setenv(protocol.SERVICE_ENV, str(root / protocol.SOCKET))
    monkeypatch.chdir(root / "elsewhere")
    assert service.hand_over(ARGV, root) is None
    assert "other UNLEARNFLOW_PLUGINS" in capsys.readouterr().err and command.calls == []
    monkeypatch.setenv("UNLEARNFLOW_PLUGINS", str(root / "plugins" / "m.py"))  # the same file, named absolutely
    assert service.hand_over(ARGV, root) == 0 and len(command.calls) == 1


def test_a_busy_service_leaves_the_command_to_the_cli_which_meets_the_project_lock(root, served, capsys):
    release = threading.Event()
    command = Recorder(body=lambda: release.wait(30))
    served(command)
    first = threading.Thread(target=service.hand_over, args=(ARGV, root))
    first.start()
    try:
        deadline = time.monotonic() + 10
        while not command.calls and time.monotonic() < deadline:
            time.sleep(0.02)
        assert raw_exchange(root / protocol.SOCKET, framed(request(root))) == {"declined": "busy", "note": False}
        assert service.hand_over(ARGV, root) is None  # silently: the local run says what the lock says
    finally:
        release.set()
        first.join(10)
    assert len(command.calls) == 1


def test_where_the_cli_looks_for_the_service(root, monkeypatch):
    assert protocol.socket_path(root) == root / ".unlearn" / "service.sock"
    monkeypatch.setenv(protocol.SERVICE_ENV, "off")
    assert protocol.socket_path(root) is None and service.hand_over(ARGV, root) is None
    monkeypatch.setenv(protocol.SERVICE_ENV, "/run/unlearn/project.sock")
    assert protocol.socket_path(root) == Path("/run/unlearn/project.sock")


def test_a_second_service_on_a_live_socket_is_refused(root, served):
    served(Recorder())
    with pytest.raises(UnlearnError, match="another `unlearn serve` already serves this project") as refused:
        server.Service(root, root / protocol.SOCKET, Recorder()).start()
    assert refused.value.exit_code == 1


CLIENT = """
import sys
from pathlib import Path
from flows import service
sys.exit(service.hand_over(["forget", "request.yaml"], Path(sys.argv[1])))
"""


def test_ctrl_c_in_the_cli_leaves_the_command_to_run_to_its_end_in_the_service(root, served):
    import signal
    import subprocess
    import sys

    from tests.services import child_env, ctrl_c_as_in_a_terminal

    started, release, finished = threading.Event(), threading.Event(), []

    def long_command():
        started.set()
        release.wait(30)
        print("written after the client left")  # dropped: nobody reads it
        finished.append(True)

    served(Recorder(body=long_command))
    client = subprocess.Popen([sys.executable, "-c", CLIENT, str(root)], env=child_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              preexec_fn=ctrl_c_as_in_a_terminal)
    try:
        assert started.wait(30)
        assert client.stderr.readline() == "progress line\n"  # relayed: the command is under way
        client.send_signal(signal.SIGINT)
        out, err = client.communicate(timeout=30)
    finally:
        release.set()
    assert client.returncode == 130
    (interrupted,) = err.splitlines()
    assert interrupted.startswith("interrupted: the service goes on with `unlearn forget` to its end")
    deadline = time.monotonic() + 10
    while not finished and time.monotonic() < deadline:
        time.sleep(0.02)
    assert finished == [True]


def test_a_path_that_is_not_a_socket_is_never_replaced(root, monkeypatch):
    precious = root / "records.csv"
    precious.write_text("id,name\n")
    monkeypatch.setenv(protocol.SERVICE_ENV, str(precious))  # a mistyped setting
    with pytest.raises(UnlearnError, match="is not a socket"):
        server.Service(root, protocol.socket_path(root), Recorder()).start()
    assert precious.read_text() == "id,name\n"


def test_commands_run_back_to_back_are_all_served(root, served, capsys):
    """The service is free again before a client hears its command's end: a script's next
    command is not sent off to run locally as if the service were busy."""
    command = Recorder()
    served(command)
    assert [service.hand_over(ARGV, root) for _ in range(200)] == [0] * 200
    assert len(command.calls) == 200


def test_the_mlflow_store_is_compared_as_the_commands_will_read_it(root, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking:5000")
    client = protocol.project_settings()  # a shell: the user's value only
    monkeypatch.setenv("UNLEARN_TRACKING_URI", "http://tracking:5000")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///rewritten-by-mlflow.db")
    assert protocol.project_settings() == client  # the service, after MLflow rewrote the variable
    monkeypatch.setenv("UNLEARN_TRACKING_URI", "")
    assert protocol.project_settings()["MLFLOW_TRACKING_URI"] != client["MLFLOW_TRACKING_URI"]


CLI = """
import sys
from flows.cli import main
code = main(["forget", "request.yaml", "--json"])
print(sorted(m for m in ("torch", "prefect", "mlflow", "pandas", "numpy", "dvc", "sqlalchemy", "pydantic")
             if m in sys.modules), file=sys.stderr)
sys.exit(code)
"""


def test_the_cli_hands_a_command_over_without_importing_the_stack(root, served):
    """`unlearn forget` with a service running: argparse, a socket and JSON — none of torch,
    Prefect, MLflow, pandas (seconds of imports) on the client's side."""
    import subprocess
    import sys

    from tests.services import child_env

    command = Recorder(code=0)
    served(command)
    done = subprocess.run([sys.executable, "-c", CLI], env=child_env(UNLEARN_ROOT=str(root)), cwd=root,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"argv": ARGV} and command.calls[0][1] == str(root)
    assert done.stderr.splitlines() == ["progress line", "[]"]


def test_a_project_deeper_than_a_socket_address_holds_is_served(root, capsys):
    """AF_UNIX addresses hold ~108 bytes; a project path may be longer."""
    deep = root / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    assert len(str(deep / protocol.SOCKET)) > 108
    running = server.Service(deep, deep / protocol.SOCKET, Recorder(code=5), log=open(os.devnull, "w")).start()
    try:
        assert service.hand_over(ARGV, deep) == 5
    finally:
        running.stop()
    assert os.getcwd() != str(deep / ".unlearn")


def test_a_socket_another_user_listens_on_is_never_trusted(root, served, capsys, monkeypatch):
    """The CLI checks the listener too: a socket held by another user (a shared UNLEARN_SERVICE
    path) gets neither the command nor the settings digests, and the CLI runs the command itself."""
    command = Recorder(code=0)
    served(command)
    for side in (service, server):  # the CLI's check of the listener, and the service's of its caller
        monkeypatch.setattr(side, "peer_uid", lambda conn: os.getuid() + 1)
    assert service.hand_over(ARGV, root) is None
    assert command.calls == [] and capsys.readouterr() == ("", "")


def test_a_service_started_before_the_code_changed_leaves_the_command_to_the_cli(root, served, capsys, monkeypatch):
    """A `git pull` (or a reinstall) into the same path after `unlearn serve` started: the client
    has the new code, the service still runs the old, so the command runs here."""
    code = root / "install"
    for package in protocol.CODE_PACKAGES:
        (code / package).mkdir(parents=True)
        (code / package / "__init__.py").write_text("")
    module = code / "unlearning" / "methods.py"
    module.write_text("STEP = 1\n")
    monkeypatch.setattr(protocol, "code_digest", lambda base=code, real=protocol.code_digest: real(base))
    command = Recorder()
    served(command)
    assert service.hand_over(ARGV, root) == 0  # the same code: served
    capsys.readouterr()
    module.write_text("STEP = 22\n")  # pulled: another size (and time)
    assert service.hand_over(ARGV, root) is None
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "other code" in err and "restart `unlearn serve`" in err
    assert len(command.calls) == 1


def test_the_code_digest_follows_every_module_file(tmp_path):
    for package in protocol.CODE_PACKAGES:
        (tmp_path / package).mkdir()
    module = tmp_path / "tasks" / "kinds.py"
    module.write_text("A = 1\n")
    first = protocol.code_digest(tmp_path)
    assert protocol.code_digest(tmp_path) == first
    os.utime(module, ns=(module.stat().st_atime_ns, module.stat().st_mtime_ns + 1_000_000))
    touched = protocol.code_digest(tmp_path)
    assert touched != first
    (tmp_path / "flows" / "new.py").write_text("")
    assert protocol.code_digest(tmp_path) not in (first, touched)


def test_a_client_with_another_prefect_server_runs_its_command_itself(root, served, capsys, monkeypatch):
    """Its flow runs belong in the Prefect server it is configured for, not the service's."""
    command = Recorder()
    served(command)
    monkeypatch.setenv("PREFECT_API_URL", "http://prefect.internal:4200/api")
    assert service.hand_over(ARGV, root) is None
    err = capsys.readouterr().err
    assert "other PREFECT_API_URL" in err and "prefect.internal" not in err
    assert command.calls == []


def flooding_command_started(root, served, sock: socket.socket) -> threading.Event:
    """Serve a command printing 2000 lines of 4 kB (far more than a socket buffer holds), start it
    for `sock`, which then reads nothing; the event is set once the command has printed it all."""
    done = threading.Event()

    def flood():
        for _ in range(2000):
            print("x" * 4096)
        done.set()

    served(Recorder(body=flood))
    sock.settimeout(30)
    sock.connect(str(root / protocol.SOCKET))
    sock.sendall(framed(request(root)))
    assert protocol.receive(sock) == {"accepted": True}
    sock.sendall(framed({"go": True}))
    return done


def test_a_client_that_stops_reading_does_not_hold_the_service(root, served, monkeypatch):
    """A client that says "go" and then never reads: once its socket buffer is full the output
    waits SEND_TIMEOUT_S at most, the command runs to its end, and the next command is served."""
    monkeypatch.setattr(server, "SEND_TIMEOUT_S", 0.5)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stalled:
        done = flooding_command_started(root, served, stalled)
        assert done.wait(30), "the command waited for a client that does not read"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            answer = raw_exchange(root / protocol.SOCKET, framed(request(root)))
            if answer != {"declined": "busy", "note": False}:
                break
            time.sleep(0.05)
        assert answer == {"accepted": True}


def test_a_client_that_reads_again_after_a_pause_hears_how_the_command_ended(root, served, monkeypatch):
    """A terminal paused (Ctrl-S, a suspended pager) past SEND_TIMEOUT_S and then resumed: the frame
    cut short is completed, the dropped output is said in a note, and the exit code arrives, instead
    of a broken frame the client would read as "the service stopped, run the command again"."""
    monkeypatch.setattr(server, "SEND_TIMEOUT_S", 0.5)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as paused:
        done = flooding_command_started(root, served, paused)
        assert done.wait(30), "the command waited for a client that does not read"
        time.sleep(0.2)  # the command's end is now waiting on this client
        frames = []
        while (message := protocol.receive(paused)) is not None:  # a broken frame raises ProtocolError
            frames.append(message)
    assert frames[0] == {"started": True} and frames[-1] == {"exit": 0}
    delivered = "".join(f.get("out", "") for f in frames)
    notes = [f["err"] for f in frames if f.get("err", "").startswith("note:")]
    assert len(notes) == 1 and "characters of it were dropped" in notes[0] and "ran to its end" in notes[0]
    dropped = int(notes[0].split(" characters")[0].rsplit(" ", 1)[1])
    written = len(delivered.split("\n", 1)[0]) + 1 + 2000 * 4097  # the Recorder's own line, then the flood
    assert 0 < len(delivered) < written and len(delivered) + dropped == written


def test_a_frame_gets_one_deadline_however_slowly_the_client_reads():
    """A client taking a few bytes at a time never lets a send time out on its own; the frame as a
    whole still gives up at its deadline, so the command (and the project lock) is never held by it."""
    ours, theirs = socket.socketpair()
    stop = threading.Event()

    def trickle():
        while not stop.is_set():
            theirs.recv(4096)
            time.sleep(0.05)

    reader = threading.Thread(target=trickle, daemon=True)
    reader.start()
    started = time.monotonic()
    try:
        rest = protocol.unsent_after_timeout(ours, b"x" * (8 << 20), 0.5)  # ~100 s at this pace
    finally:
        stop.set()
    assert rest and time.monotonic() - started < 5
    ours.close()
    theirs.close()


def test_a_scheduled_run_started_during_a_served_command_gets_the_services_settings(root, monkeypatch):
    """The runner starts a served deployment's scheduled run through EngineCommandStarter, whose
    child environment is os.environ at that moment; during a served command that holds the client's
    UNLEARN_KEEP_SUPERSEDED_DAYS and a temp folder removed when the command ends. A real starter,
    made as the runner makes it, is driven up to the process launch, which is recorded."""
    import inspect
    import uuid
    from types import SimpleNamespace

    import anyio
    from prefect.runner import _starter_engine, runner

    assert "return EngineCommandStarter(" in inspect.getsource(runner.Runner)  # how Prefect 3.8 starts them
    # DirectSubprocessStarter (no env of its own) runs only flows registered by add_flow; `unlearn
    # serve` adds deployments, which never register one, so every scheduled run takes the path above.
    assert "register_flow" in inspect.getsource(runner.Runner.aadd_flow)
    assert "register_flow" not in inspect.getsource(runner.Runner.aadd_deployment)
    launched = []

    async def record_launch(command, env=None, task_status=None, **kwargs):
        launched.append(env)

    monkeypatch.setattr(_starter_engine, "run_process", record_launch)
    monkeypatch.setenv("TMPDIR", str(root / "service-tmp"))
    monkeypatch.delenv("UNLEARN_KEEP_SUPERSEDED_DAYS", raising=False)
    baseline = warm.service_env()
    original = runner.EngineCommandStarter
    with warm.scheduled_runs_with_service_env(baseline):
        with server.isolated({"UNLEARN_KEEP_SUPERSEDED_DAYS": "30"}, None, None):
            os.environ["TMPDIR"] = str(root / "command-tmp")  # as the command's private_tempdir does
            starter = runner.EngineCommandStarter(deployment_name="comply/nightly")
            anyio.run(starter.start, SimpleNamespace(id=uuid.uuid4()))
    [env] = launched
    assert env["TMPDIR"] == str(root / "service-tmp") and "UNLEARN_KEEP_SUPERSEDED_DAYS" not in env
    assert env["PREFECT__DEPLOYMENT_NAME"] == "comply/nightly"
    assert runner.EngineCommandStarter is original  # put back once serving ends
    launched.clear()
    with server.isolated({"UNLEARN_KEEP_SUPERSEDED_DAYS": "30"}, None, None):  # without the wrapper: the leak
        anyio.run(original(deployment_name="comply/nightly").start, SimpleNamespace(id=uuid.uuid4()))
    assert launched[0]["UNLEARN_KEEP_SUPERSEDED_DAYS"] == "30"
