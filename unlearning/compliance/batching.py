"""Group unlearning: several pending requests on one model become one batched request.

One update for the union of the requests costs about as much as one of them (one Hessian factor,
one verification, one retrained reference) and gives the same model as applying them in turn
would aim at: D' is the same data set either way. Requests that cannot share an update (the same
label corrected two different ways, a record deleted by one and relabelled by the other, two
redaction policies, two different classes) are kept apart by `group_requests`, which processes
them in successive batches in the order received: the later one then meets the data as the
earlier one left it. Parts of a request that would change nothing (a label already as asked, a
record an earlier request erased) are set aside before a batch runs (`no_change_notes`,
`narrowed`), and a failing batch is split (`retry_groups`).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Iterable, Mapping

from unlearning.compliance.requests import AUTO_METHOD, UnlearningRequest
from unlearning.errors import UnlearnError


def conflict(a: UnlearningRequest, b: UnlearningRequest) -> str | None:
    """Why two requests on the same model cannot be merged, or None."""
    for record in sorted(set(a.fix_labels) & set(b.fix_labels)):
        if a.fix_labels[record] != b.fix_labels[record]:
            return f"record {record} is relabelled differently"
    for deleting, relabelling in ((a, b), (b, a)):
        both = sorted(set(deleting.delete_records) & set(relabelling.fix_labels))
        if both:
            return f"record {both[0]} is deleted by {deleting.id} and relabelled by {relabelling.id}"
    if a.redact is not None and b.redact is not None:
        if a.redact.policy != b.redact.policy:
            return "different redaction policies"
        if sorted(a.redact.detectors) != sorted(b.redact.detectors):
            return "redactions restricted to different detectors"
    if a.forget_class is not None and b.forget_class is not None and a.forget_class != b.forget_class:
        return "different classes to forget"
    if a.method != b.method and AUTO_METHOD not in (a.method, b.method):
        return f"methods {a.method} and {b.method}"
    return None


def group_requests(requests: Iterable[UnlearningRequest]) -> list[list[UnlearningRequest]]:
    """Per model, greedy batches of mutually mergeable requests, in the order given: a request
    joins the first batch of its model that comes after every batch holding a request it conflicts
    with, so conflicting requests are applied in the order they were received."""
    batches: list[list[UnlearningRequest]] = []
    for request in requests:
        after = max((i for i, b in enumerate(batches) if b[0].model == request.model
                     and any(conflict(request, other) is not None for other in b)), default=-1)
        home = next((b for b in batches[after + 1:] if b[0].model == request.model), None)
        if home is None:
            batches.append([request])
        else:
            home.append(request)
    return batches


def merge_requests(requests: list[UnlearningRequest], batch_id: str) -> UnlearningRequest:
    """The union of mergeable requests on one model as one request with id `batch_id`."""
    if not requests:
        raise UnlearnError("nothing to merge: the batch is empty")
    models = {r.model for r in requests}
    if len(models) > 1:
        raise UnlearnError(f"a batch is per model, got {', '.join(sorted(models))}")
    for i, a in enumerate(requests):
        for b in requests[i + 1:]:
            why = conflict(a, b)
            if why:
                raise UnlearnError(f"requests {a.id} and {b.id} cannot share an update: {why}")
    redacts = [r.redact for r in requests if r.redact is not None]
    redact = None
    if redacts:
        findings = ("all" if any(x.findings == "all" for x in redacts)
                    else sorted({f for x in redacts for f in x.findings}))
        redact = redacts[0].model_copy(update={"findings": findings})
    methods = {r.method for r in requests} - {AUTO_METHOD}
    fix_labels: dict[str, str] = {}
    for r in requests:
        fix_labels.update(r.fix_labels)
    return UnlearningRequest(
        id=batch_id, model=requests[0].model,
        delete_records=sorted({x for r in requests for x in r.delete_records}),
        revoke_features=sorted({x for r in requests for x in r.revoke_features}),
        fix_labels=fix_labels, redact=redact,
        forget_class=next((r.forget_class for r in requests if r.forget_class is not None), None),
        method=methods.pop() if len(methods) == 1 else AUTO_METHOD,
    )


def batch_id(requests: list[UnlearningRequest], now: datetime) -> str:
    """`BATCH-<UTC time>-<digest>`, the digest over the members' content, not their ids alone: a
    batch retried without the parts that change nothing must not reuse the id of the one first
    written (its model versions carry the id, and a promoted one would be taken as its result)."""
    members = json.dumps(sorted((r.model_dump() for r in requests), key=lambda m: m["id"]), sort_keys=True,
                         default=str)
    return f"BATCH-{now.strftime('%Y%m%dT%H%M%S')}-{hashlib.sha256(members.encode()).hexdigest()[:10]}"


def retry_groups(requests: list[UnlearningRequest], refused: set[str]) -> list[list[UnlearningRequest]]:
    """After a batch of several failed: the batches to process again, in the order received. With
    the requests the current data refuses on their own (`refused`, failed alone) taken out, the
    rest share one batch again; when none is refused (a failed verification, a step's error, which
    the batch as a whole caused), each request is processed alone."""
    rest = [r for r in requests if r.id not in refused]
    if refused:
        return [rest] if rest else []
    return [[r] for r in rest]


# --- the parts of a request that would change nothing -------------------------------------------

UNCHANGED_LABEL = "label already as requested: nothing to change"


def no_change_notes(requests: list[UnlearningRequest], labels: Mapping[str, object],
                    erased: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """Per request id, the records whose part would change nothing in the data, with why: a
    relabel to the label the record carries (`labels`: the current label of each named record the
    data still holds), or a relabel or deletion of a record a completed request erased (`erased`:
    record → that request; two requests naming one record, the second batched after the first).
    Label values are not repeated: the certificate names record ids only."""
    notes: dict[str, dict[str, str]] = {}
    for request in requests:
        for record, label in [*request.fix_labels.items(), *((r, None) for r in request.delete_records)]:
            if record in labels:
                why = UNCHANGED_LABEL if label is not None and str(labels[record]) == str(label) else None
            elif record in erased:
                why = f"record erased by request {erased[record]}: nothing left to " + (
                    "relabel" if label is not None else "erase")
            else:
                why = None  # an unknown record: the forget run reports it
            if why is not None:
                notes.setdefault(request.id, {})[record] = why
    return notes


def narrowed(request: UnlearningRequest, notes: Mapping[str, str] | None) -> UnlearningRequest | None:
    """The request without the parts that change nothing (`notes`: its records from
    `no_change_notes`); None when nothing is left to do."""
    if not notes:
        return request
    fixes = {k: v for k, v in request.fix_labels.items() if k not in notes}
    rest = request.model_copy(update={"fix_labels": fixes,
                                      "delete_records": [r for r in request.delete_records if r not in notes]})
    return rest if rest.kinds() else None
