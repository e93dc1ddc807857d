"""The only module that talks to MLflow: runs, lineage tags, model versions, aliases.

Run ids are passed explicitly (MlflowClient) rather than through MLflow's thread-local active run,
which a Prefect task started in another thread would not see.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from tasks.formats import format_of_bundle, format_of_model_folder
from tasks.version import code_version, commit_of
from unlearning.errors import UnlearnError

EXPERIMENT = "unlearnflow"
PRODUCTION = "production"
MODEL_ARTIFACT = "model"
PIP_REQUIREMENTS = ["unlearnflow", "torch==2.13.0", "pandas", "numpy"]


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
    uri = tracking_uri(root)
    if uri.startswith("sqlite:///"):
        (root / "mlflow" / "artifacts").mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient()
    found = client.get_experiment_by_name(EXPERIMENT)
    if found is not None:
        return found.experiment_id
    location = (root / "mlflow" / "artifacts").as_uri() if uri.startswith("sqlite:///") else None
    return client.create_experiment(EXPERIMENT, artifact_location=location)


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
    return MlflowClient().create_run(experiment_id, run_name=name, tags=tags).info.run_id


def end_run(run_id: str, ok: bool = True) -> None:
    MlflowClient().set_terminated(run_id, "FINISHED" if ok else "FAILED")


def set_run_tags(run_id: str, tags: dict) -> None:
    client = MlflowClient()
    for key, value in tags.items():
        client.set_tag(run_id, key, str(value))


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
    client = MlflowClient()
    for key, value in params.items():
        if value is not None:
            client.log_param(run_id, key, str(value)[:6000])


def log_metrics(run_id: str, metrics: dict) -> None:
    client = MlflowClient()
    for key, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
            client.log_metric(run_id, key, float(value))


def log_json(run_id: str, payload: dict, filename: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / filename
        path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
        MlflowClient().log_artifact(run_id, str(path))


def log_text(run_id: str, text: str, filename: str) -> None:
    MlflowClient().log_text(run_id, text, filename)


def log_dataset(run_id: str, name: str, version: str, source: Path, frame_schema: pd.DataFrame) -> None:
    """Record the dataset as a run input by its DVC hash: schema and digest only, no rows."""
    dataset = mlflow.data.from_pandas(frame_schema.head(0), source=str(source), name=name, digest=version[:36])
    MlflowClient().log_inputs(run_id, datasets=[mlflow.entities.DatasetInput(dataset._to_mlflow_entity())])


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


def log_model(run_id: str, bundle) -> str:
    """Log a ModelBundle, LMBundle or ImageBundle as a pyfunc model under the run; returns its model URI."""
    with tempfile.TemporaryDirectory() as tmp:
        path = format_of_bundle(bundle).save_model(bundle, Path(tmp) / "bundle")
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name=MODEL_ARTIFACT, python_model=str(Path(__file__).with_name("pyfunc_entry.py")), artifacts={"bundle": str(path)},
                pip_requirements=PIP_REQUIREMENTS, metadata=input_description(bundle),
                signature=model_signature(bundle))
    return info.model_uri


def register(name: str, model_uri: str, run_id: str, tags: dict) -> str:
    client = MlflowClient()
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="unlearnflow model; every version carries its lineage tags")
    # A logged model's URI (models:/<model id>, MLflow 3): a tracking server refuses it as the
    # source unless the model id comes with it (a local store does not check).
    logged = model_uri.removeprefix("models:/") if model_uri.startswith("models:/") else ""
    version = client.create_model_version(name, model_uri, run_id=run_id,
                                          tags={k: str(v) for k, v in tags.items() if v is not None},
                                          model_id=logged if logged and "/" not in logged else None)
    return str(version.version)


def set_version_tags(name: str, version: str, tags: dict) -> None:
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))


def describe_version(name: str, version, text: str) -> None:
    """The version's description: what the MLflow UI shows on its page (a tag is one row among many)."""
    MlflowClient().update_model_version(name, str(version), description=text)


def promote(name: str, version: str) -> None:
    MlflowClient().set_registered_model_alias(name, PRODUCTION, version)


def production_version(name: str):
    """The ModelVersion behind the `production` alias, or None."""
    client = MlflowClient()
    try:
        return client.get_model_version_by_alias(name, PRODUCTION)
    except MlflowException:
        return None


def production_alias(name: str) -> str:
    """The version number `production` points at; raises MlflowException when it cannot be read."""
    return str(MlflowClient().get_model_version_by_alias(name, PRODUCTION).version)


def require_production(name: str, root: Path | None = None):
    version = None if (root is not None and not store_exists(root)) else production_version(name)
    if version is None:
        raise UnlearnError(f"unknown model {name!r}: no registered version with alias 'production' "
                           f"— train one with `unlearn train {name}`")
    return version


def load_version_bundle(name: str, version: str):
    """The library bundle (ModelBundle or LMBundle) of a registered version."""
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=tmp)
        return load_any_bundle(Path(local) / "artifacts" / "bundle")


def load_any_bundle(path: Path):
    return format_of_model_folder(path).load_model(path)


def run_url_hint(run_id: str) -> str:
    return f"experiment '{EXPERIMENT}', run {run_id}"


def load_json(run_id: str, filename: str) -> dict | None:
    """A JSON artifact of a run (e.g. `result.json`, `certificate.json`), or None."""
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=filename, dst_path=tmp)
            return json.loads(Path(path).read_text())
    except (MlflowException, OSError):
        return None


def load_result(run_id: str) -> dict | None:
    """The `result.json` a flow run logged on its parent run, or None."""
    return load_json(run_id, "result.json")


def run_plots(run_id: str) -> dict[str, bytes]:
    """The PNG artifacts of a flow's parent run and its child runs, as {"step/file.png": bytes}."""
    client = MlflowClient()
    parent = client.get_run(run_id)
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
    plots = {}
    for run in [parent, *children]:
        step = run.data.tags.get("step", "run")
        for artifact in client.list_artifacts(run.info.run_id):
            if artifact.path.endswith(".png"):
                with tempfile.TemporaryDirectory() as tmp:
                    path = client.download_artifacts(run.info.run_id, artifact.path, tmp)
                    plots[f"{step}/{artifact.path}"] = Path(path).read_bytes()
    return plots


def log_figure(run_id: str, figure, filename: str) -> None:
    MlflowClient().log_figure(run_id, figure, filename)


# --- superseded versions ----------------------------------------------------------------------

def registered_model_names() -> list[str]:
    client = MlflowClient()
    try:
        return sorted(m.name for m in client.search_registered_models(max_results=1000))
    except MlflowException:
        return []


def model_versions(name: str) -> list:
    """Every registered version of a model (ModelVersion objects), oldest first."""
    try:
        found = MlflowClient().search_model_versions(f"name = '{name}'", max_results=10000)
    except MlflowException:
        return []
    return sorted(found, key=lambda v: int(v.version))


def remove_aliases(name: str, version) -> list[str]:
    """Take every alias off a version (a superseded version must not be served by an alias)."""
    client = MlflowClient()
    aliases = list(client.get_model_version(name, str(version)).aliases)
    for alias in aliases:
        client.delete_registered_model_alias(name, alias)
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
