"""Each request's answer in the ledger: `completed` with its own signed certificate
(tasks.certificates), or `failed` with the reason (pending again: a later comply run retries it).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

from tasks import dvc, ledger, state, tracking
from tasks.certificates import write_certificate
from tasks.common import GUARANTEE_TAG, progress
from unlearning.compliance.certificate import (interrupted_certificate, no_change_certificate, request_certificate,
                                               unchanged_entries)
from unlearning.tabular.verify import describe_failures


def verification_failure(summary: dict) -> str:
    """The reason a batch whose verification failed gives its requests."""
    failed = describe_failures([c for c in summary.get("checks", []) if not c["passed"]])
    return f"verification failed ({failed}); nothing promoted"


def complete(root: Path, request, cert: dict, plots: dict | None, model: dict, **entry) -> dict:
    """Sign and write the request's certificate, then record it `completed` in the ledger with the
    certificate's SHA-256 (`entry`: the other fields of the ledger entry)."""
    cert_path = write_certificate(root, cert, plots)
    relative = str(cert_path.relative_to(root))
    ledger.transition(root, request.id, "completed", certificate=relative,
                      certificate_sha256=hashlib.sha256(cert_path.read_bytes()).hexdigest(), model=model, **entry)
    return {"id": request.id, "status": "completed", "model": model, "certificate": relative}


def complete_batch(root: Path, requests: list, summary: dict, members: list[str] | None = None,
                   notes: dict[str, dict[str, str]] | None = None,
                   rows: dict[str, dict] | None = None) -> list[dict]:
    """Ledger + signed certificate per request from a batch's forget summary (`members`: every
    request of the batch, for the certificates; default the requests given; `notes`: per request,
    the records left unchanged and why; `rows`: per request, the salted hashes of the rows it
    deleted, taken before the run (tasks.erased_rows), recorded in its entry)."""
    ids = members or [r.id for r in requests]
    notes = notes or {}
    if not summary.get("verified"):
        return [fail(root, r, verification_failure(summary)) for r in requests]
    batch_cert = batch_certificate(root, summary)
    # the update as the ledger records it: the certificate's, not the result's, which a recovery reads
    # back from MLflow (tasks.batches.promoted_result)
    update = {key: batch_cert.get(key, summary[key]) for key in ("guarantee", "method", "data")}
    plots = tracking.run_plots(summary["run_id"])  # embedded in every member's HTML report
    model = {"name": summary["model"]["name"], "version": summary["model"]["version"]}
    out = []
    for request in requests:
        cert = request_certificate(batch_cert, request, ledger.show(root, request.id), summary["request_id"], ids)
        if request.id in notes:
            cert["unchanged"] = unchanged_entries(notes[request.id])
        done = complete(root, request, cert, plots, model, **update, run_id=summary["run_id"],
                        redacted=redacted_by(request, summary),
                        erased_rows=(rows or {}).get(request.id),
                        forget_class_name=class_forgotten_by(request, summary))
        out.append({**done, "batch": summary["request_id"], "verification": summary.get("verification"),
                    "time_to_removal_s": (cert.get("timings") or {}).get("time_to_removal_s"),
                    **({"unchanged": notes[request.id]} if request.id in notes else {})})
    return out


def log_run_certificate(root: Path, run: str, certificate: dict) -> None:
    """Keep the project's signed copy of a forget run's certificate as it will read back from MLflow
    (tasks.state.keep_run_certificate), which batch_certificate takes, then log it there
    (`certificate.json`): the artifact could be rewritten by anyone who can write to the tracking
    server. The copy first: a kill between the two leaves a copy without its artifact, which the
    recovery logs from the copy (tasks.release.certify_if_missing); the other way round it left an
    artifact no copy vouched for, for good."""
    state.keep_run_certificate(root, run, json.loads(json.dumps(certificate, default=str)))
    tracking.log_json(run, certificate, "certificate.json")


