"""Verification references trained ahead of time on a Prefect task runner (Dask).

Verification is the expensive part of a batch: it retrains the model on D'. `comply` releases its
batches one at a time (each starts from the data and model version the previous one left), but the
references do not depend on that order when the batches touch different models: with a task
runner, the subflow `retrain references` (flows/references.py) plans every batch, builds its `ReferenceJob` (D' only) and
submits them all at once — to a local Dask cluster or an existing Dask scheduler.
The batches are then released in order as before; a verification (or an update that *is*
retraining) whose job key is in the pool takes that reference instead of training it again. A key
that does not match — an earlier batch in the run changed the data or the model — trains inline, so
the result never depends on what was prefetched.

Why no thread-pool runner: torch's thread count is process-wide and the methods set it while they
run (methods.single_threaded), so references trained in concurrent threads would race on it; Dask
runs each in a worker process of its own.
"""

from __future__ import annotations

import functools
import gc
import importlib.util
import logging
import os
import re
import warnings
from contextlib import contextmanager
from contextvars import ContextVar

from pydantic import SecretStr

from tasks.common import progress, step, whole_number_option
from unlearning import references
from unlearning.errors import UnlearnError, failure_reason, shown

RUNNERS = ("inline", "dask")
RUNNER_ENV = "UNLEARN_TASK_RUNNER"
ADDRESS_ENV = "UNLEARN_DASK_ADDRESS"

_PREFETCHED: ContextVar[dict | None] = ContextVar("unlearn_prefetched_references", default=None)


def runner_setting(name: str | None, address: str | SecretStr | None = None) -> tuple[str, str | None]:
    """(runner, Dask scheduler address) from the options, else UNLEARN_TASK_RUNNER /
    UNLEARN_DASK_ADDRESS, else inline (no prefetch). An address alone means dask. The address may come
    as a flow's parameter, a SecretStr (flows.runs.SECRET_PARAMETERS)."""
    address = revealed(address) or os.environ.get(ADDRESS_ENV) or None
    name = name or os.environ.get(RUNNER_ENV) or ("dask" if address else "inline")
    if name not in RUNNERS:
        raise UnlearnError(f"unknown task runner {name!r}: choose one of {', '.join(RUNNERS)} "
                           f"(--task-runner or {RUNNER_ENV})")
    if address and name != "dask":
        raise UnlearnError(f"a Dask scheduler address needs --task-runner dask, not {name!r}")
    if name == "dask" and importlib.util.find_spec("prefect_dask") is None:
        raise UnlearnError("the dask task runner needs prefect-dask: pip install 'unlearnflow[dask]' "
                           "(or pip install prefect-dask)")
    return name, address


def revealed(value: str | SecretStr | None) -> str | None:
    """The text of a parameter Prefect was given as a SecretStr (it stores '**********' for one)."""
    return value.get_secret_value() if isinstance(value, SecretStr) else value


# A Dask address may carry a user name and password ("tcp://user:secret@host:8786"): everything
# between the scheme, if any, and the address's last '@'. A password may hold a '/' or an '@' of its
# own ("tcp://alice:pa/ss@host:8786"), so no character ends it before that '@'.
_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)?(?P<userinfo>.*)@", re.DOTALL)


def shown_address(address: str) -> str:
    """`address` as it may be printed or kept: its user name and password, if any, written `***`
    (`tcp://***@host:8786`), the rest masked as any message is."""
    return shown(_USERINFO.sub(lambda m: f"{m['scheme'] or ''}***@", address, count=1))


def address_hidden(text: str, address: str) -> str:
    """`text` (a client's error) with `address` written as shown_address writes it, and its user name
    and password also where the client quotes them in an address of its own spelling."""
    text = text.replace(address, shown_address(address))
    userinfo = _USERINFO.match(address)
    return text.replace(userinfo["userinfo"], "***") if userinfo and userinfo["userinfo"] else text


def check_workers(workers: object) -> int | None:
    return None if workers is None else whole_number_option(workers, "--workers")


def make_task_runner(name: str, address: str | None, workers: int | None):
    """The Prefect task runner for the prefetch subflow (`name` is dask: inline prefetches nothing),
    and the torch threads each task may use (None: leave it to the worker — a remote cluster's
    machines are not this one)."""
    cores = os.cpu_count() or 1
    workers = workers or cores
    threads = max(1, cores // workers)
    runner = address_hiding_runner()

    configure_dask()
    if address:
        return runner(address=address), None
    return runner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                                  # the scheduler's HTTP server on a free local port (None would
                                  # still take 8787, and warn when that is in use)
                                  "dashboard_address": "127.0.0.1:0", "silence_logs": logging.WARNING,
                                  "env": worker_environment()}), threads


@functools.cache
def address_hiding_runner() -> type:
    """prefect-dask's DaskTaskRunner whose failure to start raises the reason as runner_failure writes
    it: the runner connects to Dask at its first task, and Dask's error quotes the address, password
    and all, in its own spelling ("invalid address 'user:secret@host:8786'"), which no detector finds;
    the flow that submitted the task records that error in Prefect's database."""
    from prefect_dask import DaskTaskRunner

    class AddressHidingDaskTaskRunner(DaskTaskRunner):
        @property
        def client(self):
            try:
                return super().client
            except Exception as exc:  # noqa: BLE001 — any reason may quote the address
                raise RuntimeError(runner_failure(exc, self.address)) from None

    return AddressHidingDaskTaskRunner


