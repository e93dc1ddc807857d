"""`unlearn`: the one entry point. It builds configs, validates input and calls the flows.

Exit codes: 0 done (and verified), 1 verification failed (nothing promoted) or a request failed, or
another run holds the project, 2 invalid input — or a project that cannot be written (disk full,
read-only, no permission): as for bad input, one line says what to fix and nothing is changed.
Human-readable progress goes to stderr; with --json, stdout carries exactly one JSON object.
Output piped into a reader that stops early (`| head`) ends the command quietly with exit 141,
as a process killed by SIGPIPE would, instead of a traceback.

Here: the entry (parse, hand over to `unlearn serve` or run here, errors as one line) and `unlearn
serve`. The other commands are flows/train_cli.py (data add, train, model import),
flows/erasure_cli.py (forget, scan, comply, audit), flows/demo_cli.py (demo, ui) and
flows/compliance_cli.py (requests, ledger, certificate, model retire); their parser is
flows/arguments.py.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from flows import arguments, compliance_cli
from flows.arguments import checked_verify_mode, option_problems
from flows.demo_cli import cmd_demo, cmd_ui
from flows.erasure_cli import cmd_audit, cmd_comply, cmd_forget, cmd_scan
from flows.settings import configure_environment, private_tempdir, probe_tracking_server, project_root
from flows.train_cli import cmd_data, cmd_model_import, cmd_train
from unlearning.errors import UnlearnError, shown

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
EXIT_BROKEN_PIPE = 128 + 13  # what a shell reports for a process killed by SIGPIPE


def build_parser() -> argparse.ArgumentParser:
    return arguments.build_parser(model_import=cmd_model_import)


def main(argv: list[str] | None = None) -> int:
    """The command line (`argv` None: sys.argv) ends the process here; a list of arguments (tests,
    Python callers) returns the exit code."""
    try:
        try:
            code = run(argv)
        finally:
            sys.stdout.flush()  # a reader that stopped early is met here, not at interpreter exit
    except BrokenPipeError:
        silence_stdout()
        code = EXIT_BROKEN_PIPE
    if argv is None:
        exit_without_teardown(code)
    return code


EXIT_JOIN_S = 10.0  # what the CLI waits, in all, for its other threads before exiting


def exit_without_teardown(code: int) -> None:
    """End the process without the interpreter's teardown of the ~5000 modules a flow command has
    loaded (torch, MLflow, Prefect: 1–2 s on 2 cores, measured by bench/overhead.py). What exit
    must do still happens, in the interpreter's order: other threads are joined, the atexit
    handlers run (Prefect's temporary server is stopped, logging flushed), the streams are flushed."""
    import atexit
    import threading
    import time

    # Bounded: an idle concurrent.futures worker (Dask's offload executor, MLflow's async logging)
    # only exits on the interpreter's own shutdown hook, so an unbounded join would hang here.
    deadline = time.monotonic() + EXIT_JOIN_S
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def silence_stdout() -> None:
    """Point stdout at /dev/null: the reader is gone, and Python's final flush of what is still
    buffered would otherwise print 'Exception ignored ... BrokenPipeError' on the way out."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (captured in tests)
        pass


def run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    root = project_root()
    from flows import service  # stdlib only: the client side of `unlearn serve`
    from flows.service_protocol import DELEGATED

    if args.command in DELEGATED and not args.local:
        code = service.hand_over(sys.argv[1:] if argv is None else list(argv), root)
        if code is not None:
            return code
    return execute(args, root)


def execute(args, root: Path) -> int:
    """One parsed command, in this process (a CLI call, or a command `unlearn serve` runs)."""
    configure_environment(root)
    home = Path(os.environ["PREFECT_HOME"])
    fresh = not home.exists()
    code = execute_configured(args, root)
    if code == EXIT_INVALID and fresh:
        remove_if_empty(home)
    return code


def remove_if_empty(folder: Path) -> None:
    """Bad input writes nothing: Prefect makes its home folder when it is first imported, before
    the input is refused, so a refused command's new, still empty home goes again."""
    try:
        folder.rmdir()
    except OSError:
        pass  # not empty (a flow ran), gone, or not ours to remove: left as it is


def check_key_settings(root: Path, command: str) -> None:
    """A bad UNLEARN_SALT or UNLEARN_SIGNING_KEY, or one the project's file contradicts, is refused
    before anything is written; one the file holds too is used, with a warning that the file still
    gives it away. A command that changes the project (KEYED) is refused too where one of them is in
    neither its variable nor its file while the project holds what it made (moved out, and this
    process run without the variable): it would write before it first reads the secret, and then
    sign or fingerprint with a new one. The others meet that refusal where they need the secret."""
    from unlearning.compliance.signing import also_in_files, check_not_moved_out

    if command in KEYED:
        check_not_moved_out(root)
    for name, path in also_in_files(root):
        print(f"warning: {name} is set, and {path} holds the same value: whoever copies the project has it; "
              f"delete the file (rm {path})", file=sys.stderr)


def execute_configured(args, root: Path) -> int:
    if args.command in EARLY_PREFECT:
        from flows.settings import start_prefect_server_early

        start_prefect_server_early(root)

    from pydantic import ValidationError

    if args.command in FLOWS:
        from flows.settings import keep_run_failures_off_console

        keep_run_failures_off_console()
    try:
        check_key_settings(root, args.command)
        with private_tempdir(root):
            if args.command in TRACKING:
                probe_tracking_server()
            if args.command in RECOVERING:
                from tasks.release import recover_interrupted

                recover_interrupted(root, args.command)
            return COMMANDS[args.command](args, root)
    except UnlearnError as err:
        print(f"error: {err}", file=sys.stderr)
        return getattr(err, "exit_code", EXIT_INVALID)
    except ValidationError as exc:  # any settings object built from user input: one line, no links
        print(f"error: {shown(option_problems(exc))}", file=sys.stderr)  # it quotes the values given
        return EXIT_INVALID
    except BrokenPipeError:
        raise  # the reader left (main): not the project's problem
    except Exception as exc:
        problem = unwritable(exc)
        if problem is None:
            raise
        print(f"error: {shown(problem)}", file=sys.stderr)  # it names a path, which a user may have chosen
        return EXIT_INVALID
    except KeyboardInterrupt:
        return 130


# Commands that read the data and change the project: what a killed run left is finished first
# (forget and comply do it where they take the project lock: tasks.release.release_lock). `model`:
# retire removes the production alias a killed release's recovery reads to decide its outcome.
RECOVERING = ("data", "train", "model")
FLOWS = ("train", "forget", "comply", "demo", "serve", "audit")  # failures reported in one line, not Prefect's traceback
TRACKING = FLOWS  # commands that use MLflow: a tracking server is probed first
KEYED = FLOWS + RECOVERING  # commands that change the project: its key and salt are checked first
# One-shot commands whose flows (flows.runs.OutcomeFlow) wait for the temporary Prefect server
# started as the command's first step (flows.settings.PrefectServer).
EARLY_PREFECT = ("forget", "comply", "audit")


def unwritable(exc: Exception) -> str | None:
    """One line for an OSError of the machine rather than of the input (a full disk, a read-only
    project, no permission), also when a library wrapped it; None for any other error. The run
    that met it has rolled its changes back (tasks.release); one that could not is finished by the
    next command."""
    import errno

    from tasks.release import unwritable_cause

    err = unwritable_cause(exc)
    if err is None:
        return None
    where = f" while writing {err.filename}" if err.filename else ""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on device{where}; free space and run again"
    if err.errno == errno.EROFS:
        return f"the project is on a read-only file system{where}; run it where the project can be written"
    on = f" on {err.filename}" if err.filename else ""
    return f"permission denied{on}; run as a user who can write the project"


def cmd_serve(args, root: Path) -> int:
    from flows.audit import audit_flow
    from flows.comply import comply_flow
    from flows.forget import forget_flow

    nightly, weekly, on_demand = served_parameters(args, root)  # bad settings: one line, nothing served
    from flows import service_warm
    from tasks import references as prefetch

    if args.dask_address:  # the served runs read it from the service's environment: see served_parameters
        os.environ[prefetch.ADDRESS_ENV] = args.dask_address

    baseline = service_warm.service_env()  # before any served command changes it
    executor = service_warm.serve_commands(root, run_forwarded)  # the CLI's forget/comply/audit, run warm in this process
    if not os.environ.get("PREFECT_API_URL"):  # measured: a temporary server runs no scheduler
        print("serve: note: no PREFECT_API_URL — the deployments are registered in a temporary Prefect server, "
              "which starts no scheduled run: the nightly comply and weekly audit need a Prefect server",
              file=sys.stderr)
    print(f"serving comply/nightly (cron {args.cron!r}, UTC), audit/weekly (cron {args.audit_cron!r}, UTC) and "
          f"forget/on-demand for {root}; Ctrl-C to stop", file=sys.stderr)
    try:
        with service_warm.scheduled_runs_with_service_env(baseline):
            serve_until_stopped(comply_flow.to_deployment(name="nightly", cron=args.cron, parameters=nightly),
                                audit_flow.to_deployment(name="weekly", cron=args.audit_cron, parameters=weekly),
                                forget_flow.to_deployment(name="on-demand", parameters=on_demand))
    finally:
        if executor is not None:
            executor.stop()
    return EXIT_OK


def served_parameters(args, root: Path) -> tuple[dict, dict, dict]:
    """The parameters of the nightly comply, the weekly audit and the on-demand forget that
    `unlearn serve` registers, from its options (checked as their own commands check them). Not
    `--dask-address`: a deployment's parameters are stored whole in Prefect's database and shown in its
    UI, and the address may carry a password; the served runs take it from the service's environment
    (UNLEARN_DASK_ADDRESS), which cmd_serve sets."""
    from tasks import audit, references as prefetch

    params = {"root": str(root)}
    runner = {}
    if args.task_runner or args.dask_address:
        runner = {"task_runner": prefetch.runner_setting(args.task_runner, args.dask_address)[0]}
    verify = {"verify": args.verify} if checked_verify_mode(args) else {}
    try:
        cadence = audit.cadence_setting(args.audit_min_requests, args.audit_max_age)
    except UnlearnError as exc:  # named as `unlearn audit` names them: say which option of serve it was
        raise UnlearnError(str(exc).replace("--min-requests", "--audit-min-requests")
                           .replace("--max-age", "--audit-max-age")) from None
    for option, expression in (("--cron", args.cron), ("--audit-cron", args.audit_cron)):
        checked_cron(option, expression)
    weekly = {**params, **runner, "rebase": not args.audit_no_rebase,  # as prefect.yaml's weekly deployment
              **({} if cadence == audit.Cadence(1, None) else
                 {"min_requests": cadence.min_requests, "max_age_days": cadence.max_age_days})}
    return {**params, **runner, **verify}, weekly, {**params, **verify}


def checked_cron(option: str, expression: str) -> None:
    """Refused before anything is served: Prefect checks a schedule only when the deployment is
    registered, after the warm service has started and said it serves."""
    from prefect.client.schemas.schedules import CronSchedule
    try:
        CronSchedule(cron=expression)
    except ValueError:
        raise UnlearnError(f"{option} {expression!r} is not a cron expression Prefect accepts; write five fields, "
                           f"minute hour day month weekday (UTC), e.g. '0 2 * * *'") from None


def serve_until_stopped(*deployments) -> None:
    """prefect.serve, but SIGTERM (docker stop, systemd, a supervisor) stops it like Ctrl-C does:
    Prefect 3.8.8's handler calls the async `stop()` from inside the event loop without awaiting
    it, so the process ignored SIGTERM until it was killed."""
    import asyncio

    from prefect.runner import Runner

    class StoppableRunner(Runner):
        def handle_sigterm(self, *args, **kwargs):
            raise KeyboardInterrupt  # unwinds runner.start(): its exit stack stops the runner

    runner = StoppableRunner()
    for deployment in deployments:
        runner.add_deployment(deployment)
    try:
        asyncio.run(runner.start())
    except KeyboardInterrupt:
        print("serve: stopped", file=sys.stderr)


def run_forwarded(argv: list[str], cwd: str) -> int:
    """`unlearn ARGV` for a client of `unlearn serve`, as it would run in `cwd`: parsed by the CLI's
    own parser, its relative paths resolved against the client's folder (the service never changes
    its own)."""
    from flows.service_protocol import DELEGATED

    args = build_parser().parse_args(argv)
    if args.command not in DELEGATED:  # `malformed` refused it already: a second line of defence
        print(f"error: the service runs only {', '.join(DELEGATED)}", file=sys.stderr)
        return EXIT_INVALID
    for name, value in vars(args).items():
        if isinstance(value, Path) and not value.is_absolute():
            setattr(args, name, Path(cwd) / value)
    return execute(args, project_root())


COMMANDS = {"data": cmd_data, "train": cmd_train, "forget": cmd_forget, "scan": cmd_scan, "demo": cmd_demo,
            "ui": cmd_ui, "comply": cmd_comply, "serve": cmd_serve, "audit": cmd_audit, **compliance_cli.COMMANDS}

if __name__ == "__main__":
    sys.exit(main())
