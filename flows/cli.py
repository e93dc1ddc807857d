"""`unlearn`: the one entry point. It builds configs, validates input and calls the flows.

Exit codes: 0 done (and verified), 1 verification failed (nothing promoted) or a request failed, or
another run holds the project, 2 invalid input — or a project that cannot be written (disk full,
read-only, no permission): as for bad input, one line says what to fix and nothing is changed.
Human-readable progress goes to stderr; with --json, stdout carries exactly one JSON object.
Output piped into a reader that stops early (`| head`) ends the command quietly with exit 141,
as a process killed by SIGPIPE would, instead of a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from flows import arguments, compliance_cli
from flows.arguments import MLFLOW_UI_PORT, PREFECT_UI_PORT, checked_device, checked_verify_mode
from flows.compliance_cli import emit
from flows.settings import configure_environment, private_tempdir, probe_tracking_server, project_root
from unlearning.errors import UnlearnError

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
    if args.command in EARLY_PREFECT:
        from flows.settings import start_prefect_server_early

        start_prefect_server_early(root)

    from pydantic import ValidationError

    if args.command in FLOWS:
        from flows.settings import keep_run_failures_off_console

        keep_run_failures_off_console()
    try:
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
        print(f"error: {option_problems(exc)}", file=sys.stderr)
        return EXIT_INVALID
    except BrokenPipeError:
        raise  # the reader left (main): not the project's problem
    except Exception as exc:
        problem = unwritable(exc)
        if problem is None:
            raise
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        return 130


# Commands that read the data and change the project: what a killed run left is finished first
# (forget and comply do it where they take the project lock: tasks.release.release_lock). `model`:
# retire removes the production alias a killed release's recovery reads to decide its outcome.
RECOVERING = ("data", "train", "model")
FLOWS = ("train", "forget", "comply", "demo", "serve", "audit")  # failures reported in one line, not Prefect's traceback
TRACKING = FLOWS  # commands that use MLflow: a tracking server is probed first
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


def cmd_data(args, root: Path) -> int:
    from tasks.data import add_dataset
    from tasks.formats import format_of
    from tasks.release import project_lock_once_started

    with project_lock_once_started(root, "data add"):
        dataset, version = add_dataset(root, args.name, args.file, args.target, args.id_column, args.replace,
                                       text_column=args.text_column, images=args.images, size=args.size)
    payload, human = format_of(dataset).dataset_summary(dataset, version)
    emit(args, payload, human)
    return EXIT_OK


def cmd_train(args, root: Path) -> int:
    from tasks import data as data_store
    from unlearning.tabular.training import TrainConfig

    config = _config(TrainConfig, lam=args.lam, certified=args.certified, epsilon=args.epsilon,
                     delta=args.delta, budget=args.budget, seed=args.seed)
    from unlearning.text.lm import TextTrainConfig

    from unlearning.images.bundle import ImageTrainConfig

    device = checked_device(args)
    text_config = _config(TextTrainConfig, preset=args.preset or "small", seed=args.seed, device=device,
                          precision=args.precision, **pretrained_options(args))
    image_config = _config(ImageTrainConfig, preset=args.preset, subset=args.subset, epochs=args.epochs,
                           seed=args.seed, factory=args.model_factory, device=device, precision=args.precision)
    dataset = data_store.load_dataset(root, args.dataset)  # fail fast, before any run is recorded
    from tasks.kinds import kind_of

    kind = kind_of(dataset)
    if args.model_factory is not None and kind.name != "images":
        raise UnlearnError(f"--model-factory builds image models; dataset '{args.dataset}' is a {kind.name} dataset: "
                           f"drop the option or train on an image dataset")
    if kind.name == "table":
        check_table_precision(args)
    if kind.name != "text" and text_config.from_pretrained:
        raise UnlearnError(f"--from-pretrained fine-tunes a language model on a text corpus: dataset "
                           f"'{args.dataset}' is {'a table' if kind.name == 'table' else 'images'}; give a text "
                           f"dataset (`unlearn data add NAME --file notes.txt`)")
    kind.check_trainable(dataset, {"table": config, "text": text_config, "images": image_config}[kind.name])
    from flows.train import train_flow
    from tasks.release import project_lock_once_started

    with project_lock_once_started(root, "train"):  # production must not move under a running release
        summary = train_flow(root=str(root), dataset=args.dataset, model=args.model, config=config,
                             text_config=text_config, image_config=image_config)
    emit(args, summary, f"model {summary['model']['name']} v{summary['model']['version']} → production "
         f"({kind.train_quality(summary)}, fit {summary['timings']['fit_s']:.1f} s)")
    return EXIT_OK


def cmd_model_import(args, root: Path) -> int:
    """`unlearn model import NAME --from-pretrained DIR --dataset D`: everything checked before the
    flow records anything."""
    from flows.settings import keep_run_failures_off_console
    from tasks import data as data_store
    from tasks import tracking
    from tasks.kinds import kind_of
    from tasks.kinds.hf import check_pretrained, declared_schedule
    from tasks.release import project_lock_once_started, recover_interrupted

    keep_run_failures_off_console()
    probe_tracking_server()
    recover_interrupted(root, "model import")
    checkpoint = str(args.from_pretrained.expanduser().resolve())
    base = str(args.base.expanduser().resolve()) if args.base else None
    schedule = declared_schedule(base, args.steps, args.lr, args.batch, args.seq_len)
    dataset = data_store.load_dataset(root, args.dataset)
    kind = kind_of(dataset)
    if kind.name != "text":
        raise UnlearnError(f"--from-pretrained registers a language model of a text corpus: dataset "
                           f"'{args.dataset}' is {'a table' if kind.name == 'table' else 'images'}")
    kind.check_trainable(dataset, None)
    check_pretrained(checkpoint, corpus=dataset, seq_len=schedule.get("seq_len"))
    if base:
        check_pretrained(base, corpus=dataset, seq_len=schedule.get("seq_len"))
    if tracking.store_exists(root):
        tracking.connect(root)
        other = tracking.production_version(args.name)
        if other is not None and other.tags.get("dataset", args.name) != args.dataset:
            raise UnlearnError(f"model {args.name} is the production model of dataset "
                               f"'{other.tags.get('dataset', args.name)}': choose another name for a model of "
                               f"'{args.dataset}' (or `unlearn model retire {args.name}` first)")
    from flows.train import import_flow

    with project_lock_once_started(root, "model import"):
        summary = import_flow(root=str(root), model=args.name, dataset=args.dataset, checkpoint=checkpoint,
                              base=base, seed=args.seed, **schedule)
    emit(args, summary, f"model {args.name} v{summary['model']['version']} → production (imported from "
         f"{checkpoint}, declared trained on data version {summary['data_version']}; held-out perplexity "
         f"{summary['metrics']['held_out_perplexity']:.2f})")
    return EXIT_OK


def pretrained_options(args) -> dict:
    """TextTrainConfig's budget and checkpoint options: `--seconds` is the character LM's (a
    Hugging Face fine-tune is given in steps), `--lora` adapts a `--from-pretrained` checkpoint."""
    if args.from_pretrained is None:
        if args.lora:
            raise UnlearnError("--lora fine-tunes adapters of a Hugging Face checkpoint: give it with "
                               "--from-pretrained DIR, or leave --lora out")
        return {"seconds": 120.0 if args.seconds is None else args.seconds, "steps": args.steps}
    if args.seconds is not None:
        raise UnlearnError("--seconds is the character LM's time budget: a --from-pretrained fine-tune is "
                           "given in steps (--steps N)")
    return {"steps": args.steps, "from_pretrained": str(args.from_pretrained.expanduser().resolve()),
            "lora": args.lora}


def cmd_forget(args, root: Path) -> int:
    from flows.forget import forget_flow
    from tasks import release, steps

    keep_days = release.keep_days_setting(args.keep_superseded)
    checked_verify_mode(args)
    device = checked_device(args)
    # all validation before anything is written; the flow nests under the lock taken here
    with release.validated_release(root, "forget",
                                   lambda: steps.plan_request.fn(root, args.request, args.method, args.verify)):
        summary = forget_flow(root=str(root), request_path=str(args.request), method=args.method,
                              keep_superseded_days=keep_days, verify=args.verify, device=device)
    emit(args, summary, format_forget(summary))
    return EXIT_OK if summary.get("verified", summary.get("status") == "completed") else EXIT_FAILED


def format_forget(s: dict) -> str:
    if s.get("status") == "already_processed":
        return f"request {s['request_id']} was already processed: model {s['model']['name']} v{s['model']['version']} ({s['guarantee']})"
    from tasks.kinds import kind_of_summary

    kind = kind_of_summary(s)
    lines = [
        f"request {s['request_id']}: {s['status']} — method {s['method']}, guarantee {s['guarantee']}"
        + kind.forget_headline(s),
        f"  model {s['model']['name']} v{s['model']['parent_version']} → v{s['model']['version']}"
        f" ({'promoted to production' if s['promoted'] else 'NOT promoted'})",
        f"  data  {s['data']['before']} → {s['data']['after']}",
        *kind.format_forget(s),
        *verification_lines(s),
        *superseded_lines(s),
        *failed_check_lines(s["checks"]),
    ]
    return "\n".join(lines)


def verification_lines(s: dict) -> list[str]:
    """How the update was verified, the checks it passed and how long the data took to leave production."""
    v, t = s.get("verification"), s["timings"]
    if not v:
        return []
    passed = sum(c["passed"] for c in v["checks"])
    names = ", ".join(c["name"] for c in v["checks"] if c["passed"]) or "none"
    removal = (f"; time to removal {t['time_to_removal_s']:.1f} s" if t.get("time_to_removal_s") is not None
               else "; production unchanged")
    return [f"  verified by {v['mode']}: {passed}/{len(v['checks'])} checks passed ({names}), "
            f"{v['retrains']} model(s) retrained, {t['verify_s']:.2f} s" + removal]


def failed_check_lines(checks: list[dict]) -> list[str]:
    from unlearning.tabular.verify import describe_failures

    return [f"  FAILED check {describe_failures([c])}" for c in checks if not c["passed"]]


def superseded_lines(s: dict) -> list[str]:
    """What happened to the superseded artifacts, or that the run was rolled back."""
    if s.get("rollback"):
        r = s["rollback"]
        return [f"  rolled back: data restored to {r['data']['restored']}, production stays v{r['production']}"]
    return [f"  superseded: {x['artifact']} — {x['action']}" for x in s.get("superseded", [])]


def cmd_scan(args, root: Path) -> int:
    from tasks.scan import counts_by_detector, is_project, load_allowlist, scan_target

    what, findings = scan_target(root, args.target, load_allowlist(args.allowlist))
    if not is_project(root):
        print(f"note: {root} is not an unlearnflow project: the fingerprints use a one-off salt (nothing is "
              "written here) and match no other scan; run it in the project to match requests and allowlists",
              file=sys.stderr)
    counts = counts_by_detector(findings)
    if args.model and findings:
        findings = with_exposure(root, args.target, args.model, findings)
    lines = [f"{what}: {len(findings)} finding(s)" + (f" — {counts}" if counts else "")]
    for f in findings:
        where = ", ".join(f"{k} {v}" for k, v in f["location"].items())
        exposure = f"  exposure {f['exposure']:.1f} bits" if "exposure" in f else ""
        lines.append(f"  {f['detector']:<7} {f['masked']:<28} {f['fingerprint']}{exposure}  ({where})")
    emit(args, {"target": args.target, "findings": findings, "counts": counts}, "\n".join(lines))
    return EXIT_FAILED if findings else EXIT_OK


def with_exposure(root: Path, dataset: str, model: str, findings: list[dict]) -> list[dict]:
    """Findings with their exposure in the model's production version, via the detect tasks."""
    from tasks import data as data_store
    from tasks import tracking
    from tasks.formats import TEXT, format_of
    from tasks.kinds.text import measure_exposure

    corpus = data_store.load_dataset(root, dataset)
    if format_of(corpus) is not TEXT:
        raise UnlearnError(f"--model measures exposure in a language model: '{dataset}' is not a text dataset")
    tracking.connect(root)
    tracking.require_production(model, root)
    experiment = tracking.configure(root)
    with tracking.run(experiment, f"scan {dataset}", {"flow": "scan", "model": model, "dataset": dataset}) as run_id:
        from tasks.common import Lineage

        rows = measure_exposure.fn(Lineage(root, experiment, run_id, {"model": model}), model, corpus, findings)
    by_print = {r["fingerprint"]: r["exposure"] for r in rows}
    return [{**f, "exposure": by_print[f["fingerprint"]]} for f in findings]


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
    return EXIT_OK if summary["verified"] else EXIT_FAILED


