"""What every kind of model shares in the train and forget flows: the lineage a flow run records,
console progress, the request's salted hash and earlier result, the one-model-per-dataset rule,
registration and promotion, the plan of a request and the outcome of its update.

This module imports no kind module (tasks.kinds.*): the kinds import it, never the other way round.
Tasks run in the flow's process and hand objects to each other, so caching and result persistence
are off (Prefect would otherwise hash whole tensors).
"""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks import data as data_store
from tasks import dvc, state, tracking
from unlearning.compliance.purge import ROLLED_BACK
from unlearning.compliance.requests import UnlearningRequest
from unlearning.errors import UnlearnError, masking_failures
from unlearning.numbers import whole_number_as_written
from unlearning.storage import is_os_litter
from unlearning.tabular import verify


def whole_number_option(value: object, option: str) -> int:
    """A count given on the command line or as a flow parameter, exactly as written ("3", 3):
    UnlearnError (one line) for anything but a whole number ≥ 1 ("2.5", "0", True...)."""
    n = whole_number_as_written(value)
    # exactly as written, too: '03' or '+3' is not how a count is written
    if n is None or n < 1 or str(value).strip() != str(n):
        raise UnlearnError(f"{option} must be a whole number ≥ 1, got {value!r}")
    return n


STEP = dict(cache_policy=NO_CACHE, persist_result=False, retries=0)


def step(name: str):
    """A step of the pipeline as a Prefect task (STEP's options) whose failure Prefect records
    masked: its run state and its log keep the exception's message, which may quote a user's value
    (unlearning.errors.mask_in_place)."""
    return lambda fn: task(name=name, **STEP)(masking_failures(fn))


# The version tag of a model nothing can retrain (a Hugging Face model imported without the
# checkpoint it was fine-tuned from): the audit skips it, retraining is refused.
NOT_RETRAINABLE = ("retrainable", "false")


@dataclass
class Lineage:
    """Where a flow run records itself: the parent MLflow run and the tags every run carries."""

    root: Path
    experiment: str
    parent_run: str
    tags: dict = field(default_factory=dict)

    def child(self, step: str, **extra_tags):
        """A child run of the flow's parent run, carrying the lineage tags."""
        return tracking.run(self.experiment, step, {**self.tags, "step": step, **extra_tags}, self.parent_run)


def progress(message: str) -> None:
    """Console progress for long steps, on stderr so `--json` stdout stays machine-readable."""
    print(message, file=sys.stderr, flush=True)


def console_table(header: tuple, rows: list[tuple]) -> list[str]:
    """A plain aligned console table: header, rule, rows."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip()  # noqa: E731
    return [line(header), line(["-" * w for w in widths]), *map(line, rows)]


def pyplot():
    """matplotlib.pyplot drawing into files only: the backend is chosen where a figure is made,
    never at import (importing a step module must not change a process-wide setting)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# version tag of a model retrained on its own schedule (a request's retraining or fall-back without options,
# an audit's promotion): with its data version current, the model an audit would train again
RETRAINED_AS_TRAINED = "retrained_as_trained"

# version tag of a forget run's model: the certificate's method and guarantee fields as JSON
# (unlearning.compliance.certificate.guarantee_block), what rebuilds them when the run stops after
# its promotion without its certificate (tasks.outcomes.rebuilt_certificate)
GUARANTEE_TAG = "certificate_guarantee"


def dataset_digest(root: Path, name: str) -> str:
    """sha256 over one dataset's files: its version within the repository-wide data.dvc, which leaves
    OS litter out (.dvcignore), as this does."""
    h = hashlib.sha256()
    for path in sorted((Path(root) / "data" / name).iterdir()):
        if is_os_litter(path.name):
            continue
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


# --- the plan of a request and the outcome of its update ------------------------------------------

