"""The audit's steps: retraining, amortised. One reference per model, retrained on the current data
version, judges the production model for every request completed since the model's last audit
(flows/audit.py is the recipe; docs/compliance.md, "Audits").

- Coverage: the ledger's `completed` requests of the model without an audit entry yet, and the
  requests that left an escrow (every processed request leaves one, also one run by `unlearn
  forget` outside the ledger).
- Escrow (`unlearning.compliance.escrow`): at request time, before the promotion, what the audit
  will need of the removed data is sealed as `.unlearn/escrow/<model>/<forget run>.bin.pending`,
  named `<forget run>.bin` by the release's end once production moved (deleted otherwise) — the
  removed secrets of a text request (their values, contexts and each occurrence's place and written
  form, never logged; a later fast update on the same chain reads them too, to keep them down and
  measure them: tasks.kinds.text_chain.chain_secrets), nothing for a
  table (the audit compares production θ with θ retrained on the current data), the forgotten
  images of an image request. The audit that covers the request deletes it.
- Checks per kind, today's reference checks: tables, agreement and accuracy gap with the retrained
  model (unlearning.tabular.verify); text, each removed secret's exposure ≤ retrained + 2 bits,
  held-out perplexity ≤ retrained + 3 %, no secret regenerated; images, the gaps to the retrained
  CNN (|UA − UA_retrain| ≤ 10 points + 3 standard errors on the forgotten images, TA and RA drops ≤ 5
  points).
- The record: one signed document (`.unlearn/audits/<id>.json`, HMAC as certificates are) naming
  the requests and certificates it covers; each covered ledger request gets an `audited` or
  `audit_failed` entry recording the record's SHA-256.
- Crash safety: a marker `.unlearn/audits/<id>.open` lives from before the first write to after the
  last. A promotion goes through the release journal (tasks.release), so a killed audit is rolled
  back (its candidate tagged rolled_back) or committed by the next release; then `recover_audits`
  deletes the record of an audit whose promotion was rolled back, or finishes the ledger entries
  and escrow deletion of one that was promoted or needed no promotion.

Per-kind code is the `audit_<kind>` functions here. Images: the forgotten images (with the labels
the model was trained on) are escrowed too, and the production CNN is judged by the gaps of
unlearning.images.verify (UA on the forget set, RA, TA) against the CNN retrained on the current data.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from tasks import data as data_store
from tasks import dvc, ledger, state, tracking
from tasks import references as prefetch
from tasks.certificates import AUDIT_FORMAT
from tasks.common import NOT_RETRAINABLE, Lineage, Plan, progress, whole_number_option
from unlearning import references
from unlearning.compliance import escrow as sealing
from unlearning.compliance import ledger as lg
from unlearning.compliance import signing
from unlearning.errors import UnlearnError

AUDIT_DIR = Path(".unlearn") / "audits"
AUDITED_KINDS = ("table", "text", "images")


# --- the escrow, written at request time ------------------------------------------------------------

def escrow_request(lineage: Lineage, plan: Plan, verified: bool) -> Path | None:
    """Seal what an audit will need of this request's removed data, before the release (a full
    disk then fails the request, not a promoted model's escrow): sealed under its final name,
    which the release's end gives it if `production` moved (state.pending_escrow). Also the mark
    that the request awaits an audit. Returns the final path."""
    if not verified or plan.kind.name not in AUDITED_KINDS:
        return None
    from prefect.runtime import flow_run

    members = list((flow_run.parameters or {}).get("members") or [plan.request.id])
    content = {"model": plan.model_name, "kind": plan.kind.name, "requests": members,
               "request": plan.request.id, **escrow_content(lineage.root, plan, members)}
    path = escrow_file(lineage.root, plan.model_name, lineage.parent_run)
    write_private(state.pending_escrow(path), sealing.seal(content, signing.signing_key(lineage.root), escrow_name(path)))
    return path


def escrow_entries(plan: Plan, path: Path | None) -> list[dict]:
    """The certificate's entry for a request's escrow that holds removed data (a text request's
    secrets, an image request's images; a table's holds request ids only): a sealed copy kept
    beyond use until the model's next audit deletes it."""
    if path is None or plan.kind.name not in ("text", "images"):
        return []
    return [{"artifact": f"audit escrow {escrow_name(path)}", "kind": "audit_escrow",
             "action": "beyond use until the model's next audit (sealed: AES-GCM, key under .unlearn/), "
                       "then deleted"}]


