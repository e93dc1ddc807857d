"""The audit's steps: retraining, amortised. One reference per model, retrained on the current data
version, judges the production model for every request completed since the model's last audit
(flows/audit.py is the recipe; docs/compliance.md, "Audits"). A production model that is itself that
retraining (`exact_on_current_data`) is judged exact without retraining.

- Coverage: the ledger's `completed` requests of the model without an audit entry yet, and the
  requests that left an escrow (every processed request leaves one, also one run by `unlearn
  forget` outside the ledger).
- Escrow (`unlearning.compliance.escrow`): at request time, before the promotion, what the audit
  will need of the removed data is sealed as `.unlearn/escrow/<model>/<forget run>.bin.pending`,
  named `<forget run>.bin` by the release's end once production moved (deleted otherwise) — the
  removed secrets of a text request (their values, contexts and each occurrence's place and written
  form, never logged; a later fast update on the same chain reads them too, to keep them down and
  measure them: tasks.kinds.text_chain.chain_secrets), a table request's deleted record ids (no
  data: the audit compares production θ with θ retrained on the current data, and checks that no
  deleted record is back in it), the forgotten
  images of an image request. The audit that covers the request deletes it.
- The checks per kind are tasks.audit_checks; the signed record, the ledger's verdicts and the
  recovery of a killed audit (a marker `.unlearn/audits/<id>.open` from before the first write to
  after the last; a promotion goes through the release journal, tasks.release) are
  tasks.audit_record.

Here: the escrow, what an audit covers and when a model is due (Cadence), and the audit's plan.
Images: the forgotten images (with the labels the model was trained on) are escrowed too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from tasks import certificates, dvc, ledger, state, tracking
from tasks import data as data_store
from tasks.common import (NOT_RETRAINABLE, RETRAINED_AS_TRAINED, Lineage, Plan, dataset_digest, progress,
                          whole_number_option)
from unlearning import references
from unlearning.compliance import escrow as sealing
from unlearning.compliance import ledger as lg
from unlearning.compliance import signing
from unlearning.errors import UnlearnError
from unlearning.numbers import as_written

AUDITED_KINDS = ("table", "text", "images")
ESCROWED_DATA = ("text", "images")  # kinds whose escrow holds removed data the audit judges (a table's: ids)


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
    secrets, an image request's images; a table's holds ids only): a sealed copy kept
    beyond use until the model's next audit deletes it."""
    if path is None or plan.kind.name not in ("text", "images"):
        return []
    return [{"artifact": f"audit escrow {escrow_name(path)}", "kind": "audit_escrow",
             "action": "beyond use until the model's next audit (sealed: AES-GCM, key under .unlearn/), "
                       "then deleted"}]


def escrow_content(root: Path, plan: Plan, members: list[str]) -> dict:
    """What the audit cannot find in the current data: a text request's removed secrets, each with
    the requests of the batch that asked for it (so that a shortfall names the right request); an
    image request's forgotten images with the labels the model was trained on; a table request's
    deleted record ids (no data: the audit checks that none is back in the table)."""
    if plan.kind.name == "images":
        from unlearning.images.bundle import training_data

        data, req = training_data(plan.dataset, plan.bundle), plan.part.request
        return {"X": data.X[req.forget].clone(), "y": data.y[req.forget].clone(), "image_kind": req.kind,
                "forget_class": req.forget_class, "forget_class_name": plan.part.class_name,
                "delete_records": sorted(plan.request.delete_records)}
    if plan.kind.name == "table":
        # the ids only (a ledger request's are in its recorded nature, a certificate names them too): what
        # lets the audit see a deleted record brought back into the data (tasks.audit_checks.erased_data_back)
        return {"delete_records": sorted(plan.request.delete_records),
                "revoke_features": sorted(plan.request.revoke_features)}
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


escrow_name = state.sealed_name
write_private = state.write_sealed


def escrow_files(root: Path, model: str) -> list[Path]:
    folder = state.escrow_dir(root, model)
    return sorted(folder.glob("*.bin")) if folder.is_dir() else []


def open_escrows(root: Path, paths: list[Path]) -> list[dict]:
    key = signing.signing_key(root)
    return [{**sealing.open_sealed(p.read_bytes(), key, escrow_name(p)), "file": escrow_name(p)} for p in paths]


def open_held_escrows(root: Path, paths: list[Path]) -> tuple[list[dict], list[str]]:
    """(the escrows that open, the names of those that do not: altered, renamed or sealed under
    another key). The audit goes on without the latter, whose text or image requests then fail it
    (tasks.audit_checks.judge), and deletes them with the rest: one altered byte must not stop every
    later audit of the model."""
    key = signing.signing_key(root)
    opened, unreadable = [], []
    for path in paths:
        try:
            opened.append({**sealing.open_sealed(path.read_bytes(), key, escrow_name(path)), "file": escrow_name(path)})
        except UnlearnError:
            unreadable.append(escrow_name(path))
    if unreadable and not opened and not certificates.signed_with(root, key):
        # AES-GCM cannot tell an altered file from another key: none opening and no certificate of
        # this project under this key is a wrong key (another project's UNLEARN_SIGNING_KEY, a key
        # file from the wrong backup), and treating it as tampering would fail and delete them all
        raise UnlearnError(f"none of the {len(unreadable)} audit escrow(s) opens and no certificate of this project "
                           f"was signed with this signing key: set the project's key (UNLEARN_SIGNING_KEY or "
                           f".unlearn/signing.key) and run again; nothing was changed")
    return opened, unreadable



