"""Releasing a new model version: every step before the promotion can be undone, every step after
it only rolls forward.

The commit point is the `production` alias. Until it moves, a failure — an exception in any step,
a failed verification, a killed process — is rolled back: data.dvc and data/ are restored to the
version the run started from (its objects are still in the cache: nothing is purged before a
promotion), the abandoned data version's own objects are deleted, and model versions the run
registered are tagged `rolled_back`. Once the alias has moved, the superseded versions are tagged
with their purge date (`unlearning.compliance.purge`), and a purge that fails is retried by the next comply run.

A journal `.unlearn/releases/<run>.json` (the restore point: the text of data.dvc, the model and
its production version) is written before the first data write and removed when the run has
finished either way. One left behind by a killed process (or by a rollback that itself failed,
e.g. on a full disk) is finished by whichever command next changes the project before it reads
anything, under the project lock — forget and comply where they take it (`release_lock`), train
and data add first thing (`recover_interrupted`): rolled back if `production` did not move, else
committed — and finished as the killed run's own end would have (`finish_interrupted`: purges,
result, its MLflow run ended), so a rerun of its request is answered "already processed".

The project lock (`.unlearn/project.lock`) is held by forget and comply for their whole run, so
a journal whose run is alive is never taken for an abandoned one; a second such command stops
with one line naming the holder.
"""

from __future__ import annotations

import errno
import contextlib
import fcntl
import functools
import inspect
import json
import os
import sys
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path


from tasks import dvc, state, tracking
from tasks.common import PROMOTE, Lineage, Plan, progress, step
from unlearning.compliance import purge as rule
from unlearning.errors import UnlearnError, failure_reason

JOURNAL_DIR = Path(".unlearn") / "releases"
LOCK_FILE = Path(".unlearn") / "project.lock"
_HELD: dict[str, int] = {}  # project root → how deep this process holds its lock (comply calls forget)
_UNFINISHED: set[str] = set()  # project roots where a release of this process could not finish its journal


class ProjectBusy(UnlearnError):
    """Another command holds the project lock. Not bad input: the other run is doing the work."""

    exit_code = 1


@dataclass
class Journal:
    """The restore point of one forget run."""

    run: str  # the forget run's parent MLflow run: every version it registers carries it as `lineage_run`
    model: str
    parent_version: str  # production when the run started
    data_before: str
    dvc_text: str  # data.dvc as it was
    keep_days: int | None
    started: str

    def path(self, root: Path) -> Path:
        return Path(root) / JOURNAL_DIR / f"{self.run}.json"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def keep_days_setting(value: object) -> int | None:
    """--keep-superseded DAYS when given, else the UNLEARN_KEEP_SUPERSEDED_DAYS setting, else None (purge now)."""
    if value is not None:
        return rule.check_keep_days(value)
    return rule.check_keep_days(os.environ.get(rule.KEEP_ENV), rule.KEEP_ENV)


# --- the journal ------------------------------------------------------------------------------

def begin(root: Path, plan: Plan, run: str, keep_days: int | None) -> Journal:
    journal = Journal(run=run, model=plan.model_name, parent_version=str(plan.parent_version),
                      data_before=plan.data_version, dvc_text=dvc.dvc_file_text(root), keep_days=keep_days,
                      started=rule.iso(utc_now()))
    path = journal.path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(journal), indent=2, sort_keys=True))
    os.replace(tmp, path)  # a journal is whole or absent
    return journal