def escrow_content(root: Path, plan: Plan, members: list[str]) -> dict:
    """What the audit cannot find in the current data: a text request's removed secrets, each with
    the requests of the batch that asked for it (so that a shortfall names the right request); an
    image request's forgotten images with the labels the model was trained on."""
    if plan.kind.name == "images":
        from unlearning.images.bundle import training_data

        data, req = training_data(plan.dataset, plan.bundle), plan.part.request
        return {"X": data.X[req.forget].clone(), "y": data.y[req.forget].clone(), "image_kind": req.kind,
                "forget_class": req.forget_class}
    if plan.kind.name != "text":
        return {}
    from unlearning.text import lm

    owners = secret_owners(root, plan, members)
    return {"secrets": [{"fingerprint": s.fingerprint, "detector": s.detector, "masked": s.masked,
                         "value": s.value, "prefix": s.prefix, "requests": owners.get(s.fingerprint, members),
                         "occurrences": written_occurrences(plan.dataset, s)}
                        for s in lm.secrets_of(plan.dataset, plan.part)]}


def written_occurrences(corpus, secret) -> list[dict]:
    """Where each occurrence of a removed secret was and how it was written there: what lets a later
    fast update on the same chain put the secret back into the windows the model was trained on, to
    keep suppressing and measuring it (tasks.kinds.text_chain.chain_secrets). Sealed with the escrow."""
    return [{"record": o.record, "start": o.start, "end": o.end,
             "written": corpus.text_of(o.record)[o.start:o.end]} for o in secret.occurrences]


def secret_owners(root: Path, plan: Plan, members: list[str]) -> dict[str, list[str]]:
    """fingerprint → the members of a comply batch whose own `redact` selects it (from each
    member's submitted request); empty when they cannot be read (then the whole batch owns them)."""
    from unlearning.text import lm

    if members == [plan.request.id]:
        return {}
    owners: dict[str, list[str]] = {}
    try:
        for member in members:
            spec = ledger.load_submitted(root, member).redact
            for finding in lm.select_findings(plan.part, spec.findings, spec.detectors):
                owners.setdefault(finding["fingerprint"], [])
                if member not in owners[finding["fingerprint"]]:
                    owners[finding["fingerprint"]].append(member)
    except Exception:  # noqa: BLE001 — attribution only: the batch as a whole owns its secrets then
        return {}
    return owners


escrow_file = state.escrow_file


def escrow_name(path: Path) -> str:
    """The name a sealed file is bound to: its model folder and file name."""
    return f"{path.parent.name}/{path.name}"


