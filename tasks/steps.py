"""Planning a forget request for any kind of model: everything it refers to is loaded and validated
before anything is written (`plan_request`), and the verification reference it will need can be
planned ahead (`reference_job_for`). The kind-specific parts are the kind's (tasks.kinds); the
shared pieces are in tasks.common."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from tasks import data as data_store
from tasks import dvc, tracking
from tasks.common import (
    STEP, Plan, dataset_digest, earlier_result, require_sole_model, require_trained_on_checkout,
)
from tasks.kinds import kind_of
from tasks.kinds.base import check_verify_mode_name
from unlearning import references
from unlearning.compliance.requests import UnlearningRequest, load_request


@task(name="validate request", **STEP)
def plan_request(root: Path, request_path: Path, method: str | None = None, verify: str | None = None) -> Plan:
    return plan_for(root, load_request(Path(request_path)), method, verify)


def plan_for(root: Path, request: UnlearningRequest, method: str | None = None, verify: str | None = None) -> Plan:
    """`plan_request` for a request already in memory (comply plans parts of a batch's requests
    with it: no request file is written); read-only. `verify`: the verification mode asked for
    (None: the kind's default), refused here when the model's kind cannot use it."""
    check_verify_mode_name(verify)
    tracking.connect(root)
    production = tracking.require_production(request.model, root)
    earlier = earlier_result(root, request)
    if earlier is not None:
        return Plan(request=request, earlier=earlier)
    name = production.tags.get("dataset", request.model)
    require_sole_model(request.model, name)
    dataset = data_store.load_dataset(root, name)
    kind, requested = kind_of(dataset), method or request.method
    checked = kind.check_request(root, request, dataset, requested)
    require_trained_on_checkout(request, production, dataset.name, dataset_digest(root, dataset.name))
    bundle = tracking.load_version_bundle(request.model, production.version)
    resolved, part = kind.plan(root, request, dataset, bundle, production, requested, checked)
    plan = Plan(request=request, kind=kind, dataset=dataset, data_version=dvc.data_version(root),
                model_name=request.model, parent_version=str(production.version), parent_run=production.run_id,
                bundle=bundle, method=resolved, requested=requested, part=part)
    if verify is not None:
        kind.check_verify_mode(plan, verify)
    return plan


def reference_job_for(root: Path, request_path: Path) -> references.ReferenceJob | None:
    """The verification reference a request file will need, planned from the current data and
    production version without writing anything (None: already processed)."""
    plan = plan_request.fn(root, request_path)
    if plan.earlier is not None:
        return None
    return plan.kind.reference_job(plan)