def escrow_run(name: str) -> str:
    """The forget run an escrow file (`<model>/<run>.bin`) was sealed by."""
    return name.rsplit("/", 1)[-1].removesuffix(".bin")


def escrowed_secrets(root: Path, model: str, runs: list[str]) -> tuple[list[dict], list[str]]:
    """(the removed secrets sealed by the forget runs `runs` whose escrow no audit has deleted yet,
    each with the requests that removed it; the runs whose escrow is gone). Raw values: in memory
    only, for the caller's frame (tasks.kinds.text_chain.chain_secrets)."""
    held = [run for run in runs if escrow_file(root, model, run).exists()]
    try:
        opened = open_escrows(root, [escrow_file(root, model, run) for run in held])
    except UnlearnError as exc:  # the chain's earlier secrets cannot be measured: say what clears it
        raise UnlearnError(f"{exc}; `unlearn audit {model}` fails the request(s) it held (their data is then out "
                           "by retraining) and deletes it") from None
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
    requests (None: no count rule), or once the oldest of them is `max_age_days` old (None: no age
    rule). The default audits every model with one request. Each audit retrains at most once: on a quiet
    model a weekly audit of one or two requests costs a retraining per request (bench.stream), while
    a cadence of 50 requests, at most a month apart, shares one among them."""

    min_requests: int | None = 1
    max_age_days: float | None = None

    def due(self, count: int, oldest_age_s: float) -> bool:
        """Whether `count` waiting requests, the oldest `oldest_age_s` seconds old, call for an audit
        (bench.stream simulates the same rule)."""
        if count == 0:
            return False
        if self.min_requests is not None and count >= self.min_requests:
            return True
        return self.max_age_days is not None and oldest_age_s >= self.max_age_days * 86400


def cadence_setting(min_requests: object = None, max_age_days: object = None) -> Cadence:
    """The cadence of `--min-requests N` / `--max-age DAYS` (flow parameters alike; None: not
    given): N alone, N requests or 30 days; DAYS alone, the oldest request DAYS old however many
    wait; both, whichever comes first; neither, every model with a request. UnlearnError (one line)
    for anything but a whole number ≥ 1 and a positive number of days, and for `--max-age` beside
    `--min-requests 1`, where no age could matter (every model with a request is due)."""
    n = None if min_requests is None else whole_number_option(min_requests, "--min-requests")
    if max_age_days is None:
        # a model that never gathers N requests is still audited: its escrow (the removed secrets
        # or images, sealed) is deleted by the audit and must not wait for ever
        return Cadence(1, None) if n is None or n == 1 else Cadence(n, DEFAULT_MAX_AGE_DAYS)
    try:
        days = float(as_written(max_age_days))
    except ValueError:
        days = float("nan")
    if not days > 0 or days == float("inf"):
        raise UnlearnError(f"--max-age must be a positive number of days, got {max_age_days!r}")
    if n == 1:
        raise UnlearnError("--max-age has no effect with --min-requests 1 (every model with a request is due): "
                           "give --max-age alone to audit a model once its oldest request is DAYS old, or "
                           "--min-requests N ≥ 2")
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

    return format_of_dataset_folder(data_store.dataset_dir(root, tracking.trained_on(production, model))).name


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
    unreadable: list[str] = field(default_factory=list)  # escrow files that do not open (open_held_escrows)
    job: references.ReferenceJob = None
    b: Any = None  # a certified table model's noise
    device: str = "cpu"  # where the deep-model work computes (tasks.devices.place)
    exact: bool = False  # production is the retraining the audit would run (exact_on_current_data)
    data_digest: str | None = None  # the dataset's own version: the key of a retrained table's kept encoding
    # production's chain (tasks.audit_checks.production_chain), read once by judge for the checks
    # that use it (the text exposure rows, the escrow checks); None: unknown, and for a table
    chain: list[str] | None = None
    # a table's erasure problem on the current data (table_erasure), built once: None until asked for and
    # once nothing will read it again (the stale-map test of an exact production; the table's checks)
    table: tuple | None = None

    @property
    def request_ids(self) -> list[str]:
        ids = [r.id for r in self.records]
        return ids + [i for e in self.escrows for i in e["requests"] if i not in ids]

    def unreadable_requests(self, names: list[str] | None = None) -> tuple[list[str], list[str]]:
        """(the covered ledger requests whose escrow (of `names`, default all unreadable ones) does not
        open, the forget runs of those no ledger request names: a request outside the ledger, whose id
        was sealed in it)."""
        runs = [escrow_run(name) for name in (self.unreadable if names is None else names)]
        by_run = {(r.response or {}).get("run_id"): r.id for r in self.records}
        return [by_run[run] for run in runs if run in by_run], [run for run in runs if run not in by_run]


def exact_on_current_data(tags: dict, data_version: str | None, digest: str | None) -> bool:
    """Is the production model (its version `tags`) the retraining an audit would run now? It must be
    a retraining on the model's own schedule (RETRAINED_AS_TRAINED: a request's retraining or
    fall-back without options, an audit's promotion — not a training, an import or a retraining
    with options), on the current data version, of the dataset's files as they are (`digest`, so
    data changed without `dvc add` does not pass). Then no fast update stands between it and the
    data the covered requests left, and retraining would only train it again: the audit judges it
    exact without retraining (tasks.audit_checks.already_exact)."""
    return (data_version is not None and digest is not None and tags.get("guarantee") == "exact"
            and tags.get(RETRAINED_AS_TRAINED) == "true" and tags.get("data_after") == data_version
            and tags.get("dataset_digest") == digest)


def attested(root: Path, facts: dict, warn: bool = True) -> bool:
    """Whether the project signed that production is the retraining its tags say it is, with the files
    the audit downloaded (tasks.state.attest_exact); a one-line warning where the tags say so without
    that word (tags set or files swapped on the tracking server, a version from before the word was
    kept, a signing key changed since): the audit retrains."""
    if state.attested_exact(root, facts):
        return True
    if warn:
        progress(f"  warning: production v{facts['version']}'s MLflow tags say it was retrained on the current data, "
                 "but no word signed with this project's key vouches for it and its files as logged (.unlearn/exact/): "
                 "the audit retrains to judge it")
    return False


def plan_audit(root: Path, model: str, warn: bool = True) -> AuditPlan:
    """`warn`: print the plan's warnings (False where the plan is made a second time: the Dask prefetch).
    UnlearnError, before anything is trained or written, when the record of a request made with
    `unlearn forget` outside the ledger on the dataset is lost: its check could not be made."""
    from tasks.erased import completed_requests, outside_ledger
    from tasks.kinds import kind_of

    tracking.connect(root)
    production = tracking.require_production(model, root)
    dataset = data_store.load_dataset(root, tracking.trained_on(production, model))
    outside_ledger(root, dataset, completed_requests(root), warn)
    kind = kind_of(dataset)
    bundle, files = tracking.load_version(model, production.version)
    opened, unreadable = open_held_escrows(root, escrow_files(root, model))
    plan = AuditPlan(model, kind, production, bundle, dataset, dvc.data_version(root), ledger_requests(root, model),
                     opened, unreadable)
    digest = plan.data_digest = dataset_digest(root, tracking.trained_on(production, model))
    plan.exact = exact_on_current_data(production.tags, plan.data_version, digest) and attested(
        root, state.exact_facts(model, production.version, production.run_id, plan.data_version, digest, files), warn)
    if kind.name == "table":
        plan.b = state.load_noise(root, production.run_id)  # before table_erasure: its Problem is the audit's
    if plan.exact and kind.name == "table" and stale_feature_map(plan):
        plan.exact = False  # retrained on the current data, but in a map that still holds erased rows
    if plan.exact:
        plan.table = None  # built for the stale-map test alone: the plan lives for the whole audit (of every model)
        return plan  # nothing to retrain: plan.job stays None
    if kind.name == "table":
        plan.job = references.table_job(table_erasure(plan)[0])
    elif kind.name == "images":
        from unlearning.images.bundle import training_data

        data = training_data(dataset, bundle)  # D' as it is now: the images production was trained on, kept
        plan.job = references.image_job(bundle.model.config, data.X, data.y, bundle.schedule)
    else:
        plan.job = references.text_job(bundle.model.config, bundle.settings, text_windows(plan))
    return plan


def stale_feature_map(plan: AuditPlan) -> bool:
    """Whether production's feature map is not the one fitted on the current training rows: a
    version made before requests refitted it (2026-12-07) keeps the statistics of the rows it was
    first fitted on, erased ones included, even when it was exactly retrained."""
    return not plan.bundle.encoder.same_statistics(table_erasure(plan)[1].encoder)


def table_erasure(plan: AuditPlan) -> tuple:
    """(the Problem whose D' is the current table — nothing to remove: retraining fits it anew —,
    production's bundle in the feature map fitted on that table, the table encoded in it), built
    on first use and kept on the plan until its last reader is done (plan_audit, tasks.audit_checks.audit_table):
    the stale-map test, the reference job and the checks each built it, a pandas pass over the table
    apiece (~1 s on Adult). `plan.b` must be loaded first: the noise is part of the Problem's objective."""
    from unlearning.tabular import erasure

    if plan.table is None:
        plan.table = erasure.build_problem(plan.bundle, plan.dataset, plan.dataset, plan.b)
    return plan.table


def text_windows(plan: AuditPlan) -> torch.Tensor:
    from unlearning.text import lm

    return lm.text_windows(plan.bundle.vocab, lm.training_text(plan.dataset)[0], plan.bundle.seq_len)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