def check_table_precision(args) -> None:
    """A table model is fit and unlearnt in float64 (its certificate depends on those numbers)."""
    if args.precision != "fp32":
        raise UnlearnError(f"--precision {args.precision} applies to deep models: a table model is fit in float64 "
                           f"on the CPU (its certified removal depends on it); leave --precision out")


def demo_verify_mode(args) -> None:
    """`--verify` of a demo: refused before its data is built when the scenario's kind cannot use it."""
    from tasks.kinds import IMAGES, TABULAR, TEXT

    if checked_verify_mode(args) is not None:
        kind = {"tabular": TABULAR, "text": TEXT, "images": IMAGES}[args.scenario]
        if args.verify not in kind.verify_modes:
            raise UnlearnError(f"--verify {args.verify} is not available for the {args.scenario} demo: use "
                               f"{' or '.join('--verify ' + m for m in kind.verify_modes)}")


def cmd_ui(args, root: Path) -> int:
    import subprocess

    if args.prefect:
        port = args.port or PREFECT_UI_PORT
        cmd, env = prefect_ui_command(port)
        print(f"Prefect UI on http://127.0.0.1:{port} (flow runs of {env['PREFECT_HOME']}); Ctrl-C to stop",
              file=sys.stderr)
        return subprocess.call(cmd, env=env)
    from tasks.tracking import configure, tracking_uri

    port = args.port or MLFLOW_UI_PORT
    configure(root)
    uri = tracking_uri(root)
    print(f"MLflow UI on http://127.0.0.1:{port} (store {uri}); Ctrl-C to stop", file=sys.stderr)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", uri, "--workers", "1"]
    # Job execution is off: it is not used here and doubles start-up time and memory.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    return subprocess.call(cmd, env=env)


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