@dataclass
class Plan:
    """A validated request with everything it refers to, before anything is written: the part every
    kind has, and `part`, what the request's kind planned (tasks.kinds.<kind>)."""

    request: UnlearningRequest
    earlier: dict | None = None  # the earlier result when this request id was processed already
    kind: Any = None  # the tasks.kinds Kind that carries the request out
    dataset: Any = None  # D, as checked out
    data_version: str | None = None
    # the dataset's own version (dataset_digest): what keys a table version's kept encoding, which a
    # request on another dataset of data/ (a new data.dvc) leaves valid
    data_digest: str | None = None
    model_name: str | None = None
    parent_version: str | None = None
    parent_run: str | None = None
    # the `guarantee` tag of that version, read with it when planning: the text chain's steps ask
    # for it several times per request, and each ask was an MLflow read
    parent_guarantee: str | None = None
    bundle: Any = None  # the production model
    method: str | None = None  # resolved (`auto` decided)
    requested: str | None = None  # the method as asked (`auto` allows falling back to retraining)
    part: Any = None  # the kind's own plan: the noise b, the findings, the image request
    device: str = "cpu"  # where the deep-model work computes (tasks.devices.place)
    keep_days: int | None = None  # keep superseded artifacts "beyond use" this long (None: purge at once)
    # When the request was accepted (the forget run's start; comply: each request's ledger entry
    # re-times it, tasks.outcomes) and when `production` moved to a model without the data.
    accepted_at: datetime | None = None
    removed_at: datetime | None = None


@dataclass
class Update:
    """A new model and how it was obtained; `detail` is what the kind's later steps need."""

    bundle: Any
    method: str
    guarantee: str
    seconds: float
    stats: dict = field(default_factory=dict)
    b: Any = None  # the private noise to keep with the new version (certified tables)
    detail: Any = None
    # what the kind's steps after the update need of the chain it continues: an image chain's, what
    # keep_for_next_update seals; a text model's, the run id of the chain's teacher (read once)
    carry: Any = None


@dataclass
class Verification:
    """The verification of an update: its metrics, its checks, the reference's cost (None: no
    model was trained to verify it), how it was verified (`mode`: "certificate", "evidence" or
    "reference", see tasks.kinds.base.VERIFY_MODES) and how many models it trained (`retrains`)."""

    metrics: dict
    checks: list[dict]
    retrain_s: float | None
    detail: Any = None
    mode: str = "reference"
    retrains: int = 1
    seconds: float | None = None  # the time spent verifying (the recipe measures it)
    # why no check with power judged the removal (every check of the forget set undecided:
    # unlearning.checks); None when one did. The verdict stays `passed`: undecided fails nothing.
    undecided: str | None = None

    @property
    def passed(self) -> bool:
        return all(c["passed"] for c in self.checks)

    def record(self) -> dict:
        """What the certificate and the JSON say of it: mode, checks, models retrained and whether
        a check with power judged the removal (`decided`, with the `reason` when none did)."""
        return {"mode": self.mode, "checks": self.checks, "retrains": self.retrains, "decided": self.undecided is None,
                **({"reason": self.undecided} if self.undecided else {})}


@dataclass
class Trained:
    """A freshly trained model with what the train flow records about it."""

    bundle: Any
    fit_seconds: float
    metrics: dict
    version_tags: dict  # `certified` and, for certified models, the budget
    b: Any = None
    cache: Callable[[], Any] | None = None  # computes the private state kept beside the version


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    return (end - start).total_seconds() if start is not None and end is not None else None


def falls_back_to_retraining(requested: str | None, method: str, checks: list[dict]) -> bool:
    """The one rule for every kind of model: a fast update that fails verification is replaced by
    the retrained reference only when the method was `auto`. An explicitly requested method is
    not silently replaced: it fails (exit 1) with its failed checks."""
    return requested == "auto" and method != "retrain" and not all(c["passed"] for c in checks)


def fallback_record(method: str, update_s: float, checks: list[dict], **measured) -> dict:
    """What the certificate and the JSON say about a failed fast update that was replaced."""
    failed = [c for c in checks if not c["passed"]]
    return {"method": method, "update_s": update_s, "failed_checks": [c["name"] for c in failed],
            "reason": "verification failed: " + verify.describe_failures(failed), **measured}


# --- requests ---------------------------------------------------------------------------------

def request_hash(root: Path, request: UnlearningRequest) -> str:
    """The request's salted hash (the ledger's `request_hash`): what MLflow and certificates hold."""
    from unlearning.compliance.signing import project_salt
    from unlearning.compliance.ledger import request_fingerprint

    return request_fingerprint(request, project_salt(root))


