"""The only module that talks to MLflow: runs, lineage tags, model versions, aliases.

Run ids are passed explicitly (MlflowClient) rather than through MLflow's thread-local active run,
which a Prefect task started in another thread would not see.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from tasks import factories
from tasks.formats import format_of_bundle, format_of_model_folder
from tasks.version import code_version, commit_of
from unlearning.errors import UnlearnError

EXPERIMENT = "unlearnflow"
PRODUCTION = "production"
MODEL_ARTIFACT = "model"
PIP_REQUIREMENTS = ["unlearnflow", "torch==2.13.0", "pandas", "numpy"]
BATCH = 100  # params or tags per log_batch call: MLflow's limit per request


def client() -> MlflowClient:
    """The one client of the store MLflow points at now (connect/configure choose it): made once
    per store, not once per call."""
    key = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
    found = _CLIENTS.get(key)
    if found is None:
        found = _CLIENTS[key] = MlflowClient(*key)
    return found


_CLIENTS: dict[tuple[str, str], MlflowClient] = {}


def tracking_uri(root: Path) -> str:
    """The user's MLFLOW_TRACKING_URI when set (e.g. an MLflow tracking server), else the sqlite
    store under <root>/mlflow/.

    `unlearn` records the user's value in UNLEARN_TRACKING_URI at start-up (flows.settings),
    because mlflow.set_tracking_uri() itself writes MLFLOW_TRACKING_URI into the environment.
    A flow run that a Prefect worker started never went through `unlearn`: there the
    environment the worker was given is the user's."""
    user = os.environ.get("UNLEARN_TRACKING_URI")
    if user is None:
        user = os.environ.get("MLFLOW_TRACKING_URI", "")
    return user or f"sqlite:///{Path(root).resolve() / 'mlflow' / 'mlflow.db'}"


def quiet() -> None:
    """MLflow sets its own log levels when imported; its INFO lines (database set-up) and advice
    warnings (no input example — deliberate here) are not for our users. Telemetry off."""
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    telemetry_off()


def telemetry_off() -> None:
    """MLflow decides on telemetry when it is imported (MLFLOW_DISABLE_TELEMETRY). `unlearn` sets
    that before any import (flows.settings); a process that imported mlflow first (a Prefect
    worker's flow run, a notebook) gets the same default here, before its first MLflow call: the
    client it made at import has sent nothing yet (it starts on the first recorded call). A user
    who set the variable decides."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.telemetry.client import get_telemetry_client, set_telemetry_client
    from mlflow.telemetry.utils import is_telemetry_disabled

    if is_telemetry_disabled() and get_telemetry_client() is not None:
        set_telemetry_client()  # re-reads the setting: no client


def connect(root: Path) -> None:
    """Point MLflow at the project's store without creating anything (for read-only checks)."""
    quiet()
    factories.use_project(root)  # the model factories the user passed here (tasks/factories.py)
    uri = tracking_uri(root)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)


def store_exists(root: Path) -> bool:
    uri = tracking_uri(root)
    return not uri.startswith("sqlite:///") or Path(uri[len("sqlite:///"):]).exists()


def configure(root: Path) -> str:
    """Point MLflow at the project's store and make sure the experiment exists; returns its id."""
    quiet()
    root = Path(root).resolve()
    factories.use_project(root)  # the model factories the user passed here (tasks/factories.py)
    uri = tracking_uri(root)
    if uri.startswith("sqlite:///"):
        (root / "mlflow" / "artifacts").mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    store = client()
    found = store.get_experiment_by_name(EXPERIMENT)
    if found is not None:
        return found.experiment_id
    location = (root / "mlflow" / "artifacts").as_uri() if uri.startswith("sqlite:///") else None
    return store.create_experiment(EXPERIMENT, artifact_location=location)


def git_commit(root: Path) -> str:
    """The commit the project folder `root` is checked out at; 'unknown' outside a git repository
    or in one without commits."""
    return commit_of(Path(root)) or "unknown"


# --- runs -------------------------------------------------------------------------------------

def start_run(experiment_id: str, name: str, tags: dict, parent_id: str | None = None) -> str:
    """A new run; every run records the code version that made it (lineage)."""
    tags = {"code_version": code_version(), **{k: str(v) for k, v in tags.items() if v is not None}}
    if parent_id:
        tags["mlflow.parentRunId"] = parent_id
    return client().create_run(experiment_id, run_name=name, tags=tags).info.run_id