def _config(cls, **values):
    """cls(**values) from command-line options; a pydantic error becomes one UnlearnError line
    naming the option (the field name as its --flag), what is wrong and what to give instead."""
    from pydantic import ValidationError

    try:
        return cls(**values)
    except ValidationError as exc:
        raise UnlearnError(option_problems(exc, cls)) from None


_BOUNDS = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">="), "less_than": ("lt", "<"),
           "less_than_equal": ("le", "<=")}


def option_problems(exc, cls=None) -> str:
    """pydantic's multi-line report (with its "for further information visit" links) as
    'option --X: problem; use …', one per failed field, on one line."""
    fields = getattr(cls, "model_fields", {})
    parts = []
    for error in exc.errors():
        name = ".".join(str(p) for p in error["loc"])
        flag = f"--{name.replace('_', '-')}" if name else "options"
        ctx, kind, given = error.get("ctx") or {}, error["type"], error.get("input")
        if kind in _BOUNDS:
            key, sign = _BOUNDS[kind]
            annotation = getattr(fields.get(name), "annotation", None)
            whole = annotation is int or int in getattr(annotation, "__args__", ())
            number = "a whole number" if whole else "a finite number"
            problem, use = f"{given!r} is not {sign} {ctx[key]}", f"{number} {sign} {ctx[key]}"
        elif kind == "literal_error":
            problem, use = f"{given!r} is not a choice", f"one of {ctx['expected']}"
        elif kind.startswith("int_"):
            problem, use = f"{given!r} is not a whole number", "a whole number"
        elif kind.startswith("float_") or kind == "finite_number":
            problem, use = f"{given!r} is not a finite number", "a finite number"
        elif kind == "extra_forbidden":
            problem, use = "is not an option here", f"one of {', '.join(fields) or 'none'}"
        else:
            problem, use = error["msg"].removeprefix("Value error, ").replace("\n", " "), None
        default = getattr(fields.get(name), "default", None)
        hint = use or (f"the default {default!r}" if default is not None else None)
        if use and default is not None and not isinstance(default, bool):
            hint += f" (default {default!r})"
        parts.append(f"option {flag}: {problem}" + (f"; use {hint}" if hint else ""))
    return "; ".join(dict.fromkeys(parts)) or "invalid options"