def write_private(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = state.private_tmp(path)
    try:
        tmp.write_bytes(content)
        tmp.chmod(0o600)
        tmp.replace(path)
    except BaseException:  # a full disk mid-write: no partial copy of removed data stays behind
        tmp.unlink(missing_ok=True)
        raise


def escrow_files(root: Path, model: str) -> list[Path]:
    folder = state.escrow_dir(root, model)
    return sorted(folder.glob("*.bin")) if folder.is_dir() else []


def open_escrows(root: Path, paths: list[Path]) -> list[dict]:
    key = signing.signing_key(root)
    return [{**sealing.open_sealed(p.read_bytes(), key, escrow_name(p)), "file": escrow_name(p)} for p in paths]


def escrowed_secrets(root: Path, model: str, runs: list[str]) -> tuple[list[dict], list[str]]:
    """(the removed secrets sealed by the forget runs `runs` whose escrow no audit has deleted yet,
    each with the requests that removed it; the runs whose escrow is gone). Raw values: in memory
    only, for the caller's frame (tasks.kinds.text_chain.chain_secrets)."""
    held = [run for run in runs if escrow_file(root, model, run).exists()]
    opened = open_escrows(root, [escrow_file(root, model, run) for run in held])
    secrets = [{**s, "requests": s.get("requests", e["requests"])} for e in opened for s in e.get("secrets", [])]
    return secrets, [run for run in runs if run not in held]


def drop_escrows(root: Path, names: list[str]) -> list[str]:
    removed = []
    for name in names:
        model, _, file = name.partition("/")
        path = state.escrow_dir(root, model) / file
        if path.exists():
            path.unlink()
            removed.append(name)
    return removed


# --- what an audit covers ----------------------------------------------------------------------------

def ledger_requests(root: Path, model: str) -> list[lg.RequestRecord]:
    """The model's completed requests no audit has covered yet, oldest first."""
    return [r for r in ledger.records(root).values()
            if r.request.get("model") == model and r.status == "completed" and not r.audits]


def has_work(root: Path, model: str) -> bool:
    return bool(escrow_files(root, model) or ledger_requests(root, model))


DEFAULT_MAX_AGE_DAYS = 30.0  # --min-requests N without --max-age


@dataclass(frozen=True)
class Cadence:
    """When a model with requests since its last audit is due for one: at `min_requests` such
    requests, or once the oldest of them is `max_age_days` old (None: no age rule). The default
    audits every model with one request. Each audit retrains once: on a quiet model a weekly audit
    of one or two requests costs a retraining per request (bench.stream), while a cadence of 50
    requests, at most a month apart, shares one among them."""

    min_requests: int = 1
    max_age_days: float | None = None

    def due(self, count: int, oldest_age_s: float) -> bool:
        """Whether `count` waiting requests, the oldest `oldest_age_s` seconds old, call for an audit
        (bench.stream simulates the same rule)."""
        if count == 0:
            return False
        if count >= self.min_requests:
            return True
        return self.max_age_days is not None and oldest_age_s >= self.max_age_days * 86400


def cadence_setting(min_requests: object = 1, max_age_days: object = None) -> Cadence:
    """The cadence of `--min-requests N` / `--max-age DAYS` (flow parameters alike); UnlearnError
    (one line) for anything but a whole number ≥ 1 and a positive number of days."""
    n = whole_number_option(min_requests, "--min-requests")
    if max_age_days is None:
        # a model that never gathers N requests is still audited: its escrow (the removed secrets
        # or images, sealed) is deleted by the audit and must not wait for ever
        return Cadence(n, None if n == 1 else DEFAULT_MAX_AGE_DAYS)
    try:
        days = float(str(max_age_days).strip())
    except ValueError:
        days = float("nan")
    if not days > 0 or days == float("inf"):
        raise UnlearnError(f"--max-age must be a positive number of days, got {max_age_days!r}")
    return Cadence(n, days)


def pending_requests(root: Path, model: str) -> tuple[int, datetime | None]:
    """(how many requests on the model no audit has covered, when the oldest of them came): each
    one through the ledger is a record; each processed outside it (`unlearn forget`) an escrow of
    its own (named by its forget run, which no ledger record's response names)."""
    escrows, records = escrow_files(root, model), ledger_requests(root, model)
    ledger_runs = {(r.response or {}).get("run_id") for r in records}
    outside = [p for p in escrows if p.stem not in ledger_runs]
    times = [datetime.fromtimestamp(p.stat().st_mtime, timezone.utc) for p in escrows] + [r.received for r in records]
    return len(records) + len(outside), min(times) if times else None


def is_due(root: Path, model: str, cadence: Cadence, now: datetime | None = None) -> bool:
    count, oldest = pending_requests(root, model)
    return count > 0 and cadence.due(count, ((now or utc_now()) - oldest).total_seconds())


def models_due(root: Path, cadence: Cadence = Cadence()) -> list[str]:
    """Every registered production model of a kind audits cover that its cadence makes due."""
    if not tracking.store_exists(root):
        return []
    tracking.connect(root)
    return [name for name in tracking.registered_model_names()
            if (production := tracking.production_version(name)) is not None
            and kind_name(root, production, name) in AUDITED_KINDS and retrainable(production)
            and is_due(root, name, cadence)]


def retrainable(production) -> bool:
    """False for a Hugging Face model imported without the checkpoint it was fine-tuned from (its
    version tags, tasks.kinds.hf.pretrained_tags): an audit has nothing to retrain it from."""
    return production.tags.get(NOT_RETRAINABLE[0]) != NOT_RETRAINABLE[1]


def due_models(root: Path, model: str | None, cadence: Cadence = Cadence()) -> list[str]:
    """The models an `audit` run would audit now; UnlearnError (one line) for an unknown model or
    one of a kind audits do not cover yet. Reads only."""
    if model is None:
        return models_due(root, cadence)
    tracking.connect(root)
    production = tracking.require_production(model, root)
    kind = kind_name(root, production, model)
    if kind not in AUDITED_KINDS:
        raise UnlearnError(f"model {model!r} is a {kind} model: audits cover {', '.join(AUDITED_KINDS)} models")
    if not retrainable(production):
        raise UnlearnError(f"model {model!r} was imported without the checkpoint it was fine-tuned from: an audit "
                           f"retrains from it; import it again with `unlearn model import {model} --from-pretrained "
                           f"DIR --dataset D --base BASE_DIR`")
    return [model] if is_due(root, model, cadence) else []


def kind_name(root: Path, production, model: str) -> str:
    """The kind of the production model's dataset ("table", "text", "images"), from its files' format."""
    from tasks.formats import format_of_dataset_folder

    return format_of_dataset_folder(data_store.dataset_dir(root, production.tags.get("dataset", model))).name


@dataclass
class AuditPlan:
    """One model's audit, planned without writing anything."""

    model: str
    kind: Any  # tasks.kinds Kind
    production: Any  # its ModelVersion
    bundle: Any
    dataset: Any
    data_version: str
    records: list  # the ledger requests covered
    escrows: list[dict]  # opened escrow contents (raw values in memory only)
    job: references.ReferenceJob = None
    b: Any = None  # a certified table model's noise
    device: str = "cpu"  # where the deep-model work computes (tasks.devices.place)

    @property
    def request_ids(self) -> list[str]:
        ids = [r.id for r in self.records]
        return ids + [i for e in self.escrows for i in e["requests"] if i not in ids]


def plan_audit(root: Path, model: str) -> AuditPlan:
    from tasks.kinds import kind_of

    tracking.connect(root)
    production = tracking.require_production(model, root)
    dataset = data_store.load_dataset(root, production.tags.get("dataset", model))
    kind = kind_of(dataset)
    bundle = tracking.load_version_bundle(model, production.version)
    plan = AuditPlan(model, kind, production, bundle, dataset, dvc.data_version(root), ledger_requests(root, model),
                     open_escrows(root, escrow_files(root, model)))
    if kind.name == "table":
        plan.b = state.load_noise(root, production.run_id)
        plan.job = references.table_job(table_problem(plan))
    elif kind.name == "images":
        from unlearning.images.bundle import training_data

        data = training_data(dataset, bundle)  # D' as it is now: the images production was trained on, kept
        plan.job = references.image_job(bundle.model.config, data.X, data.y, bundle.schedule)
    else:
        plan.job = references.text_job(bundle.model.config, bundle.settings, text_windows(plan))
    return plan


def table_problem(plan: AuditPlan):
    """A Problem whose D' is the current table (nothing to remove: retraining fits it anew)."""
    from unlearning.tabular import erasure

    problem, _, _ = erasure.build_problem(plan.bundle, plan.dataset, plan.dataset, plan.b)
    return problem


def text_windows(plan: AuditPlan) -> torch.Tensor:
    from unlearning.text import lm

    return lm.text_windows(plan.bundle.vocab, lm.training_text(plan.dataset)[0], plan.bundle.seq_len)


# --- the checks, per kind -------------------------------------------------------------------------

@dataclass
class Judgement:
    """The audit's measurements: checks, metrics, the retrained model (promotable), who fell short."""

    checks: list[dict]
    metrics: dict
    retrained: Any  # the bundle to promote
    retrain_s: float
    shortfall: list[dict] = field(default_factory=list)  # per failed check: the requests it is attributed to
    private: Any = None  # a callable computing the retrained version's private state (tables)
    tags: dict = field(default_factory=dict)


def audit_table(root: Path, plan: AuditPlan) -> Judgement:
    from tasks.kinds.tabular import certification_tags, with_spent_budget
    from unlearning.tabular import erasure, verify

    progress(f"  audit {plan.model}: retraining the table model on the current data ...")
    reference, source = prefetch.obtain(plan.job)
    problem, bundle_after, _ = erasure.build_problem(plan.bundle, plan.dataset, plan.dataset, plan.b)
    retrained = with_spent_budget(erasure.unlearned_bundle(bundle_after, reference.theta), reference)
    test = erasure.held_out_data(plan.dataset, plan.bundle)
    metrics = verify.fidelity(plan.bundle.theta, reference.theta, plan.bundle.theta, test.X, test.y)
    checks = verify.checks(metrics, verify.VerifyConfig())
    # Fidelity is a property of the model, not of one request: a shortfall is attributed to the
    # covered requests whose update was approximate (a retrained or unchanged one cannot drift).
    approximate = [r.id for r in plan.records if (r.response or {}).get("guarantee") in ("certified", "empirical")]
    shortfall = [{"check": c["name"], "requests": approximate or plan.request_ids} for c in checks if not c["passed"]]
    return Judgement(checks, {**metrics, "reference": source}, retrained, reference.stats["update_seconds"], shortfall,
                     private=lambda: erasure.model_cache(retrained, replace(plan.dataset, version=plan.data_version),
                                                         plan.b),
                     tags=certification_tags(retrained))


def audit_text(root: Path, plan: AuditPlan) -> Judgement:
    from tasks import scan
    from unlearning.text import lm

    progress(f"  audit {plan.model}: retraining the language model on the current corpus ...")
    update, source = prefetch.obtain(plan.job, None)
    retrained = lm.LMBundle(update.model, plan.bundle.vocab, plan.bundle.preset,
                            {**plan.bundle.settings, "steps": update.stats["steps"]})
    cfg, salt = lm.TextVerifyConfig(), scan.project_salt(root)
    rows, owners = [], {}
    for escrowed in plan.escrows:
        for s in escrowed["secrets"]:
            owners.setdefault(s["fingerprint"], []).extend(s.get("requests", escrowed["requests"]))
            if s["fingerprint"] in {r["fingerprint"] for r in rows}:
                continue
            secret = lm.Secret(s["fingerprint"], s["detector"], s["masked"], s["value"], s["prefix"], ())
            rows.append({"fingerprint": secret.fingerprint, "detector": secret.detector, "masked": secret.masked,
                         "after": lm.secret_exposure(plan.bundle, secret, cfg.n_candidates),
                         "retrain": lm.secret_exposure(retrained, secret, cfg.n_candidates),
                         "regenerated": lm.regenerates(plan.bundle, secret, salt, cfg.samples)})
            del secret
    ppl = {"after": lm.held_out_perplexity(plan.bundle, plan.dataset),
           "retrain": lm.held_out_perplexity(retrained, plan.dataset)}
    checks = text_checks(rows, ppl, cfg)
    metrics = {"exposure_after": max((r["after"] for r in rows), default=None),
               "exposure_retrain": max((r["retrain"] for r in rows), default=None),
               "perplexity_after": ppl["after"], "perplexity_retrain": ppl["retrain"], "secrets": len(rows),
               "regenerated": sum(r["regenerated"] for r in rows), "reference": source, "per_secret": rows}
    from tasks.kinds.hf import pretrained_tags

    return Judgement(checks, metrics, retrained, update.stats["seconds"], text_shortfall(checks, rows, owners, plan, cfg),
                     tags=pretrained_tags(retrained))


def text_checks(rows: list[dict], ppl: dict, cfg) -> list[dict]:
    """Today's reference checks on the production model: per removed secret exposure ≤ retrained +
    margin, held-out perplexity ≤ retrained × (1 + 3 %), no removed secret regenerated."""
    increase = ppl["after"] / ppl["retrain"] - 1
    checks = [{"name": "perplexity_vs_retrain", "value": increase, "threshold": f"<= {cfg.max_perplexity_increase}",
               "passed": increase <= cfg.max_perplexity_increase}]
    if rows:
        worst = max(r["after"] - r["retrain"] for r in rows)
        regenerated = sum(r["regenerated"] for r in rows)
        checks = [{"name": "exposure_vs_retrain_bits", "value": worst, "threshold": f"<= {cfg.exposure_margin_bits}",
                   "passed": worst <= cfg.exposure_margin_bits},
                  *checks,
                  {"name": "secrets_regenerated", "value": regenerated, "threshold": "== 0", "passed": regenerated == 0}]
    return checks


def text_shortfall(checks: list[dict], rows: list[dict], owners: dict, plan: AuditPlan, cfg) -> list[dict]:
    """Per failed check, the requests that fell short: those whose removed secrets fail it (by
    fingerprint and masked form only); perplexity, a property of the model, goes to them all."""
    failing = {"exposure_vs_retrain_bits": [r for r in rows if r["after"] - r["retrain"] > cfg.exposure_margin_bits],
               "secrets_regenerated": [r for r in rows if r["regenerated"]]}
    out = []
    for c in checks:
        if c["passed"]:
            continue
        bad = failing.get(c["name"])
        requests = (sorted({i for r in bad for i in owners[r["fingerprint"]]}) if bad is not None
                    else plan.request_ids)
        out.append({"check": c["name"], "requests": requests,
                    **({"secrets": [f"{r['detector']} {r['masked']}" for r in bad]} if bad else {})})
    return out


def audit_images(root: Path, plan: AuditPlan) -> Judgement:
    """The gaps of unlearning.images.verify on the production model against the retrained CNN: the
    forget set (every covered request's escrowed images), the retained training images, the test
    split (without a forgotten class). Accuracies only, the TA/RA drops first on fixed samples
    (unlearning.images.audit: the whole sets where a sample is not clear of the threshold)."""
    from dataclasses import replace

    from unlearning.images.audit import audit_checks
    from unlearning.images.bundle import tensors, test_positions
    from unlearning.images.verify import ImageVerifyConfig
    from unlearning.linalg import single_threaded

    progress(f"  audit {plan.model}: retraining the CNN on the current data ...")
    result, source = prefetch.obtain(plan.job, None)
    retrained = replace(plan.bundle, model=result.model)
    cfg = ImageVerifyConfig()
    escrowed = [e for e in plan.escrows if "X" in e]
    forgotten = {e["forget_class"] for e in escrowed if e.get("forget_class") is not None}
    retain = (plan.job.data["X"], plan.job.data["y"], list(plan.bundle.train_ids))
    positions = test_positions(plan.dataset, next(iter(forgotten)) if len(forgotten) == 1 else None, cfg.max_test)
    test = (*tensors(plan.dataset, positions), [plan.dataset.record_ids[p] for p in positions])
    # no forgotten image kept (requests from before the escrow): the retain and test drops only
    forget = (torch.cat([e["X"] for e in escrowed]), torch.cat([e["y"] for e in escrowed])) if escrowed else None
    with single_threaded():
        checks, rows = audit_checks(plan.bundle.model, retrained.model, forget, retain, test,
                                    escrowed[0]["image_kind"] if escrowed else "", cfg)
    metrics = {**rows, "forget_images": sum(len(e["y"]) for e in escrowed), "reference": source}
    shortfall = images_shortfall(checks, escrowed, plan, retrained, cfg)
    del escrowed, forget
    return Judgement(checks, metrics, retrained, result.stats["seconds"], shortfall)


def images_shortfall(checks: list[dict], escrowed: list[dict], plan: AuditPlan, retrained, cfg) -> list[dict]:
    """Per failed check, the requests that fell short: for the forget-set gap, those whose own
    images are further from the retrained model than the threshold; retain/test drops go to all."""
    from unlearning.images.verify import ua_gap_tolerance

    out = []
    for c in checks:
        if c["passed"]:
            continue
        requests = plan.request_ids
        if c["name"] == "ua_gap_to_retrain":
            gaps = [(e, forget_accuracy(plan.bundle.model, e), forget_accuracy(retrained.model, e)) for e in escrowed]
            named = sorted({i for e, a, r in gaps if abs(a - r) > ua_gap_tolerance(cfg, len(e["y"]), a, r)
                            for i in e["requests"]})
            requests = named or requests
        out.append({"check": c["name"], "requests": requests})
    return out


def forget_accuracy(model, escrowed: dict) -> float:
    """Accuracy (%) of `model` on one request's escrowed forget images (or any {"X", "y"})."""
    from unlearning.metrics.evaluate import model_outputs

    out = model_outputs(model, escrowed["X"], escrowed["y"])
    return 100 * float((out.logits.argmax(1) == escrowed["y"]).double().mean())


JUDGES = {"table": audit_table, "text": audit_text, "images": audit_images}


def judge(root: Path, plan: AuditPlan) -> Judgement:
    return JUDGES[plan.kind.name](root, plan)


# --- the signed record and the ledger's verdicts -------------------------------------------------

def audit_id(model: str, now: datetime) -> str:
    return f"AUDIT-{model}-{now.strftime('%Y%m%dT%H%M%S%f')}"


def record_path(root: Path, audit: str) -> Path:
    return Path(root) / AUDIT_DIR / f"{audit}.json"


def marker_path(root: Path, audit: str) -> Path:
    return Path(root) / AUDIT_DIR / f"{audit}.open"


def open_marker(root: Path, audit: str, model: str) -> None:
    path = marker_path(root, audit)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"audit": audit, "model": model}))