def end_run(run_id: str, ok: bool = True) -> None:
    client().set_terminated(run_id, "FINISHED" if ok else "FAILED")


def end_if_running(run_id: str, ok: bool) -> None:
    """End a run its killed process left RUNNING; one that ended keeps its status."""
    if client().get_run(run_id).info.status == "RUNNING":
        end_run(run_id, ok)


def step_ended_at(parent_id: str, step: str) -> datetime | None:
    """When the last child run of `parent_id` for `step` (Lineage.child) ended, UTC; its start when a
    killed process left it running; None without one."""
    store = client()
    parent = store.get_run(parent_id)
    runs = store.search_runs([parent.info.experiment_id],
                             f"tags.mlflow.parentRunId = '{parent_id}' and tags.step = '{step}'")
    times = [run.info.end_time or run.info.start_time for run in runs]
    return datetime.fromtimestamp(max(times) / 1000, timezone.utc) if times else None


def set_run_tags(run_id: str, tags: dict) -> None:
    tags = [RunTag(key, str(value)) for key, value in tags.items()]
    for start in range(0, len(tags), BATCH):
        client().log_batch(run_id, tags=tags[start:start + BATCH])


@contextmanager
def run(experiment_id: str, name: str, tags: dict, parent_id: str | None = None):
    """A run (child of `parent_id` when given) that ends FAILED if the body raises."""
    run_id = start_run(experiment_id, name, tags, parent_id)
    try:
        yield run_id
    except BaseException:
        end_run(run_id, ok=False)
        raise
    end_run(run_id)


def log_params(run_id: str, params: dict) -> None:
    """One request per hundred params (was one per param)."""
    params = [Param(key, str(value)[:6000]) for key, value in params.items() if value is not None]
    for start in range(0, len(params), BATCH):
        client().log_batch(run_id, params=params[start:start + BATCH])


def log_metrics(run_id: str, metrics: dict) -> None:
    """The finite numbers of `metrics`, in one request (step 0, now: what log_metric records)."""
    now = int(time.time() * 1000)
    found = [Metric(key, float(value), now, 0) for key, value in metrics.items()
             if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value]
    if found:
        client().log_batch(run_id, metrics=found)


def log_json(run_id: str, payload: dict, filename: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / filename
        path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
        client().log_artifact(run_id, str(path))


def log_text(run_id: str, text: str, filename: str) -> None:
    client().log_text(run_id, text, filename)


def log_dataset(run_id: str, name: str, version: str, source: Path, frame_schema: pd.DataFrame) -> None:
    """Record the dataset as a run input by its DVC hash: schema and digest only, no rows."""
    dataset = mlflow.data.from_pandas(frame_schema.head(0), source=str(source), name=name, digest=version[:36])
    client().log_inputs(run_id, datasets=[mlflow.entities.DatasetInput(dataset._to_mlflow_entity())])


# --- models -----------------------------------------------------------------------------------

class UnlearnModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper over either kind of unlearnflow model.

    Tabular: a DataFrame of raw source columns in (revoked features may be absent; their values
    are ignored either way), predicted labels out. Text: a DataFrame with a `prompt` column in,
    the model's greedy 40-character continuation of each prompt out. Images: an array (n, H, W)
    or (n, C, H, W) of uint8 pixels (or floats in [0, 1]), or a DataFrame with an `image` column
    of such arrays; predicted class names out."""

    def load_context(self, context):
        self.bundle = load_any_bundle(Path(context.artifacts["bundle"]))

    def predict(self, context, model_input: pd.DataFrame, params=None):
        return format_of_bundle(self.bundle).predict(self.bundle, model_input)


def model_signature(bundle):
    """The input/output schema the MLflow UI shows on a model version's page (tasks.formats: each
    kind's)."""
    return format_of_bundle(bundle).signature(bundle)


def input_description(bundle) -> dict:
    """What the model reads, as metadata beside its signature (an input example would put real
    rows into MLflow: none is logged)."""
    return format_of_bundle(bundle).input_description(bundle)


@contextmanager
def no_requirement_mismatch_scan():
    """MLflow checks a logged model's pip requirements against the installed packages only to log a
    warning (that mlflow's logger, at ERROR here, drops), and maps every installed distribution to
    its modules for it first: ~1 s per process, measured (bench/overhead.py). The requirements
    written with the model are the same without the check."""
    from mlflow.utils import environment

    check = getattr(environment, "warn_dependency_requirement_mismatches", None)
    if check is None or logging.getLogger("mlflow").getEffectiveLevel() <= logging.WARNING:
        yield  # a newer MLflow, or a caller who wants the warning: as MLflow does it
        return
    environment.warn_dependency_requirement_mismatches = lambda requirements: None
    try:
        yield
    finally:
        environment.warn_dependency_requirement_mismatches = check


def log_model(run_id: str, bundle) -> tuple[str, str]:
    """Log a ModelBundle, LMBundle or ImageBundle as a pyfunc model under the run; returns its model
    URI and the SHA-256 of the bundle's files as logged (bundle_digest)."""
    with tempfile.TemporaryDirectory() as tmp, no_requirement_mismatch_scan():
        found = format_of_bundle(bundle)
        path = found.save_model(bundle, Path(tmp) / "bundle")
        digest = bundle_digest(path)
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name=MODEL_ARTIFACT, python_model=str(Path(__file__).with_name("pyfunc_entry.py")), artifacts={"bundle": str(path)},
                pip_requirements=PIP_REQUIREMENTS + found.requirements(bundle), metadata=input_description(bundle),
                signature=model_signature(bundle))
    return info.model_uri, digest