def cmd_comply(args, root: Path) -> int:
    from flows.comply import comply_flow
    from tasks import ledger, references as prefetch, release

    keep_days = release.keep_days_setting(args.keep_superseded)
    runner, address = prefetch.runner_setting(args.task_runner, args.dask_address)
    workers = prefetch.check_workers(args.workers)
    checked_verify_mode(args)
    device = checked_device(args)
    ledger.check_intact(root)  # a bad UNLEARN_LEDGER_URL, a forged ledger: one line before any flow starts
    try:
        summary = comply_flow(root=str(root), keep_superseded_days=keep_days, task_runner=runner,
                              dask_address=address, workers=workers, verify=args.verify, device=device)
    except release.ProjectBusy as busy:  # not bad input: the other run is doing the work
        print(f"comply: {busy}", file=sys.stderr)
        return EXIT_FAILED
    lines = [f"recovered after an interrupted run: {r.get('id') or 'release of model ' + r['model']} — {r['outcome']}"
             for r in summary.get("recovered", [])]
    lines += [f"due purge: {x['artifact']} — {x['action']}" for x in summary.get("purged", [])]
    refs = summary.get("references", {})
    if refs.get("task_runner", "inline") != "inline":
        lines.append(f"verification references trained ahead on the {refs['task_runner']} task runner: "
                     f"{refs['prefetched']} in {refs['seconds']:.0f} s, used {refs['used']}")
    lines.append(f"{summary['processed']} request(s) processed, {summary['failed']} failed")
    for r in summary["requests"]:
        where = (f"model {r['model']['name']} v{r['model']['version']}, certificate {r['certificate']}"
                 if r["status"] == "completed" else r["reason"])
        where += "".join(f"; {record}: {why}" for record, why in sorted(r.get("unchanged", {}).items()))
        lines.append(f"  {r['id']}: {r['status']} — {where}")
    emit(args, summary, "\n".join(lines))
    return EXIT_FAILED if summary["failed"] else EXIT_OK