def certificate_of(record: lg.RequestRecord) -> dict:
    response = record.response or {}
    return {"id": record.id, "certificate": response.get("certificate"),
            "certificate_sha256": response.get("certificate_sha256"),
            "model_version": (response.get("model") or {}).get("version"), "guarantee": response.get("guarantee"),
            "method": response.get("method")}


def audit_record(audit: str, plan: AuditPlan, judgement: Judgement, promoted: str | None, rebase: bool,
                 code_version: str, run_id: str, now: datetime) -> dict:
    """The record's body (signed by `write_record`): no raw value, fingerprints and masked forms only."""
    passed = all(c["passed"] for c in judgement.checks)
    metrics = {k: v for k, v in judgement.metrics.items() if k != "per_secret"}
    if "per_secret" in judgement.metrics:
        metrics["secrets_measured"] = judgement.metrics["per_secret"]
    ledger_ids = [r.id for r in plan.records]
    return {
        "format": AUDIT_FORMAT,
        "audit": {"id": audit, "model": plan.model, "kind": plan.kind.name, "at": now.isoformat(), "passed": passed,
                  "rebased": bool(promoted) and passed, "run_id": run_id, "code_version": code_version},
        "production": {"version": str(plan.production.version), "run_id": plan.production.run_id},
        "data_version": plan.data_version,
        "requests": [certificate_of(r) for r in plan.records],
        "unrecorded_requests": [i for i in plan.request_ids if i not in ledger_ids],
        "checks": judgement.checks, "metrics": metrics,
        "shortfall": judgement.shortfall,
        "promoted": None if promoted is None else {
            "version": promoted, "guarantee": "exact",
            "why": "the audit failed: the retrained model replaces the production model" if not passed
            else "--rebase: the retrained model replaces the production model"},
        "escrow": {"files": [e["file"] for e in plan.escrows], "action": "deleted when this audit completed"},
        "timings": {"retrain_s": judgement.retrain_s},
    }