def earlier_result(root: Path, request: UnlearningRequest) -> dict | None:
    """The recorded result of an already processed request id (a version it promoted, not one
    rolled back or failing verification); UnlearnError if its content differs."""
    tried = [v for v in tracking.model_versions(request.model) if v.tags.get("request_id") == request.id]
    done = [v for v in tried if v.tags.get("verified") == "true" and ROLLED_BACK not in v.tags]
    if not tried:
        return None
    found = (done or tried)[-1]
    if found.tags.get("request_hash") != request_hash(root, request):
        raise UnlearnError(f"request id {request.id!r} was already used for a different request "
                           f"(model {request.model} v{found.version}): give the new request a new id")
    return tracking.load_result(found.tags["lineage_run"]) if done else None


def other_models_on(dataset: str, model: str) -> list[str]:
    """Production models other than `model` whose registered lineage (tag `dataset`) is `dataset`."""
    found = []
    for name in tracking.registered_model_names():
        version = None if name == model else tracking.production_version(name)
        if version is not None and tracking.trained_on(version, name) == dataset:
            found.append(name)
    return found


def production_dataset(root: Path, model: str, images_only: bool = False):
    """The dataset `model`'s production version was trained on, as checked out; None when it cannot
    be read (or, `images_only`, when it is not an image dataset: a table is not read for nothing
    before every batch)."""
    from tasks import formats

    try:
        tracking.connect(root)
        name = tracking.trained_on(tracking.require_production(model, root), model)
        folder = data_store.dataset_dir(root, name)
        if images_only and formats.format_of_dataset_folder(folder) is not formats.IMAGES:
            return None
        return data_store.load_dataset(root, name)
    except UnlearnError:
        return None


def require_sole_model(model: str, dataset: str) -> None:
    """An erasure must reach every model that saw the data: refuse while another production model
    was trained on the same dataset (it would keep the removed records and could no longer be
    unlearned once the data is corrected)."""
    others = other_models_on(dataset, model)
    if others:
        names = ", ".join(others)
        raise UnlearnError(f"dataset '{dataset}' is also used by production model(s) {names}: an erasure must "
                           f"reach every model trained on it; retire them first (`unlearn model retire NAME`) "
                           f"and retrain after the erasure if needed")


def require_trained_on_checkout(request: UnlearningRequest, production, name: str, digest: str) -> None:
    if production.tags.get("dataset_digest") not in (None, digest):
        raise UnlearnError(f"model {request.model} v{production.version} was trained on another version of "
                           f"data/{name} than the one checked out: restore that data version "
                           f"(`git checkout` data.dvc + `dvc checkout`) or retrain")


# --- train, register, promote -------------------------------------------------------------------

@step("load data")
def load_data(root: Path, name: str):
    dataset = data_store.load_dataset(root, name)
    version = dvc.data_version(root)
    if version is None:
        raise UnlearnError(f"data/ is not versioned yet: run `unlearn data add {name}` first")
    return dataset, version, dataset_digest(root, name)


@step("register")
def register(lineage: Lineage, name: str, bundle, b, version_tags: dict,
             cache: Callable[[], Any] | None = None) -> tuple[str, str, str]:
    """Log the model under a child run, register it, and keep its private state by that run id:
    the noise b and what `cache` computes (the Hessian cache of a table model on its training data).
    Returns (version, run id, the SHA-256 of its files as logged: what an attestation that it is
    exact binds, state.attest_exact)."""
    with lineage.child("register") as run_id:
        uri, digest = tracking.log_model(run_id, bundle)
        version = tracking.register(name, uri, run_id, {**lineage.tags, **version_tags})
        state.save_noise(lineage.root, run_id, b)
        started = time.perf_counter()
        if cache is not None:
            state.save_cache(lineage.root, run_id, cache())
        tracking.log_params(run_id, {"registered_model": name, "version": version})
        tracking.log_metrics(run_id, {"hessian_cache_seconds": time.perf_counter() - started})
    return version, run_id, digest


PROMOTE = "promote"  # the step, and its child run, that moves `production`: its end is when data left production


@step(PROMOTE)
def promote(lineage: Lineage, name: str, version: str) -> None:
    with lineage.child(PROMOTE) as run_id:
        tracking.promote(name, version)
        tracking.log_params(run_id, {"alias": tracking.PRODUCTION, "version": version})