def cmd_audit(args, root: Path) -> int:
    from flows.audit import audit_flow
    from tasks import audit, audit_record, ledger, references as prefetch, release

    keep_days = release.keep_days_setting(args.keep_superseded)
    runner, address = prefetch.runner_setting(args.task_runner, args.dask_address)
    workers = prefetch.check_workers(args.workers)
    cadence = audit.cadence_setting(args.min_requests, args.max_age)
    device = checked_device(args)
    ledger.check_intact(root)  # a forged ledger: one line before anything is audited
    due = audit.due_models(root, args.model, cadence)  # an unknown or unauditable model: one line, exit 2
    if not due and not (release.open_journals(root) or audit_record.open_audits(root)):
        message = nothing_due_message(root, args.model, cadence)
        emit(args, {"model": args.model, "audits": [], "covered_requests": [], "message": message}, message)
        return EXIT_OK
    try:
        summary = audit_flow(root=str(root), model=args.model, rebase=args.rebase, keep_superseded_days=keep_days,
                             task_runner=runner, dask_address=address, workers=workers,
                             min_requests=cadence.min_requests, max_age_days=cadence.max_age_days, device=device)
    except release.ProjectBusy as busy:
        print(f"audit: {busy}", file=sys.stderr)
        return EXIT_FAILED
    audits = summary["audits"]
    payload = audits[0] if args.model and len(audits) == 1 else summary
    emit(args, payload, "\n".join([*(f"recovered an interrupted audit {r['id']}: {r['outcome']}"
                                     for r in summary["recovered"] if "id" in r),
                                   *(line for a in audits for line in format_audit(a))])
         or "nothing to audit")
    return EXIT_OK if all(a["passed"] for a in audits) else EXIT_FAILED