def write_record(root: Path, body: dict) -> Path:
    path = record_path(root, body["audit"]["id"])
    signing.write_signed(path, signing.sign(body, signing.signing_key(root)))
    path.with_suffix(".html").write_text(signing.certificate_html(json.loads(path.read_text())), encoding="utf-8")
    return path


def record_verdicts(root: Path, record: dict, path: Path) -> list[str]:
    """An `audited` / `audit_failed` entry for each covered ledger request that has none from this
    audit yet (a rerun after a crash appends only what is missing)."""
    audit, passed = record["audit"]["id"], record["audit"]["passed"]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    relative = str(path.relative_to(root))
    short = {i for s in record["shortfall"] for i in s["requests"]}
    written = []
    for request in record["requests"]:
        if any(a.get("audit") == audit for a in ledger.show(root, request["id"]).audits):
            continue
        failed = not passed
        reason = None
        if failed:
            reason = ("this request's update fell short: " if request["id"] in short else "the audit failed: ") + \
                ", ".join(s["check"] for s in record["shortfall"])
        ledger.transition(root, request["id"], "audit_failed" if failed else "audited", audit=audit, record=relative,
                          record_sha256=digest, model={"name": record["audit"]["model"],
                                                       "version": record["production"]["version"]},
                          run_id=record["audit"]["run_id"], **({"reason": reason} if reason else {}))
        written.append(request["id"])
    return written