def bundle_digest(folder: Path) -> str:
    """SHA-256 over a saved bundle's files (relative path and bytes, in path order): what the pipeline
    loads of a version (its weights, vocabulary, settings), so that a version's files swapped on the
    tracking server no longer match what was logged."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def register(name: str, model_uri: str, run_id: str, tags: dict) -> str:
    store = client()
    try:
        store.get_registered_model(name)
    except MlflowException:
        store.create_registered_model(name, description="unlearnflow model; every version carries its lineage tags")
    # A logged model's URI (models:/<model id>, MLflow 3): a tracking server refuses it as the
    # source unless the model id comes with it (a local store does not check).
    logged = model_uri.removeprefix("models:/") if model_uri.startswith("models:/") else ""
    version = store.create_model_version(name, model_uri, run_id=run_id,
                                          tags={k: str(v) for k, v in tags.items() if v is not None},
                                          model_id=logged if logged and "/" not in logged else None)
    return str(version.version)


def set_version_tags(name: str, version: str, tags: dict) -> None:
    store = client()
    for key, value in tags.items():
        store.set_model_version_tag(name, version, key, str(value))


def model_version(name: str, version):
    """One registered version (a ModelVersion: its tags, its run id)."""
    return client().get_model_version(name, str(version))


def version_tags(name: str, version) -> dict:
    return dict(model_version(name, version).tags)


def describe_version(name: str, version, text: str) -> None:
    """The version's description: what the MLflow UI shows on its page (a tag is one row among many)."""
    client().update_model_version(name, str(version), description=text)


def promote(name: str, version: str) -> None:
    client().set_registered_model_alias(name, PRODUCTION, version)


def production_version(name: str):
    """The ModelVersion behind the `production` alias, or None."""
    store = client()
    try:
        return store.get_model_version_by_alias(name, PRODUCTION)
    except MlflowException:
        return None


def production_alias(name: str) -> str:
    """The version number `production` points at; raises MlflowException when it cannot be read."""
    return str(client().get_model_version_by_alias(name, PRODUCTION).version)


def require_production(name: str, root: Path | None = None):
    version = None if (root is not None and not store_exists(root)) else production_version(name)
    if version is None:
        raise UnlearnError(f"unknown model {name!r}: no registered version with alias 'production' "
                           f"— train one with `unlearn train DATASET --model {name}` (`unlearn train {name}` "
                           f"when its dataset is data/{name})")
    return version


def trained_on(version, model: str) -> str:
    """The dataset a registered version of `model` was trained on: its tag `dataset`, else the
    model's own name (the dataset `unlearn train NAME` trains it on)."""
    return version.tags.get("dataset", model)


def load_version_bundle(name: str, version: str):
    """The library bundle (ModelBundle or LMBundle) of a registered version."""
    return load_version(name, version)[0]


def load_version(name: str, version: str) -> tuple:
    """(the library bundle of a registered version, the SHA-256 of its files as downloaded: bundle_digest)."""
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=tmp)
        folder = Path(local) / "artifacts" / "bundle"
        return load_any_bundle(folder), bundle_digest(folder)


def load_any_bundle(path: Path):
    return format_of_model_folder(path).load_model(path)


def run_url_hint(run_id: str) -> str:
    return f"experiment '{EXPERIMENT}', run {run_id}"