def nothing_due_message(root: Path, model: str | None, cadence) -> str:
    """Why `unlearn audit` has nothing to do: no request since the last audit, or fewer than the cadence asks."""
    from tasks import audit

    waiting = f"fewer than {cadence.min_requests} requests waiting" + (
        f", none older than {cadence.max_age_days:g} days" if cadence.max_age_days is not None else "")
    if model is None:
        return ("no model has a request since its last audit; nothing to audit" if cadence.min_requests == 1
                else f"no model is due: {waiting}; nothing to audit")
    count, _ = audit.pending_requests(root, model)
    if count == 0:
        return f"model {model}: no request since its last audit; nothing to audit"
    return f"model {model}: {count} request(s) since its last audit, {waiting}; nothing to audit"


def format_audit(a: dict) -> list[str]:
    verdict = "PASSED" if a["passed"] else "FAILED"
    promoted = (f"; retrained model promoted: v{a['production_version']} → v{a['promoted']} (guarantee exact)"
                if a["promoted"] else "")
    lines = [f"audit of model {a['model']}: {verdict} — {len(a['covered_requests'])} request(s) covered "
             f"({', '.join(a['covered_requests'])}){promoted}",
             f"  retraining {a['timings']['retrain_s']:.2f} s; record {a['record']}"]
    lines += [f"  {'ok    ' if c['passed'] else 'FAILED'} {c['name']} {c['value']:.4g} (needs {c['threshold']})"
              for c in a["checks"]]
    lines += [f"  fell short: {', '.join(s['requests'])} ({s['check']})" for s in a["shortfall"]]
    return lines


def cmd_serve(args, root: Path) -> int:
    from flows.audit import audit_flow
    from flows.comply import comply_flow
    from flows.forget import forget_flow

    nightly, weekly, on_demand = served_parameters(args, root)  # bad settings: one line, nothing served
    from flows import service_warm

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
    `unlearn serve` registers, from its options (checked as their own commands check them)."""
    from tasks import audit, references as prefetch

    params = {"root": str(root)}
    runner = {}
    if args.task_runner or args.dask_address:
        name, address = prefetch.runner_setting(args.task_runner, args.dask_address)
        runner = {"task_runner": name, **({"dask_address": address} if address else {})}
    verify = {"verify": args.verify} if checked_verify_mode(args) else {}
    try:
        cadence = audit.cadence_setting(args.audit_min_requests, args.audit_max_age)
    except UnlearnError as exc:  # named as `unlearn audit` names them: say which option of serve it was
        raise UnlearnError(str(exc).replace("--min-requests", "--audit-min-requests")
                           .replace("--max-age", "--audit-max-age")) from None
    weekly = {**params, **runner, "rebase": not args.audit_no_rebase,  # as prefect.yaml's weekly deployment
              **({} if cadence == audit.Cadence(1, None) else
                 {"min_requests": cadence.min_requests, "max_age_days": cadence.max_age_days})}
    return {**params, **runner, **verify}, weekly, {**params, **verify}


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
