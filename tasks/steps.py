"""Planning a forget request for any kind of model: everything it refers to is loaded and validated
before anything is written (`plan_request`), and the verification reference it will need can be
planned ahead (`reference_job_for`). The kind-specific parts are the kind's (tasks.kinds); the
shared pieces are in tasks.common."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from prefect.context import TaskRunContext

from tasks import data as data_store
from tasks import dvc, tracking
from tasks.common import (
    step, Plan, dataset_digest, earlier_result, other_models_on, require_sole_model, require_trained_on_checkout,
)
from tasks.erased import record_again
from tasks.kinds import kind_of
from tasks.kinds.base import check_verify_mode_name
from unlearning import references
from unlearning.compliance.requests import UnlearningRequest, load_request
from unlearning.errors import UnlearnError


@step("validate request")
def plan_request(root: Path, request_path: Path, method: str | None = None, verify: str | None = None) -> Plan:
    """The request file's plan. The CLI plans a request to validate it before it takes the project
    lock, and the forget flow plans it again under the lock: the flow takes the CLI's plan instead
    (~0.4 s of a table request: reading and checking the table, loading the model) when what it
    was planned from is unchanged — same request file, production version, newest registered
    version and data (`planned_from`, read before the CLI's planning and again under the lock). Else
    (another run released in between) it plans again."""
    key = plan_key(root, request_path, method, verify)
    kept = take_validated_plan(key)
    if kept is not None:
        return kept
    request = load_request(Path(request_path))
    record_again(root, request)  # a lost record of a request made outside the ledger, from its file again
    # the CLI's validation, outside any flow run, is kept for the flow (never on a project
    # without a store: reading the registry there would create one)
    keep = TaskRunContext.get() is None and tracking.store_exists(root)
    before = planned_from(root, request.model) if keep else None
    plan = plan_for(root, request, method, verify)
    if keep:
        with _VALIDATED_LOCK:
            _VALIDATED["plan"] = (key, before, plan)
    return plan


# The one plan validated outside a flow run, for the flow run that follows in this process:
# (plan_key, planned_from, Plan). Taken (removed) by the next plan_request, whether it matches or not.
_VALIDATED: dict = {}
_VALIDATED_LOCK = threading.Lock()


def plan_key(root: Path, request_path: Path, method: str | None, verify: str | None) -> tuple:
    """What a plan is asked for: the project, the request file and its content, the method and
    the verification mode."""
    path = Path(request_path)
    content = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    return str(Path(root).resolve()), str(path.absolute()), content, method, verify


def planned_from(root: Path, model: str) -> tuple:
    """What planning a request for `model` reads that a release can change: the production
    version (with it its private state and budget), the version registered last (a run that
    registered one since may have processed the same request id: an earlier result), the data's
    DVC version, the production dataset's files, and the other production models on that dataset
    (one trained since the validation must stop the erasure: `require_sole_model`)."""
    tracking.connect(root)
    production = tracking.production_version(model)
    versions = tracking.newest_version(model)
    name = tracking.trained_on(production, model) if production is not None else model
    folder = Path(root) / "data" / name
    data = dataset_digest(root, name) if folder.is_dir() else None
    return (production.version if production else None, production.run_id if production else None, versions,
            dvc.dvc_file_text(root), data, tuple(other_models_on(name, model)))


def take_validated_plan(key: tuple) -> Plan | None:
    """The plan validated for `key` when what it was planned from is unchanged; None otherwise."""
    with _VALIDATED_LOCK:
        kept = _VALIDATED.pop("plan", None)
    if kept is None or kept[0] != key:
        return None
    plan = kept[2]
    return plan if planned_from(Path(key[0]), plan.request.model) == kept[1] else None


def forget_validated_plans() -> None:
    """Drop a plan no flow took (a command stopped after validating): `unlearn serve` keeps no
    table or model between commands."""
    with _VALIDATED_LOCK:
        _VALIDATED.clear()


def plan_for(root: Path, request: UnlearningRequest, method: str | None = None, verify: str | None = None) -> Plan:
    """`plan_request` for a request already in memory (comply plans parts of a batch's requests
    with it: no request file is written); read-only. `verify`: the verification mode asked for
    (None: the kind's default), refused here when the model's kind cannot use it."""
    check_verify_mode_name(verify)
    tracking.connect(root)
    production = tracking.require_production(request.model, root)
    earlier = earlier_result(root, request)
    name = tracking.trained_on(production, request.model)
    if earlier is not None:
        refuse_erased_again(root, request, name, earlier)
        return Plan(request=request, earlier=earlier)
    require_sole_model(request.model, name)
    dataset = data_store.load_dataset(root, name)
    kind, requested = kind_of(dataset), method or request.method
    checked = kind.check_request(root, request, dataset, requested)
    digest = dataset_digest(root, dataset.name)
    require_trained_on_checkout(request, production, dataset.name, digest)
    bundle = tracking.load_version_bundle(request.model, production.version)
    resolved, part = kind.plan(root, request, dataset, bundle, production, requested, checked)
    plan = Plan(request=request, kind=kind, dataset=dataset, data_version=dvc.data_version(root), data_digest=digest,
                model_name=request.model, parent_version=str(production.version), parent_run=production.run_id,
                parent_guarantee=production.tags.get("guarantee"), bundle=bundle, method=resolved, requested=requested, part=part)
    if verify is not None:
        kind.check_verify_mode(plan, verify)
    return plan


def refuse_erased_again(root: Path, request: UnlearningRequest, name: str, earlier: dict) -> None:
    """UnlearnError (one line) when data/`name` holds again what this processed request erased (its
    records, a revoked feature's values, a forgotten class's images, its secrets, a wrong label it
    fixed: tasks.erased) — a backup restored by hand, which the gates of `data add` never saw; its
    rerun was answered 'already processed' (exit 0) with the records back in the data. The data is
    not the version the request's model was trained on, so the request cannot simply run again on it."""
    from tasks.erased import back_in, renumbered
    from tasks.redacted import result_secrets
    from unlearning.compliance.ledger import request_nature

    try:
        dataset = data_store.load_dataset(root, name)
    except UnlearnError:
        return
    nature = {**request_nature(request), "secrets": sorted(result_secrets(earlier))}
    if back := back_in(dataset, {request.id: nature}, root=root):
        version = (earlier.get("model") or {}).get("version")
        raise UnlearnError(f"request {request.id} was processed (model {request.model} v{version}), but "
                           f"data/{name} holds again {back.described()} it erased: restore the data version "
                           f"that model was trained on (`git checkout data.dvc` and `dvc checkout`), or add a "
                           f"source without them (`unlearn data add {name} --file SOURCE --replace`"
                           f"{renumbered(dataset, back)}), before training on it")


def reference_job_for(root: Path, request_path: Path) -> references.ReferenceJob | None:
    """The verification reference a request file will need, planned from the current data and
    production version without writing anything (None: already processed)."""
    plan = plan_for(root, load_request(Path(request_path)))
    if plan.earlier is not None:
        return None
    return plan.kind.reference_job(plan)