def batch_certificate(root: Path, summary: dict) -> dict:
    """The certificate a batch's request certificates are made from (`summary`: its forget run's
    result): the one its run logged as the project can stand by it (run_certificate; an MLflow artifact
    that differs is named in a warning); else rebuilt from its registered version (rebuilt_certificate),
    as for a run stopped after its promotion whose release's end logged none. UnlearnError when the
    kept copy does not verify: nothing is signed."""
    run, name, version = summary["run_id"], summary["model"]["name"], str(summary["model"]["version"])
    certificate = run_certificate(root, run, name, version)
    if certificate is None:
        if tracking.load_json(run, "certificate.json") is not None:
            progress(f"  warning: certificate.json of forget run {run} in MLflow is none this project kept: the "
                     f"certificate is rebuilt from its registered version")
        return rebuilt_certificate(root, summary)
    return certificate


def run_certificate(root: Path, run: str, name: str, version: str, warn: bool = True) -> dict | None:
    """The certificate forget run `run` logged, as the project can stand by it: the project's signed
    copy (log_run_certificate), never the MLflow artifact where that copy exists, which anyone who
    can write to the tracking server can rewrite (one that differs is named in a warning: the gates,
    the audit and a batch's completion read it here); the artifact only for a run certified before
    copies were kept (its version, `name` v`version`, has no signed guarantee either); else None.
    UnlearnError when the copy does not verify. `warn` False: no warning (said already)."""
    kept = state.kept_run_certificate(root, run)
    if kept is not None:
        logged = tracking.load_json(run, "certificate.json") if warn else None  # None: killed before logging it
        if logged is not None and json.dumps(logged, sort_keys=True) != json.dumps(kept, sort_keys=True):
            progress(f"warning: certificate.json of forget run {run} in MLflow is not the certificate this project "
                     f"kept for it (.unlearn/{state.RUN_CERTIFICATES}/{run}.json): the kept one is used")
        return kept
    if guarantee_kept(root, name, version):  # certified by code that keeps a copy: an artifact without one is not
        return None
    return tracking.load_json(run, "certificate.json")  # registered before 2026-12-07: no copy of either


def guarantee_kept(root: Path, name: str, version: str) -> bool:
    """Whether the project signed the guarantee of model `name` v`version` (tasks.state.keep_guarantee):
    registered by code that keeps its run's certificate too."""
    return state.kept_guarantee(root, name, version, tracking.model_version(name, version).run_id) is not None


def rebuilt_certificate(root: Path, summary: dict, guarantee: dict | None = None) -> dict:
    """The batch's certificate when its run stopped after its promotion without logging one (`summary`:
    its result, rebuilt by tasks.release.interrupted_result, which says when production moved): the
    model, method and guarantee blocks a full one has, read from the registered version — the
    project's signed copy of its guarantee block (registered_guarantee), its tags (`verified`,
    `code_version`), its run and its parent version's — never from the request; no checks
    (unlearning.compliance.certificate.interrupted_certificate). `guarantee`: that signed block where
    the caller read it already (each reading warns of tags that differ from it)."""
    name, version = summary["model"]["name"], str(summary["model"]["version"])
    parent = summary["model"].get("parent_version")
    registered = tracking.model_version(name, version)
    tags = dict(registered.tags)
    if guarantee is None:
        guarantee = registered_guarantee(root, name, version, registered.run_id, tags)
    model = {"name": name, "version": version, "parent_version": parent, "run_id": registered.run_id,
             "parent_run_id": tracking.model_version(name, parent).run_id if parent is not None else None}
    return interrupted_certificate(guarantee, model=model, data=summary["data"],
                                   verified=tags.get("verified") == "true", code_version=tags.get("code_version"),
                                   timestamps=summary.get("timestamps"), superseded=summary.get("superseded"),
                                   interrupted=summary.get("interrupted") or "")