def open_journals(root: Path) -> list[Journal]:
    folder = Path(root) / JOURNAL_DIR
    return [Journal(**json.loads(p.read_text())) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def promoted(journal: Journal) -> str | None:
    """The version `production` moved to since the journal was written, or None. Raises when the
    registry cannot be read: undecided, the journal stays for the next comply run."""
    current = tracking.production_alias(journal.model)
    return None if current == journal.parent_version else current


def finish(root: Path, journal: Journal, reason: str, interrupted: bool = False) -> dict:
    """Commit (production moved: make sure the superseded versions are scheduled for purging) or
    roll back (restore the data, tag the run's candidate versions); then drop the journal.
    `interrupted`: the run will not get to what follows its promotion (its process is gone:
    `recover`; or it raised), so that is done here (`finish_interrupted`), and its MLflow run is ended."""
    new = promoted(journal)
    state.settle_escrow(root, journal.model, journal.run, promoted=new is not None)
    if new is not None:
        now = utc_now()
        marked = mark_superseded(root, journal.model, new, journal.parent_version, journal.data_before,
                                 journal.keep_days, now)
        outcome = {"run": journal.run, "outcome": "committed", "model": journal.model, "version": new}
        if interrupted:
            outcome["superseded"] = finish_interrupted(root, journal, new, marked, now)
    else:
        restored = dvc.restore_version(root, journal.dvc_text)
        candidates = [v.version for v in tracking.model_versions(journal.model)
                      if v.tags.get("lineage_run") == journal.run]
        for version in candidates:
            tracking.set_version_tags(journal.model, version, {rule.ROLLED_BACK: reason, "verified": "false"})
            tracking.describe_version(journal.model, version, rolled_back_description(reason, journal.parent_version))
        outcome = {"run": journal.run, "outcome": "rolled back", "model": journal.model, "reason": reason,
                   "production": journal.parent_version, "data": restored,
                   "candidate_versions": [str(v) for v in candidates]}
        if interrupted:
            tracking.end_if_running(journal.run, ok=False)
    journal.path(root).unlink(missing_ok=True)  # last: a kill before it leaves all of the above to redo
    return outcome


def finish_interrupted(root: Path, journal: Journal, new: str, marked: list[dict], now: datetime) -> list[dict]:
    """What a run killed (or failed) after its promotion did not get to, as its own end does it: the superseded
    versions due now purged (model files, private state such as the encoded rows of the old data,
    the old data version's DVC objects), a forget run's `result.json` (what a rerun of the request
    answers "already processed" from) and `certificate.json` (rebuilt from the registered version:
    a bare `unlearn forget` has no other; without checks, as the verification it would report died
    with the process — its child runs keep the metrics), its MLflow run ended. Returns what happened
    to each superseded artifact. Every step is idempotent: a kill during it is finished again."""
    superseded = kept_beyond_use(root, journal.model, marked, now) + enforce_due_purges(root, journal.model, now)
    registered = tracking.model_version(journal.model, new)
    tags = dict(registered.tags)
    # an audit's release keeps its own record; a run killed after logging its own result or certificate keeps it
    if tags.get("lineage_run") == journal.run and tags.get("request_id"):
        from tasks.outcomes import registered_guarantee

        result, guarantee = tracking.load_result(journal.run), None
        if result is None:
            # read once for the result and its certificate: reading it warns when the tags differ
            guarantee = registered_guarantee(root, journal.model, new, registered.run_id, tags)
            result = interrupted_result(journal, new, registered, superseded, guarantee)
            tracking.log_json(journal.run, result, "result.json")
        certify_if_missing(root, journal.run, result, tags, guarantee)
    tracking.end_if_running(journal.run, ok=True)
    return superseded


def certify_if_missing(root: Path, run: str, result: dict, tags: dict, guarantee: dict | None = None) -> None:
    """Log a certificate on a forget run stopped after its promotion (`result`: its result, `tags`:
    its registered version's, `guarantee`: its signed guarantee block if already read) where it has
    none: its own, from the project's signed copy where the run kept one before it stopped (kept
    before the artifact: tasks.outcomes.log_run_certificate; AlteredState when it does not verify),
    else the one rebuilt from its registered version."""
    from tasks.outcomes import log_run_certificate

    if tracking.load_json(run, "certificate.json") is not None:
        return
    kept = state.kept_run_certificate(root, run)
    if kept is not None:
        tracking.log_json(run, kept, "certificate.json")
    else:
        log_run_certificate(root, run, interrupted_run_certificate(root, run, result, tags, guarantee))


def certify_earlier(root: Path, result: dict) -> None:
    """For a rerun answered "already processed": the certificate of its run if that run stopped after
    its promotion and was finished by code that rebuilt none (before 2026-12-07), which left the
    promoted version without one for good."""
    if result.get("interrupted"):
        certify_if_missing(root, result["run_id"], result,
                           tracking.version_tags(result["model"]["name"], result["model"]["version"]))


def interrupted_run_certificate(root: Path, run: str, result: dict, tags: dict, guarantee: dict | None = None) -> dict:
    """The certificate of a forget run stopped after its promotion (tasks.outcomes.rebuilt_certificate),
    with the `request` block a run's own certificate has: the ids the run recorded before its
    release (tasks.erased.RERECORDED) and the version's salted request hash; none where that record
    is gone or names another request."""
    from tasks import erased
    from tasks.outcomes import rebuilt_certificate

    recorded = erased.named_request(tracking.load_json(run, erased.RERECORDED), tags["request_id"])
    request = {**recorded, "request_hash": tags.get("request_hash")} if recorded is not None else None
    return {**rebuilt_certificate(root, result, guarantee), **({"request": request} if request is not None else {})}


def interrupted_result(journal: Journal, new: str, registered, superseded: list[dict], guarantee: dict) -> dict:
    """The summary of a forget run killed (or failed) after its promotion, from its `registered`
    version: its method and guarantee as the project signed them before the promotion (`guarantee`:
    tasks.outcomes.registered_guarantee; the ledger records them), the rest from its tags; and when
    production moved: the end of the run's promote step (tasks.common.promote)."""
    tags = dict(registered.tags)
    removed = tracking.step_ended_at(journal.run, PROMOTE)
    return {"request_id": tags["request_id"], "status": "completed", "verified": True, "promoted": True,
            "method": guarantee.get("method"), "guarantee": guarantee.get("guarantee"),
            "model": {"name": journal.model, "version": new, "parent_version": journal.parent_version},
            "data": {"before": journal.data_before, "after": tags.get("data_after")},
            "run_id": journal.run, "superseded": superseded, "certificate": None,
            "timestamps": {"removed": removed.isoformat() if removed else None},
            "interrupted": "the run stopped (killed, or failed) after its promotion; its release was finished "
                           "without it (no checks: its verification's record is in its MLflow child runs)"}


@contextmanager
def rollback_unless_promoted(lineage: Lineage, plan: Plan, keep_days: int | None):
    """Around a forget recipe: on any exception, or when it ends without promoting, undo it.
    Yields a dict that receives the outcome (for the run's summary)."""
    journal = begin(lineage.root, plan, lineage.parent_run, keep_days)
    outcome: dict = {}
    try:
        try:
            yield outcome
        except BaseException as exc:
            reason = failure_reason(exc)  # an MLflow tag and the run's outcome: any exception may quote a value
            try:
                # after the promotion, what the run will not get to now is done as for a killed run: a
                # rerun of the request then answers "already processed" (its records are gone)
                outcome.update(finish(lineage.root, journal, f"failed: {reason}", interrupted=True))
            except Exception as again:  # noqa: BLE001 — the journal stays; the next release finishes it
                progress(f"  warning: the release of forget run {lineage.parent_run} could not be finished after "
                         f"it failed ({failure_reason(again)}): the next release of the project finishes it")
            raise
        outcome.update(finish(lineage.root, journal, "verification failed: not promoted"))
    finally:
        if journal.path(lineage.root).exists():
            _UNFINISHED.add(_key(lineage.root))  # even a release nested in this process's lock recovers it


class ReleaseLeftOpen(UnlearnError):
    """A forget run failed and its release could not be finished (not even on a second try): whether
    its records are gone is for the next command's recovery to say. Not bad input."""

    exit_code = 1


def finish_left_open(root: Path, cause: BaseException) -> bool:
    """After a forget run raised (`cause`) and left its release open: finish it now, once more (a
    transient failure: the comply run goes on with its outcome, reported as a recovery's). True when
    it did, False when none was open; ReleaseLeftOpen when it is still open: the caller must leave
    the run's requests as a killed run would (`processing`, their batch's manifest kept), for failed
    now they would be retried on data that may no longer hold their records, and refused for good.
    Call only under the project lock, which recovered every journal but this run's when it was taken."""
    journals = open_journals(root)
    if not journals:
        return False
    try:
        recovered_and_told(root)
    except Exception as again:  # noqa: BLE001 — reported below; the journal stays for the next command
        if unwritable_cause(again) is not None:
            raise  # the machine's (a full disk): one line from the CLI (flows.cli.unwritable)
        raise ReleaseLeftOpen(f"forget run {journals[0].run} failed ({failure_reason(cause)}) and its release could "
                              f"not be finished ({failure_reason(again)}): its requests stay processing; run "
                              f"`unlearn comply` again once that is fixed, which finishes them") from cause
    return True


def recover(root: Path) -> list[dict]:
    """Finish the journals of runs that were killed (call only under the project lock)."""
    journals = open_journals(root)
    if journals:
        tracking.connect(root)
    return [finish(root, j, "interrupted: the run stopped before promoting (recovered by a later run)",
                   interrupted=True) for j in journals]


# OSErrors of the machine, not of a request: a full disk (or quota), a read-only or unwritable project
UNWRITABLE = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def unwritable_cause(exc: BaseException) -> OSError | None:
    """The OSError of an unwritable project behind `exc` (DVC, MLflow and Prefect wrap it), or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError) and exc.errno in UNWRITABLE:
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def open_lock_file(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)


@contextmanager
def project_lock(root: Path, command: str, reentrant: bool = False):
    """An exclusive advisory lock on .unlearn/project.lock for one command's run. A second holder
    does not wait: ProjectBusy names the first. `reentrant`: a flow another flow of this process
    may run under its lock (comply runs forget) nests instead."""
    key = _key(root)
    if _HELD.get(key):
        if not reentrant:
            raise busy(Path(root))
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    fd = open_lock_file(Path(root) / LOCK_FILE)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise busy(Path(root)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {command}".encode(), 0)
        _HELD[key] = 1
        try:
            yield
        finally:
            _HELD.pop(key, None)
    finally:
        os.close(fd)  # releases the lock


def _key(root: Path) -> str:
    return str(Path(root).resolve())


def busy(root: Path) -> ProjectBusy:
    try:
        pid, _, holder = (root / LOCK_FILE).read_text(errors="replace").strip().partition(" ")
    except OSError:
        pid, holder = "", ""
    return ProjectBusy(f"another `unlearn {holder or 'command'}` run is in progress (pid {pid or 'unknown'}); "
                       f"its work goes on — run again when it has finished")


def project_lock_once_started(root: Path, command: str):
    """The project lock for a command that changes data or models (`data add`, `train`, `model
    retire`), so it cannot move them under a running `forget`/`comply` release. Taken only where
    the lock file exists: a forget or comply creates it before doing anything else, so where it
    is absent none has run — and a refused input on a new project leaves no lock file behind."""
    if not (Path(root) / LOCK_FILE).exists():
        return contextlib.nullcontext()
    return project_lock(root, command)


@contextmanager
def release_lock(root: Path, command: str, reentrant: bool = False, report: bool = True):
    """The project lock for a command that releases model versions (forget, comply), taken once
    what a killed run left has been finished (rolled back or committed), so that the command reads
    the data as production was trained on it. Recovery runs where the lock is taken, once: nested
    under a holder of this process (comply runs forget; the CLI's forget takes it before the flow,
    see `validated_release`), it runs again only for a journal a release of this process could not
    finish (its rollback failed: comply's next batch must not start from that data). Yields the
    recovered outcomes (`report`: also told on stderr)."""
    key = _key(root)
    nested = bool(_HELD.get(key))
    with project_lock(root, command, reentrant):
        yield recovered_and_told(root, report) if not nested or key in _UNFINISHED else []


@contextmanager
def validated_release(root: Path, command: str, validate):
    """For a CLI command that validates its input (`validate()`, read-only) before a flow releases,
    with recovery run once: where a killed run left a journal, the release lock is taken (and
    what it left finished) before the validation, which must read the data production was trained
    on; else the lock is taken after the validation — a refused input writes nothing, not even
    the lock file — still outside the flow (a busy project then makes no failed flow run), and
    that is where recovery runs (a run killed meanwhile)."""
    left = bool(open_journals(root))
    with release_lock(root, command) if left else contextlib.nullcontext([]):
        validate()
        with release_lock(root, command, reentrant=left):  # nests only under the lock taken just above
            yield


def under_project_lock(command: str):
    """A flow decorator: the flow runs under the release lock (nested when its caller holds it,
    recovered by whoever took it)."""
    def wrap(fn):
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def run(*args, **kwargs):
            root = Path(signature.bind(*args, **kwargs).arguments["root"])
            with release_lock(root, command, reentrant=True):
                return fn(*args, **kwargs)
        # resolved here: Prefect would resolve the string annotations in this module, not the flow's
        run.__signature__ = inspect.signature(fn, eval_str=True)
        return run
    return wrap


def recovered_and_told(root: Path, report: bool = True) -> list[dict]:
    """`recover`, the project no longer marked unfinished, each outcome told on stderr (`report`)."""
    outcomes = recover(root)
    _UNFINISHED.discard(_key(root))
    for outcome in outcomes if report else []:
        report_recovery(outcome)
    return outcomes


def report_recovery(outcome: dict) -> None:
    what = (f"rolled back (data restored to {outcome['data']['restored']}, production stays "
            f"v{outcome['production']})" if outcome["outcome"] == "rolled back"
            else f"committed (production v{outcome['version']}"
            + "".join(f"; {x['artifact']}: {x['action']}" for x in outcome.get("superseded", [])) + ")")
    print(f"recovered an interrupted run of model {outcome['model']}: {what}", file=sys.stderr, flush=True)


def recover_interrupted(root: Path, command: str) -> list[dict]:
    """Finish what a killed run left (its release rolled back or committed) before a command that
    does not release (`data add`, `train`) reads the data: without it a train after a killed
    `forget` would fit on data production was not trained on. Takes the lock only when there is
    something to finish, so a command on a fresh project writes nothing."""
    if not open_journals(root):
        return []
    with project_lock(root, command):
        return recovered_and_told(root)


# --- after the promotion --------------------------------------------------------------------------

def mark_superseded(root: Path, model: str, new_version: str, parent_version: str, data_before: str,
                    keep_days: int | None, now: datetime | None = None) -> list[dict]:
    """Tag every version the new one supersedes with its purge date and take its aliases off.
    Idempotent (a rerun after a crash changes nothing already set). Returns per version the
    tags it carries now."""
    now = now or utc_now()
    stored = tracking.model_versions(model)
    versions = {str(v.version): dict(v.tags) for v in stored}
    runs = {str(v.version): v.run_id for v in stored}
    aliased = tracking.aliased_versions(model)
    when = rule.purge_time(now, keep_days)
    marked = []
    for version in rule.superseded(new_version, versions):
        tags = rule.supersede_tags(versions[version], new_version, when,
                                   data_before if version == str(parent_version) else None)
        if datetime.fromisoformat(tags[rule.PURGE_AFTER]) > now:
            tags[rule.BEYOND_USE] = rule.beyond_use_label(tags[rule.PURGE_AFTER])
        # A version marked by an earlier request (kept beyond use) already carries these tags and its
        # description: each request re-marking every such version made its cost grow with the history.
        # (The description first: a run killed between the two sets the tags again, and with them it.)
        if any(versions[version].get(key) != str(value) for key, value in tags.items()):
            if rule.PURGED not in versions[version]:
                tracking.describe_version(model, version, superseded_description(tags))
            tracking.set_version_tags(model, version, tags)
        tracking.remove_version_aliases(model, aliased.get(version, []))
        marked.append({"version": version, "run_id": runs[version], **versions[version], **tags})
    return marked


# What a version's description says in the MLflow UI (its tags say the same, one field each).

def rolled_back_description(reason: str, production: str) -> str:
    return (f"ROLLED BACK, never promoted: {reason}. Production stayed at v{production}; the data was "
            "restored to the version the run started from.")


def superseded_description(tags: dict) -> str:
    until = tags[rule.PURGE_AFTER]
    return (f"SUPERSEDED by v{tags[rule.SUPERSEDED_BY]}: no alias, not to be served. Its model files are "
            f"purged on or after {until} (beyond use until then).")


def purged_description(version, when: str) -> str:
    superseded_by = version.tags.get(rule.SUPERSEDED_BY)
    by = f" (superseded by v{superseded_by})" if superseded_by else ""
    return (f"PURGED {when}{by}: its model files and private state are deleted; this registry entry and its "
            "lineage tags remain as the record of what existed.")


@step("supersede")
def supersede(lineage: Lineage, plan: Plan, new_version: str, keep_days: int | None) -> list[dict]:
    """Schedule the superseded versions' purge; the certificate entries of those kept beyond use."""
    with lineage.child("supersede") as run_id:
        now = utc_now()
        marked = mark_superseded(lineage.root, plan.model_name, new_version, plan.parent_version,
                                 plan.data_version, keep_days, now)
        tracking.log_params(run_id, {"superseded_versions": ",".join(m["version"] for m in marked),
                                     "keep_superseded_days": keep_days or 0})
    return kept_beyond_use(lineage.root, plan.model_name, marked, now)


def kept_beyond_use(root: Path, model: str, marked: list[dict], now: datetime) -> list[dict]:
    """The certificate's entries of the versions `mark_superseded` marked that are not due yet."""
    return [entry for m in marked if not rule.is_due(m, now)
            for entry in beyond_use_entries(model, m, state.model_state_files(root, m["run_id"]))]


def beyond_use_entries(model: str, tags: dict, private_state: list[str] = ()) -> list[dict]:
    """The certificate's entries for a superseded version kept beyond use: the version, its private
    state (caches that hold the old data's encoded rows, listed by file), its data version."""
    until = tags[rule.PURGE_AFTER]
    entries = [{"artifact": f"model {model} v{tags['version']}", "kind": "model_version",
                "action": f"beyond use {rule.beyond_use_label(until)}", "purge_after": until,
                "aliases": "removed"}]
    if private_state:
        entries.append({"artifact": f"private state of model {model} v{tags['version']}: {', '.join(private_state)}",
                        "kind": "private_state", "action": f"beyond use {rule.beyond_use_label(until)}",
                        "purge_after": until})
    if tags.get(rule.PURGE_DATA):
        entries.append({"artifact": f"dvc data version {tags[rule.PURGE_DATA]}", "kind": "dvc_objects",
                        "action": f"beyond use {rule.beyond_use_label(until)}", "purge_after": until})
    return entries


@step("purge superseded")
def purge_due(lineage: Lineage, model: str | None = None) -> list[dict]:
    """Purge every superseded version whose date has come (of `model`, or of every model)."""
    with lineage.child("purge") as run_id:
        entries = enforce_due_purges(lineage.root, model)
        tracking.log_metrics(run_id, {"purged_artifacts": sum(e["action"].startswith("purged") for e in entries),
                                      "purge_failures": sum(e["action"].startswith("purge failed") for e in entries)})
    return entries


def due_purges(root: Path) -> list[dict]:
    """Superseded artifacts kept "beyond use" whose purge date has come, purged now (comply's
    first step: a project without a tracking store has none)."""
    if not tracking.store_exists(root):
        return []
    tracking.connect(root)
    return enforce_due_purges(root)


def enforce_due_purges(root: Path, model: str | None = None, now: datetime | None = None) -> list[dict]:
    """Purge every due superseded version: model files, private state, its data version's DVC
    objects; tag it `purged`. A failure is reported (and retried next time), never raised."""
    now = now or utc_now()
    entries = []
    for name in [model] if model else tracking.registered_model_names():
        for version in tracking.model_versions(name):
            if rule.is_due(version.tags, now):
                entries += purge_model_version(root, name, version, now)
    return entries


def purge_model_version(root: Path, name: str, version, now: datetime) -> list[dict]:
    label = f"model {name} v{version.version}"
    try:
        files = tracking.delete_version_artifacts(name, version.version)
        removed_state = state.drop_model_state(root, version.run_id)
        data = purge_data(root, version.tags.get(rule.PURGE_DATA))
        tracking.set_version_tags(name, version.version, {rule.PURGED: rule.iso(now)})
        tracking.describe_version(name, version.version, purged_description(version, rule.iso(now)))
        tracking.remove_aliases(name, version.version)
    except Exception as exc:  # noqa: BLE001 — reported in the certificate; the next comply run retries
        reason = failure_reason(exc, limit=200)  # kept in the certificate and printed
        return [{"artifact": label, "kind": "model_version", "action": f"purge failed: {reason}",
                 "retry": "the next `unlearn comply` run"}]
    entry = {"artifact": label, "kind": "model_version", "action": "purged", "at": rule.iso(now),
             "location": files["location"], "verified": files["verified"], "private_state": removed_state}
    return [entry, *([data] if data else [])]


def purge_data(root: Path, data_version: str | None) -> dict | None:
    """Delete a superseded data version's objects (those the current data does not share)."""
    if not data_version:
        return None
    label = f"dvc data version {data_version}"
    if data_version == dvc.data_version(root):
        return {"artifact": label, "kind": "dvc_objects", "action": "kept: it is the current data version"}
    try:
        report = dvc.purge_version(root, data_version)
    except UnlearnError:
        return {"artifact": label, "kind": "dvc_objects", "action": "purged from cache and remote (earlier)",
                "verified": True}
    return {"artifact": label, "kind": "dvc_objects", "action": "purged from cache and remote",
            "objects": report["removed_cache"], "remote_objects": report["removed_remote"],
            "verified": report["verified"]}


# --- taking a model out of production -------------------------------------------------------------

def retire_model(root: Path, name: str) -> dict:
    """Take model `name` out of production for good: tagged `retired`, its `production` alias
    removed, then its files and private state purged as a superseded version's are (a purge that
    fails is retried by the next comply run). Refused while it has open requests. Returns
    {"model", "version", "retired", "purge": what happened to each artifact}."""
    tracking.connect(root)
    production = tracking.require_production(name, root)
    refuse_with_open_requests(root, name)
    with project_lock_once_started(root, "model retire"):
        now = utc_now()
        tracking.set_version_tags(name, production.version, {rule.RETIRED: rule.iso(now), rule.PURGE_AFTER: rule.iso(now)})
        tracking.remove_aliases(name, production.version)
        entries = purge_model_version(root, name, production, now)
        entries += state.drop_model_escrow(root, name)  # no audit can come for a retired model
    return {"model": name, "version": str(production.version), "retired": rule.iso(now), "purge": entries}


def refuse_with_open_requests(root: Path, model: str) -> None:
    """A request still open for the model would fail on every later `comply` once the model is gone,
    and its records would never leave the data: process or deny it first."""
    from tasks import ledger
    from unlearning.compliance.ledger import FINAL

    open_ids = [r.id for r in ledger.records(root).values()
                if r.status not in FINAL and r.request.get("model") == model]
    if open_ids:
        raise UnlearnError(f"model '{model}' has open erasure requests ({', '.join(open_ids[:5])}"
                           f"{', ...' if len(open_ids) > 5 else ''}): process them first (`unlearn comply`) "
                           f"or deny them (`unlearn requests deny ID --basis ...`), then retire it")