def finish_audit(root: Path, path: Path) -> dict:
    """The steps after the record: the ledger's verdicts, the escrow deleted, the marker removed."""
    record = json.loads(path.read_text())
    written = record_verdicts(root, record, path)
    dropped = drop_escrows(root, record["escrow"]["files"])
    marker_path(root, record["audit"]["id"]).unlink(missing_ok=True)
    return {"ledger_entries": written, "escrow_deleted": dropped}


def recover_audits(root: Path) -> list[dict]:
    """Finish or roll back the audits a killed run left (call under the project lock, after
    tasks.release.recover has settled any release journal)."""
    folder = Path(root) / AUDIT_DIR
    outcomes = []
    for marker in sorted(folder.glob("*.open")) if folder.is_dir() else []:
        info = json.loads(marker.read_text())
        path = record_path(root, info["audit"])
        if not path.exists():  # stopped before its record: any candidate version was rolled back
            marker.unlink()
            outcomes.append({"id": info["audit"], "model": info["model"], "outcome": "rolled back"})
            continue
        record = json.loads(path.read_text())
        promoted = record.get("promoted")
        if promoted and rolled_back(info["model"], promoted["version"]):
            path.unlink()
            path.with_suffix(".html").unlink(missing_ok=True)
            marker.unlink()
            outcomes.append({"id": info["audit"], "model": info["model"], "outcome": "rolled back"})
            continue
        finish_audit(root, path)
        outcomes.append({"id": info["audit"], "model": info["model"], "outcome": "completed"})
    return outcomes


def rolled_back(model: str, version: str) -> bool:
    from tasks.release import ROLLED_BACK

    found = [v for v in tracking.model_versions(model) if str(v.version) == str(version)]
    return not found or ROLLED_BACK in found[0].tags


def promoted_version(path: Path) -> str | None:
    promoted = json.loads(Path(path).read_text()).get("promoted")
    return None if promoted is None else promoted["version"]


def open_audits(root: Path) -> bool:
    folder = Path(root) / AUDIT_DIR
    return folder.is_dir() and any(folder.glob("*.open"))


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