def configure_dask() -> None:
    """Dask's defaults that do not suit short-lived clusters of training jobs."""
    import dask

    # Dask narrates every worker's start and stop at INFO; the pipeline's console is its own. The
    # nanny also warns when a worker process takes over 4 s to exit at shutdown (Prefect's
    # background threads in it) and kills it: expected, so errors only.
    # prefect-dask says "Connecting to an existing Dask cluster at <address>" at INFO: the address whole.
    for logger in ("distributed", "distributed.scheduler", "distributed.core", "distributed.worker",
                   "distributed.http.proxy", "prefect.task_runner.dask"):
        logging.getLogger(logger).setLevel(logging.WARNING)
    logging.getLogger("distributed.nanny").setLevel(logging.ERROR)
    # Each job carries its D' once, by design; Dask warns about any task argument over 10 MB.
    warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
    # Dask starts its workers with MALLOC_TRIM_THRESHOLD_=65536, which fixes glibc's mmap threshold
    # low: the same single-threaded CNN retraining took 7.7–9.2 s in a worker instead of 4.9–5.7 s
    # (bench.comply). Training jobs in a short-lived cluster do not need the trimming.
    dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None})


def unreachable(address: str, timeout: str = "10s") -> str | None:
    """Why the Dask scheduler at `address` cannot be used, or None: probed before the prefetch
    subflow, whose own failure would print a traceback (and take 30 s to time out)."""
    from distributed import Client

    collect_failed_clients()
    try:
        Client(address, timeout=timeout).close()
    except Exception as exc:  # noqa: BLE001 — any reason is reported the same way
        reason = runner_failure(exc, address)
    else:
        return None
    collect_failed_clients()
    return reason


def collect_failed_clients() -> None:
    """Finalise now, where no lock is held, the Dask Clients that failed to start (ours or the task
    runner's). Left to the garbage collector, a failed Client's __del__ closes its loop runner under
    a lock shared by all of them (distributed.utils.LoopRunner._lock); collected while another
    Client starts (a thread being created can set the collector off), that close waits for ever on
    the lock the start holds: the test suite hung there once (fresh-clone CI, 2026-12-06, in
    test_failure_reasons' probes of unreachable schedulers). Called before and after each probe,
    and after a task runner failed."""
    gc.collect()


def run_on_task_runner(subflow, runner: str, address: str | None, workers: int | None, what: str,
                       otherwise: str, **params) -> dict:
    """The references subflow `subflow(**params, threads=…)` run on the `runner` task runner
    (`what`: the references it trains, as printed): {job key: reference}, or {} with a warning that
    ends with `otherwise` (what is done instead) when the scheduler cannot be reached or the runner
    fails."""
    progress(f"  retraining {what} on the {runner} task runner ...")
    problem = unreachable(address) if address else None
    if problem is not None:
        progress(f"  warning: the Dask scheduler {shown_address(address)} cannot be reached ({problem}); {otherwise}")
        return {}
    try:
        task_runner, threads = make_task_runner(runner, address, workers)
        return subflow.with_options(task_runner=task_runner)(**params, threads=threads)
    except Exception as exc:  # noqa: BLE001 — e.g. the local cluster cannot start: retrain inline
        collect_failed_clients()  # before any later Client of this process starts
        progress(f"  warning: the {runner} task runner failed ({runner_failure(exc, address)}); {otherwise}")
        return {}


def runner_failure(exc: BaseException, address: str | None) -> str:
    """failure_reason(exc) of a task runner or a Dask client, printed in a warning: its message may
    quote the scheduler's address, password and all, which it shows as shown_address does."""
    hidden = address_hidden(str(exc), address) if address else ""
    return failure_reason(RuntimeError(hidden) if hidden else exc)


def worker_environment() -> dict[str, str]:
    """What a local Dask worker process needs to report its task runs to this flow's Prefect API.
    Without a PREFECT_API_URL (a temporary server, as `unlearn comply` uses by default) every
    worker would start a temporary server of its own (~10–25 s each) and record its task runs
    there instead of beside the flow run."""
    if os.environ.get("PREFECT_API_URL"):
        return {}  # inherited by the worker processes
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return {"PREFECT_API_URL": str(client.api_url)}


@contextmanager
def prefetched(pool: dict):
    """Make `pool` (job key → trained reference) available to the verifications run inside."""
    token = _PREFETCHED.set(pool)
    try:
        yield
    finally:
        _PREFETCHED.reset(token)


def obtain(job: references.ReferenceJob, announce: str | None = None):
    """(the reference for `job`, "prefetched" | "trained"): from the pool when it holds this very
    job's key (each reference is handed out once), else trained here (after printing `announce`)."""
    pool = _PREFETCHED.get()
    if pool is not None and job.key in pool:
        return pool.pop(job.key), "prefetched"
    if announce:
        progress(announce)
    # a language model's or CNN's reference takes minutes: one line per epoch shows it is moving
    return references.train(job, progress=lambda s: progress(
        f"    epoch {s.epochs:.1f}, step {s.steps}, {s.seconds:.0f} s, loss {s.loss:.3f}")), "trained"


@step("retrain reference")
def retrain_reference(job: references.ReferenceJob, threads: int | None = None):
    if threads:
        import torch

        torch.set_num_threads(threads)
    return references.train(job)


def retrain_ahead(jobs: list[references.ReferenceJob], threads: int | None = None) -> dict:
    """Submit each distinct job to the running flow's task runner and collect them: {job key:
    reference}. A job that fails is left out: the step that needs it retrains inline and records
    the error where it belongs."""
    distinct = {}
    for job in jobs:
        distinct.setdefault(job.key, job)
    futures = {key: retrain_reference.submit(job, threads) for key, job in distinct.items()}
    pool = {}
    for key, future in futures.items():
        try:
            pool[key] = future.result()
        except Exception:  # noqa: BLE001 — retrained inline later, where a failure is recorded
            continue
    return pool