def load_json(run_id: str, filename: str) -> dict | None:
    """A JSON artifact of a run (e.g. `result.json`, `certificate.json`), or None. Read from the run's
    artifact location, one query: by run id MLflow asks for the run twice and looks for a logged
    model too, which the gates of `data add` and `train` paid per request made outside the ledger
    (16.5 ms a file under cProfile, 10 ms so; 2026-12-07, load 2)."""
    try:
        location = client().get_run(run_id).info.artifact_uri
        with tempfile.TemporaryDirectory() as tmp:
            path = mlflow.artifacts.download_artifacts(artifact_uri=f"{location}/{filename}", dst_path=tmp)
            return json.loads(Path(path).read_text())
    except (MlflowException, OSError):
        return None


def load_result(run_id: str) -> dict | None:
    """The `result.json` a flow run logged on its parent run, or None."""
    return load_json(run_id, "result.json")


def run_plots(run_id: str) -> dict[str, bytes]:
    """The PNG artifacts of a flow's parent run and its child runs, as {"step/file.png": bytes}."""
    store = client()
    parent = store.get_run(run_id)
    children = store.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
    plots = {}
    for run in [parent, *children]:
        step = run.data.tags.get("step", "run")
        for artifact in store.list_artifacts(run.info.run_id):
            if artifact.path.endswith(".png"):
                with tempfile.TemporaryDirectory() as tmp:
                    path = store.download_artifacts(run.info.run_id, artifact.path, tmp)
                    plots[f"{step}/{artifact.path}"] = Path(path).read_bytes()
    return plots


def log_figure(run_id: str, figure, filename: str) -> None:
    client().log_figure(run_id, figure, filename)


# --- superseded versions ----------------------------------------------------------------------

def registered_model_names() -> list[str]:
    store = client()
    try:
        return sorted(m.name for m in store.search_registered_models(max_results=1000))
    except MlflowException:
        return []


def model_versions(name: str) -> list:
    """Every registered version of a model (ModelVersion objects), oldest first."""
    try:
        found = client().search_model_versions(f"name = '{name}'", max_results=10000)
    except MlflowException:
        return []
    return sorted(found, key=lambda v: int(v.version))


def versions_tagged(key: str) -> list:
    """Every registered version, of any model, that carries tag `key` (ModelVersion objects, by model
    and version): one filtered query on the registry's tag table (`tags.KEY LIKE '%'`: MLflow's SQL
    store, and a tracking server's), where listing every model's versions cost a query a model and
    grew with the registry."""
    found, token = [], None
    try:
        while True:
            page = client().search_model_versions(f"tags.{key} LIKE '%'", max_results=10000, page_token=token)
            found += page
            if not (token := page.token):
                break
    except MlflowException:
        return []
    return sorted(found, key=lambda v: (v.name, int(v.version)))


def newest_version(name: str) -> str | None:
    """The number of the version registered last (None: none), in one row whatever the history."""
    try:
        found = client().search_model_versions(f"name = '{name}'", max_results=1, order_by=["version_number DESC"])
    except MlflowException:
        return None
    return str(found[0].version) if found else None


def remove_aliases(name: str, version) -> list[str]:
    """Take every alias off a version (a superseded version must not be served by an alias)."""
    store = client()
    aliases = list(store.get_model_version(name, str(version)).aliases)
    for alias in aliases:
        store.delete_registered_model_alias(name, alias)
    return aliases


def version_artifact_uri(name: str, version) -> str:
    """Where a registered version's model files are stored (its logged model's artifact location)."""
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

    return ModelsArtifactRepository.get_underlying_uri(f"models:/{name}/{version}")


def delete_version_artifacts(name: str, version) -> dict:
    """Delete a version's model files from the artifact store; the registry entry and its tags
    stay (the record of what existed). Returns the location and whether it is verifiably gone."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    uri = version_artifact_uri(name, version)
    repo = get_artifact_repository(uri)
    repo.delete_artifacts()
    try:
        left = repo.list_artifacts()
    except (MlflowException, OSError):
        left = []
    return {"location": uri, "verified": not left}


def aliased_versions(name: str) -> dict[str, list[str]]:
    """version → its aliases, for every version of a model that has one (one call, where a version's
    own record would cost one call per version)."""
    found: dict[str, list[str]] = {}
    for alias, version in client().get_registered_model(name).aliases.items():
        found.setdefault(str(version), []).append(alias)
    return found


def remove_version_aliases(name: str, aliases: list[str]) -> None:
    store = client()
    for alias in aliases:
        store.delete_registered_model_alias(name, alias)
