"""Scale-out, end to end on real servers (`make test-scale`, marker `scale`): a local PostgreSQL
cluster holds the Prefect server's database, the MLflow tracking server's backend store and the
request ledger; `prefect.yaml` is deployed to a `process` work pool, a worker picks up a triggered
`comply/nightly` run, and the run processes a tabular erasure request through all of them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.flows.conftest import synthetic_people
from tests.services import (BIN, REPO, api_json, child_env, create_databases, mlflow_server, postgres_bin,
                            postgres_cluster, prefect_server, run, service, workers_online)

pytestmark = pytest.mark.scale

POOL = "unlearnflow"


def unlearn(env: dict, cwd: Path, *args: str):
    done = run([str(BIN / "unlearn"), *args], env, cwd=cwd)
    assert done.returncode == 0, f"unlearn {' '.join(args)}: {done.stdout}{done.stderr}"
    return done


def prefect(env: dict, cwd: Path, *args: str, timeout: float = 600.0):
    done = run([str(BIN / "prefect"), *args], env, cwd=cwd, timeout=timeout)
    assert done.returncode == 0, f"prefect {' '.join(args)}: {done.stdout}{done.stderr}"
    return done


def sql(url: str, query: str) -> list[tuple]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(query))]
    finally:
        engine.dispose()


def test_comply_runs_through_a_worker_an_mlflow_server_and_postgresql(tmp_path):
    if postgres_bin() is None:
        pytest.skip("PostgreSQL is not installed: `make test-scale` installs it (Debian packages)")
    pytest.importorskip("psycopg2", reason="the PostgreSQL driver: `pip install -e '.[scale]'` (make test-scale)")
    logs, project = tmp_path / "logs", tmp_path / "project"
    project.mkdir()
    synthetic_people().to_csv(project / "people.csv", index=False)
    (project / "GDPR-S1.yaml").write_text("id: GDPR-S1\nmodel: people\ndelete_records: [P1003, P1004]\n"
                                          "fix_labels: {P1030: 'yes'}\n")

    with postgres_cluster(logs) as pg:
        db = create_databases(pg, "prefect", "mlflow", "ledger")
        prefect_db = db["prefect"].replace("postgresql://", "postgresql+asyncpg://")
        with prefect_server(tmp_path / "prefect-home", logs, database_url=prefect_db, wait=False) as (api, server), \
                mlflow_server(db["mlflow"], tmp_path / "mlflow-artifacts", logs) as tracking:
            env = child_env(PREFECT_API_URL=api, PREFECT_HOME=str(tmp_path / "prefect-client"),
                            UNLEARN_ROOT=str(project), MLFLOW_TRACKING_URI=tracking, UNLEARN_TRACKING_URI=None,
                            UNLEARN_LEDGER_URL=db["ledger"])
            server.wait_ready()
            unlearn(env, project, "data", "add", "people", "--file", "people.csv", "--target", "label", "--id", "person")
            trained = json.loads(unlearn(env, project, "train", "people", "--json").stdout)  # one JSON object
            assert trained["model"] == {"name": "people", "version": "1"}
            unlearn(env, project, "requests", "submit", "GDPR-S1.yaml", "--channel", "email")

            prefect(env, project, "work-pool", "create", POOL, "--type", "process")
            prefect(env, REPO, "--no-prompt", "deploy", "--all")  # prefect.yaml, as a user deploys it
            with service("prefect worker", [str(BIN / "prefect"), "worker", "start", "--pool", POOL],
                         logs / "worker.log", lambda: workers_online(api, POOL), env=env, cwd=project):
                triggered = prefect(env, project, "deployment", "run", "comply/nightly", "--watch",
                                    "--watch-timeout", "900", timeout=960)
            from mlflow import MlflowClient

            production = MlflowClient(tracking, registry_uri=tracking).get_model_version_by_alias("people", "production")

        flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", triggered.stdout).group(1)
        # Prefect: the run came from the deployment, through the pool, and its rows are in PostgreSQL
        (state, deployment, pool, parameters, pull), = sql(db["prefect"], f"""
            SELECT f.state_type, d.name, p.name, d.parameters, d.pull_steps FROM flow_run f
            JOIN deployment d ON f.deployment_id = d.id JOIN work_queue q ON f.work_queue_id = q.id
            JOIN work_pool p ON q.work_pool_id = p.id WHERE f.id = '{flow_run_id}'""")
        assert (state, deployment, pool) == ("COMPLETED", "nightly", POOL)
        assert parameters == {"root": str(project)}, (parameters, pull)  # prefect.yaml's {{ $UNLEARN_ROOT }}

        # the ledger: in PostgreSQL (no ledger.db), the request completed, the chain intact
        assert not (project / "ledger.db").exists()
        events = sql(db["ledger"], "SELECT event FROM ledger_entries WHERE request_id = 'GDPR-S1' ORDER BY seq")
        assert [e for (e,) in events] == ["received", "processing", "completed"]
        shown = unlearn(env, project, "requests", "show", "GDPR-S1", "--json").stdout
        response = json.loads(shown)["response"]
        assert response["status"] == "completed" and response["model"]["name"] == "people"
        assert json.loads(unlearn(env, project, "ledger", "verify", "--json").stdout)["ok"]
        unlearn(env, project, "certificate", "verify", response["certificate"])

        # MLflow: the new version is in the server's registry (PostgreSQL), promoted, its
        # artifacts under the server's artifact root; nothing went to a local store
        assert not (project / "mlflow" / "mlflow.db").exists()
        version = response["model"]["version"]
        registered = sql(db["mlflow"], "SELECT version, source FROM model_versions WHERE name = 'people' "
                                       "ORDER BY version")
        assert [str(v) for v, _ in registered] == ["1", version] and version == "2"
        aliases = sql(db["mlflow"], "SELECT alias, version FROM registered_model_aliases WHERE name = 'people'")
        assert aliases == [("production", 2)] and production.version == version
        assert production.source.startswith(("mlflow-artifacts:", "models:/"))
        assert any((tmp_path / "mlflow-artifacts").rglob("MLmodel"))
