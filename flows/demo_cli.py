"""`unlearn demo` and `unlearn ui`: the worked scenarios end to end, and the MLflow or Prefect UI
on the project's runs (flows/cli.py runs the commands; their parser is flows/arguments.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from flows.arguments import MLFLOW_UI_PORT, PREFECT_UI_PORT, checked_device, checked_verify_mode
from flows.compliance_cli import EXIT_FAILED, EXIT_OK, emit
from flows.train_cli import check_table_precision
from unlearning.errors import UnlearnError


def cmd_demo(args, root: Path) -> int:
    from flows.demo import run_images_demo, run_tabular_demo, run_text_demo

    demo_verify_mode(args)
    device = checked_device(args)
    if args.scenario == "text":
        summary = run_text_demo(root, args.train_steps, args.preset or "small", verify=args.verify,
                                device=device, precision=args.precision)
    elif args.scenario == "images":
        summary = run_images_demo(root, verify=args.verify, device=device, precision=args.precision)
    else:
        check_table_precision(args)
        summary = run_tabular_demo(root, verify=args.verify)
    console = summary.pop("console")
    emit(args, summary, console)
    return demo_exit(summary)


def demo_exit(summary: dict) -> int:
    """1 when the request was not verified or the demo's audit failed (what `unlearn audit` exits
    with: the fast update fell short and the retrained model replaced it), else 0."""
    audit = summary.get("audit") or {}
    return EXIT_OK if summary["verified"] and audit.get("passed", True) is not False else EXIT_FAILED


def demo_verify_mode(args) -> None:
    """`--verify` of a demo: refused before its data is built when the scenario's kind cannot use it."""
    from tasks.kinds import IMAGES, TABULAR, TEXT

    if checked_verify_mode(args) is not None:
        kind = {"tabular": TABULAR, "text": TEXT, "images": IMAGES}[args.scenario]
        if args.verify not in kind.verify_modes:
            raise UnlearnError(f"--verify {args.verify} is not available for the {args.scenario} demo: use "
                               f"{' or '.join('--verify ' + m for m in kind.verify_modes)}")


def cmd_ui(args, root: Path) -> int:
    if args.prefect:
        port = args.port or PREFECT_UI_PORT
        cmd, env = prefect_ui_command(port)
        print(f"Prefect UI on http://127.0.0.1:{port} (flow runs of {env['PREFECT_HOME']}); Ctrl-C to stop",
              file=sys.stderr)
        return serve_until_stopped(cmd, env)
    from tasks.tracking import configure, tracking_uri

    port = args.port or MLFLOW_UI_PORT
    configure(root)
    uri = tracking_uri(root)
    print(f"MLflow UI on http://127.0.0.1:{port} (store {uri}); Ctrl-C to stop", file=sys.stderr)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", uri, "--workers", "1"]
    # Job execution is off: it is not used here and doubles start-up time and memory.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    return serve_until_stopped(cmd, env)


def serve_until_stopped(cmd: list[str], env: dict[str, str]) -> int:
    """Run a UI server until it ends or this process is told to stop (Ctrl-C, `kill`, a closed
    terminal), the signal passed on to the server's whole process group and the group stopped
    before returning. With subprocess.call a `kill` (SIGTERM) of `unlearn ui` ended it alone and left
    the server (MLflow's uvicorn) holding the port."""
    import signal
    import subprocess

    server = subprocess.Popen(cmd, env=env, start_new_session=True)

    def pass_on(signum, _frame):
        stop_group(server.pid, signum)

    stopping = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, pass_on) for s in stopping}
    try:
        code = server.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        stop_group(server.pid, signal.SIGTERM)  # what the server started and left behind
    return 128 - code if code < 0 else code


def stop_group(group: int, signum: int) -> None:
    try:
        os.killpg(group, signum)
    except (ProcessLookupError, PermissionError):
        pass  # the group has ended


def prefect_ui_command(port: int) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of a Prefect server showing the project's flow runs.

    Every `unlearn` command records its flow runs in the database under PREFECT_HOME (the
    project's .prefect/, flows.settings), through a temporary server of its own; a server started
    on that same home shows them all. The UI must be told where its API is (PREFECT_UI_API_URL),
    else it follows a PREFECT_API_URL of the user's profile. Only the API and the UI run: no
    scheduler would start the project's deployments behind the user's back."""
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_UI_API_URL": api, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)  # this process is the server, not a client of another one
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port),
           "--no-services", "--analytics-off"]
    return cmd, env
