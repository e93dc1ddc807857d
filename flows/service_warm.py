"""`unlearn serve`'s warm process (flows/service.py: the warm path): import what the commands use,
open the Prefect and MLflow clients, then listen (flows/service_server.py); and keep the scheduled
runs the same process starts on the service's own environment.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from flows.service_protocol import COMMAND_ENV, SERVICE_ENV, socket_path
from flows.service_server import Service

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