def registered_guarantee(root: Path, name: str, version: str, run_id: str, tags: dict) -> dict:
    """A forget run's version's method and guarantee fields as the project signed them before its
    promotion (tasks.state.keep_guarantee), never its GUARANTEE_TAG where that copy exists: whoever
    can write to the tracking server can rewrite the tag, and the project's key would sign what it
    says. The tag (else the `method` and `guarantee` tags) only for a version registered before the
    copy was kept. UnlearnError when the copy does not verify: nothing is signed."""
    kept = state.kept_guarantee(root, name, version, run_id)
    if kept is None:  # registered before 2026-12-07
        return (json.loads(tags[GUARANTEE_TAG]) if GUARANTEE_TAG in tags
                else {"method": tags.get("method"), "guarantee": tags.get("guarantee")})
    if changed := tags_unlike(kept, tags):
        progress(f"  warning: the {', '.join(changed)} tag(s) of model {name} v{version} in MLflow are not the "
                 f"guarantee this project signed before its promotion (.unlearn/guarantee/): the signed one is used")
    return kept


def tags_unlike(kept: dict, tags: dict) -> list[str]:
    """The version's tags that state another method or guarantee than the signed block `kept`."""
    signed = json.dumps(kept, sort_keys=True)
    changed = [GUARANTEE_TAG] if GUARANTEE_TAG in tags and _canonical(tags[GUARANTEE_TAG]) != signed else []
    return changed + [key for key in ("method", "guarantee") if key in tags and tags[key] != kept.get(key)]


def _canonical(text: str) -> str | None:
    """A JSON text in one form (sorted keys; NaN as written), None when it is not JSON."""
    try:
        return json.dumps(json.loads(text), sort_keys=True)
    except ValueError:
        return None


def redacted_by(request, summary: dict) -> list[str] | None:
    """The salted fingerprints of the secrets this request removed, of those its batch redacted
    (`redacted_findings`, tasks.kinds.text): its own selection, `findings: all` resolved now; the
    ledger keeps them so that no gate needs the request's wording (tasks.erased). None: not a
    redaction, or a result recorded by older code without them."""
    if request.redact is None or summary.get("redacted_findings") is None:
        return None
    from unlearning.text.lm import select_findings

    chosen = select_findings(summary["redacted_findings"], request.redact.findings, request.redact.detectors)
    return sorted({f["fingerprint"] for f in chosen})


def class_forgotten_by(request, summary: dict) -> str | None:
    """The name of the class this request's `forget_class` forgot, as its batch resolved it (an index
    written in the request named then): the ledger keeps it so that no gate needs the model's class
    list. None: not a forget_class, or a result recorded by older code without it."""
    return summary.get("forget_class") if request.forget_class is not None else None


def complete_unchanged(root: Path, request, notes: dict[str, str]) -> dict:
    """A request none of whose parts changes the data: completed without a run, its certificate
    naming the production version it leaves as it is and, per record, why nothing changed."""
    tracking.connect(root)
    production = tracking.require_production(request.model, root)
    body = no_change_certificate(request.model, production, dvc.data_version(root), datetime.now(timezone.utc))
    cert = {**request_certificate(body, request, ledger.show(root, request.id), request.id, [request.id]),
            "unchanged": unchanged_entries(notes)}
    model = {"name": request.model, "version": str(production.version)}
    done = complete(root, request, cert, None, model, guarantee="no change", method="none", data=body["data"])
    return {**done, "batch": None, "unchanged": notes}


def fail(root: Path, request, reason: str) -> dict:
    ledger.transition(root, request.id, "failed", reason=reason)  # pending again: a later run retries
    return {"id": request.id, "status": "failed", "reason": reason, "model": {"name": request.model, "version": None},
            "certificate": None}


def fail_quietly(root: Path, request, reason: str) -> None:
    """Record the failure if the ledger can still be written; else the next run reclaims it."""
    try:
        fail(root, request, reason)
    except Exception:  # noqa: BLE001 — the run is stopping for a reason already being reported
        pass
