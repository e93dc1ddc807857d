"""What completed erasure requests removed from a dataset, kept out of its data for good: the records
they deleted, the features they revoked (a table's), the class they forgot (an image dataset's), the
secrets they redacted (a text corpus's, by salted fingerprint: tasks.redacted), the wrong labels
they rectified (a table's or an image dataset's: a record their fix_labels relabelled carrying
another label than in the data the dataset's last production model, retired or not, was trained on:
rectified_labels).
A class is looked for by the name its `completed` entry recorded, whatever the request wrote (a
name or an index).

Three gates read the same erasures (`erasures_of`: every completed ledger request on a model
version trained on the dataset, audited or not; and of the requests on any other dataset of the
project, what can be told apart from that dataset's own data — the images they deleted, by salted
hash of id and pixels (tasks.erased_rows; not a table's rows, whose hash would give the record
back), and the secrets they redacted —, so that a copy of those under another name is refused too):
- `unlearn data add NAME --replace` with the original source used to bring them back, and `data
  add OTHER` with it made a copy of them (`refuse_erased`, passed to tasks.data.add_dataset, which
  cannot import this module: the ledger imports that module's readers, through tasks.scan);
- `unlearn train` on data that holds them again by another way (a backup restored by hand, a
  `dvc checkout` of an old version) learned them again while their certificates still said erased,
  and `unlearn model import --dataset NAME` put a model declared trained on such data into
  production (`refuse_erased_training`);
- the audit fails, and promotes nothing, when it finds them in the data it retrained on
  (tasks.audit_checks.erased_data_back), also for requests an earlier audit covered.

Each reads the ledger once (`completed_requests`), verified first. Requests made with `unlearn
forget` outside the ledger are read from the registry too (`outside_ledger`): the records, features
and labels they erased from their forget runs' certificates (the project's signed copies where kept,
never an MLflow artifact then: tasks.outcomes.run_certificate), a text corpus's redactions from their
results (tasks.redacted.redacted_outside_ledger); a record of one that is gone refuses, until it is
restored or its request file given again (record_again). Counts, request ids, dataset names and the
names of features and classes (the schema, which certificates name too) in what is said: never a
record id, which is personal data, nor a label, nor a fingerprint or row hash, which points at a
secret or a record."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tasks import redacted
from unlearning.compliance.purge import ROLLED_BACK
from unlearning.errors import UnlearnError
from unlearning.numbers import whole_number_as_written

# what of a request's nature (unlearning.compliance.ledger.request_nature, with `secrets`: the
# fingerprints a redaction removed) stays out of the data
ERASING = ("delete_records", "revoke_features", "fix_labels", "forget_class", "secrets")
# what of it is looked for in every dataset of the project, not only the one it was made on
ANYWHERE = ("erased_rows", "secrets")


@dataclass
class Back:
    """What a dataset holds again of the erasures it was given: the records, the records a fix_labels
    relabelled carrying another label than their rectified one, the revoked features with values, the
    forgotten classes with training images, the redacted secrets' fingerprints; and the requests that
    erased them."""

    records: set[str] = field(default_factory=set)
    relabelled: set[str] = field(default_factory=set)
    secrets: set[str] = field(default_factory=set)
    features: set[str] = field(default_factory=set)
    classes: set[str] = field(default_factory=set)
    requests: set[str] = field(default_factory=set)
    datasets: set[str] = field(default_factory=set)  # those the requests erased from, where known

    def __bool__(self) -> bool:
        return bool(self.requests)

    @property
    def count(self) -> int:
        return len(self.records) + len(self.relabelled) + len(self.secrets) + len(self.features) + len(self.classes)

    @property
    def more_than_labels(self) -> bool:
        """Whether more than wrong labels is back (records, features, classes, secrets: to be dropped)."""
        return self.count > len(self.relabelled)

    def described(self) -> str:
        """'3 record(s), revoked feature(s) 'sex' and forgotten class(es) 'coat'', '2 secret(s)', '1 wrong
        label(s)' — never a record id, a label or a fingerprint."""
        parts = [f"{len(self.records)} record(s)"] if self.records else []
        if self.relabelled:
            parts.append(f"{len(self.relabelled)} wrong label(s)")
        if self.secrets:
            parts.append(f"{len(self.secrets)} secret(s)")
        if self.features:
            parts.append(f"revoked feature(s) {', '.join(repr(f) for f in sorted(self.features))}")
        if self.classes:
            parts.append(f"the training images of forgotten class(es) {', '.join(repr(c) for c in sorted(self.classes))}")
        return " and ".join(parts)

    @property
    def named(self) -> str:
        return ", ".join(sorted(self.requests))

    def erased_from(self, name: str) -> str:
        """' from data/people' when some of it was erased from another dataset than `name` (a copy of
        that data under another name), else ''."""
        if not self.datasets - {name}:
            return ""
        return " from " + ", ".join(f"data/{d}" for d in sorted(self.datasets))


def refuse_erased(root: Path, dataset) -> None:
    """UnlearnError (one line, nothing written yet) for a source holding what completed ledger
    requests erased on a model trained on it, or rows and secrets they erased from another dataset
    (a copy under a new name): what, which requests, from where, and the fix."""
    if not (back := erased_back(root, dataset)):
        return
    raise UnlearnError(f"{back.described()} erased{back.erased_from(dataset.name) or f' from data/{dataset.name}'} "
                       f"by completed request(s) {back.named} "
                       f"are in this source: adding it would bring them back into the data; "
                       f"{'; '.join(source_fixes(back))} and add it again{renumbered(dataset, back)}; "
                       f"nothing was written")


def source_fixes(back: Back) -> list[str]:
    """What to change in a source refused for `back`: drop what was erased, keep the labels rectified."""
    drop = ("drop them from the source (the requests' delete_records rows, revoke_features columns, forget_class "
            "images, redacted secrets: `unlearn scan SOURCE` lists them by fingerprint)")
    return [*([drop] if back.more_than_labels else []), *([f"keep {RECTIFIED}"] if back.relabelled else [])]


RECTIFIED = ("the rectified labels of the records the fix_labels requests relabelled (those the dataset's last "
             "production model was trained on; submit a fix_labels request to change them)")


def refuse_erased_training(root: Path, dataset, imported: bool = False) -> None:
    """UnlearnError (one line, before any run is recorded) for training on data/NAME while it holds
    what completed ledger requests erased: the new production model would learn it again. `imported`:
    for `unlearn model import --dataset NAME`, a model declared trained on it, which learned it."""
    if not (back := erased_back(root, dataset)):
        return
    harm, then = (("a model declared trained on it learned them, and importing it would put them back into "
                   "production", "import a model trained without them") if imported
                  else ("training on it would learn them again", "train again"))
    raise UnlearnError(f"{back.described()} erased{back.erased_from(dataset.name)} by completed request(s) "
                       f"{back.named} are back in "
                       f"data/{dataset.name}: {harm}; {'remove' if back.more_than_labels else 'correct'} "
                       f"them (`unlearn data add {dataset.name} --file SOURCE --replace` from a source "
                       f"{' and '.join(source_holding(back))}"
                       f"{', or submit the same erasure for a model of this dataset' if back.erased_from(dataset.name) else ''}"
                       f") and {then}")


def source_holding(back: Back) -> list[str]:
    """What a source that puts data refused for `back` right holds: not what was erased, the rectified labels."""
    return [*(["without them"] if back.more_than_labels else []),
            *([f"that keeps {RECTIFIED}"] if back.relabelled else [])]


def renumbered(dataset, back: Back) -> str:
    """What to add to a refusal of records whose ids were assigned by position (no --id column, no ids
    array): a source without the erased rows is numbered again from 0, onto the erased ids, and a
    source with a row dropped or moved compares the rectified labels with other records'; no id
    tells them apart."""
    from tasks.formats import format_of

    ids = format_of(dataset).record_ids(dataset) or set()
    if not (back.records or back.relabelled) or ids != {str(i) for i in range(len(ids))}:
        return ""
    return (" (its ids are its rows' positions, so a source with rows dropped or moved gives their ids to other "
            "records: give every record an id of its own, an id column with --id or an .npz's ids array)")


def erased_back(root: Path, dataset, extra: dict[str, dict] | None = None, classes: list[str] | None = None,
                warn: bool = True) -> Back:
    """What `dataset` holds of the completed requests' erasures (empty: nothing): those on it, and
    what is known in any dataset of the project (erasures_of), joined with `extra` (the audit's
    covered requests, from their escrows). `classes`: as back_in's. The ledger is read once and
    verified, as before processing: a doctored one would switch the gate off. `warn`: as outside_ledger's."""
    completed = completed_requests(root)
    erasures = merged(erasures_of(root, dataset, completed), outside_ledger(root, dataset, completed, warn),
                      extra or {})
    return back_in(dataset, erasures, classes, root)


def completed_requests(root: Path) -> list:
    """The ledger's completed requests, from one read of its entries, verified (UnlearnError, one
    line, unless they verify); none in a project that never had a ledger. Not judged by the SQLite
    file alone: a ledger moved away (or an UNLEARN_LEDGER_URL naming an empty place) while the
    signed head names entries is a missing ledger, which verifying refuses, not a project without
    erasures."""
    from tasks.ledger_verify import intact_entries
    from unlearning.compliance import ledger as lg

    return [r for r in lg.fold(intact_entries(root)).values() if r.status == "completed"]


@dataclass(frozen=True)
class Forget:
    """A version a request made with `unlearn forget` outside the ledger promoted: the request, the
    dataset the version was trained on, its lineage run (where the forget logged its certificate and
    result), the model and the version."""

    request: str
    dataset: str
    run: str
    model: str
    version: str


def forgets_outside_ledger(root: Path, completed: list) -> list[Forget]:
    """The verified, not rolled back versions that requests made with `unlearn forget` outside the
    ledger promoted (their `request_id` tag, found by a filtered search of the registry, not a listing
    of it; a purged or retired version keeps its tags and lineage run). A comply batch's versions,
    the lineage runs of `completed` (the ledger's completed requests), are skipped: their ledger
    entries say what they erased."""
    from tasks import tracking

    if not tracking.store_exists(root):
        return []
    tracking.connect(root)
    runs = {run for r in completed if (run := (r.response or {}).get("run_id"))}
    return [Forget(tags["request_id"], tracking.trained_on(v, v.name), tags["lineage_run"], v.name, str(v.version))
            for v in tracking.versions_tagged("request_id")
            if promoted_by_request(tags := v.tags) and tags["lineage_run"] not in runs]


def promoted_by_request(tags: dict) -> bool:
    """Whether a version's tags say a processed request promoted it: its `request_id`, verified, not
    rolled back, with the lineage run that logged its certificate and result."""
    return ("request_id" in tags and tags.get("verified") == "true" and ROLLED_BACK not in tags
            and bool(tags.get("lineage_run")))


def outside_ledger(root: Path, dataset, completed: list, warn: bool = True) -> dict[str, dict]:
    """The requests made with `unlearn forget` outside the ledger, as natures: the records, features
    and labels they erased from `dataset` (recorded_erasure: record ids are each dataset's own, so on
    the dataset their version was trained on only), and a text corpus's redactions on any text
    dataset of the project, as ledger redactions are (erasures_of). `completed`: the ledger's
    completed requests. `warn`: name each run whose MLflow certificate differs from the project's
    signed copy (tasks.outcomes.run_certificate; False where this command said so already)."""
    from tasks.formats import TEXT, format_of
    from tasks.outcomes import run_certificate

    forgets = forgets_outside_ledger(root, completed)
    own = [f for f in forgets if f.dataset == dataset.name]
    natures = {f.request: {**recorded_erasure(f, run_certificate(root, f.run, f.model, f.version, warn)),
                           "made_on": f.dataset} for f in own}
    if format_of(dataset) is not TEXT:
        return natures
    return merged(natures, {request: {"secrets": sorted(found), "made_on": made}
                            for request, (made, found) in redacted.redacted_outside_ledger(forgets).items()})


# what of a request made outside the ledger its forget run's certificate names (ids only: a
# fix_labels request's labels stay in the data), in its `request` block; RERECORDED: the same block,
# logged by the forget run before its release (a run killed after its promotion logs no certificate: the
# recovery rebuilds one with this block, tasks.release.interrupted_run_certificate) and again by a rerun
# when both are gone (record_again)
RECORDED = ("delete_records", "revoke_features", "fix_labels")
RERECORDED = "erasure.json"


def request_record(request) -> dict:
    """RERECORDED's content for `request`: its id and the ids of what it erases (never a label)."""
    return {"request": {"id": request.id, **{key: sorted(getattr(request, key)) for key in RECORDED}}}


def recorded_erasure(forget: Forget, certificate: dict | None) -> dict:
    """What a request made with `unlearn forget` outside the ledger erased, as its forget run's record
    names it (`certificate`: the run's, tasks.outcomes.run_certificate; the record ids in clear, as a
    ledger entry does; nothing new is kept). UnlearnError (one line) when that record is gone or names
    another request: the gates cannot tell what it erased, and reading it as nothing would let the
    records back; its request file given again to `unlearn forget` records it again (record_again),
    so a lost record does not lock the dataset."""
    if (request := recorded_request(forget.run, forget.request, certificate)) is None:
        from tasks.state import RUN_CERTIFICATES

        raise UnlearnError(f"the record of request {forget.request}, made with `unlearn forget` outside the "
                           f"ledger (model {forget.model} v{forget.version}: the certificate of forget run "
                           f"{forget.run}), is missing or names another request: the gates cannot tell what "
                           f"it erased from data/{forget.dataset}; restore that run's artifacts and "
                           f".unlearn/{RUN_CERTIFICATES}/ from a backup, or give its request file to `unlearn "
                           f"forget` again, which records it again")
    return {key: sorted(request.get(key) or ()) for key in RECORDED}


def recorded_request(run: str, request_id: str, certificate: dict | None) -> dict | None:
    """The `request` block for `request_id` in a forget run's certificate (`certificate`, read
    already), else in the RERECORDED a rerun logged; None when neither names it."""
    from tasks import tracking

    return named_request(certificate, request_id) or named_request(tracking.load_json(run, RERECORDED), request_id)


def named_request(document: dict | None, request_id: str) -> dict | None:
    """A certificate's (or RERECORDED's) `request` block when it names `request_id`, else None."""
    request = (document or {}).get("request")
    return request if isinstance(request, dict) and request.get("id") == request_id else None


def record_again(root: Path, request) -> None:
    """Log again on its forget run what a request made outside the ledger erased, where the run's
    record of it is gone (recorded_request): from the request file given to `unlearn forget` again,
    which the version's `request_hash` tag (the salted hash of the whole request) vouches for."""
    from tasks import tracking
    from tasks.common import request_hash
    from tasks.outcomes import run_certificate

    if not tracking.store_exists(root):  # reading the registry would create one
        return
    tracking.connect(root)
    for v in tracking.model_versions(request.model):
        tags = v.tags
        if (promoted_by_request(tags) and tags["request_id"] == request.id
                and tags.get("request_hash") == request_hash(root, request)
                and recorded_request(tags["lineage_run"], request.id,
                                     run_certificate(root, tags["lineage_run"], v.name, str(v.version))) is None):
            tracking.log_json(tags["lineage_run"], request_record(request), RERECORDED)


def back_in(dataset, erasures: dict[str, dict], classes: list[str] | None = None, root: Path | None = None) -> Back:
    """What `dataset` holds of `erasures` (request id → its nature: delete_records, revoke_features,
    forget_class, secrets). `classes`: the class list of the model the requests ran on, which a
    forget_class written as an index is resolved in when its entry recorded no name (None: such a
    class is not looked for). `root`:
    the project, whose salt a text corpus is scanned with, once, when a redaction is among them."""
    from tasks.formats import TEXT, format_of

    present = format_of(dataset).record_ids(dataset) or set()
    scanned = (redacted.fingerprints_in(root, dataset) if root is not None and format_of(dataset) is TEXT
               and any(n.get("secrets") for n in erasures.values()) else set())
    hashed = hashed_rows_back(root, dataset, erasures)
    wrong = wrong_labels(root, dataset, erasures)
    back = Back()
    for request, nature in erasures.items():
        records = (set(nature.get("delete_records") or ()) & present) | hashed.get(request, set())
        relabelled = set(nature.get("fix_labels") or ()) & wrong
        secrets = set(nature.get("secrets") or ()) & scanned
        features = {f for f in nature.get("revoke_features") or () if feature_holds_values(dataset, f)}
        forgotten = forgotten_class(dataset, nature, classes)
        classes_back = {forgotten} if forgotten is not None and class_trained_on(dataset, forgotten) else set()
        if records or relabelled or secrets or features or classes_back:
            back.records |= records
            back.relabelled |= relabelled
            back.secrets |= secrets
            back.features |= features
            back.classes |= classes_back
            back.requests.add(request)
            back.datasets |= {nature["made_on"]} if nature.get("made_on") else set()
    return back


def wrong_labels(root: Path | None, dataset, erasures: dict[str, dict]) -> set[str]:
    """The records of `dataset` that completed fix_labels requests among `erasures` relabelled and that
    carry another label than their rectified one (rectified_labels): a rectification undone (the
    original source added again, a backup restored). Read only when a fix_labels is among them."""
    relabelled = {record for nature in erasures.values() for record in nature.get("fix_labels") or ()}
    if root is None or not relabelled:
        return set()
    from tasks.formats import format_of

    held = format_of(dataset).record_labels(dataset, relabelled)
    rectified = rectified_labels(root, dataset.name, set(held)) if held else {}
    return {record for record, label in held.items() if record in rectified and label != rectified[record]}


def rectified_labels(root: Path, name: str, records: set[str]) -> dict[str, str]:
    """Record → its label in the data the dataset's last production model was trained on (of
    `records`; reference_data_version: in production now, or retired). That data carries every
    rectification made since, in the ledger or with `unlearn forget` outside it (each moved
    production onto the corrected data), and neither a later erasure nor `unlearn model retire`
    purges it; no label is stored anywhere else (a salted hash of one from a small label set
    enumerates back), and no request's stored file is read (one gone would lock the dataset). A
    record absent from it was deleted since: none to compare. Empty, so nothing is refused, when no
    model of the dataset was ever in production or its data version cannot be read (purged or never
    pushed by hand): refusing would lock the dataset for good."""
    version = reference_data_version(root, name)
    if version is None:
        return {}
    from tasks import dvc
    from tasks.formats import format_of_dataset_folder

    with dvc.version_folder(root, version, name) as folder:
        if folder is None:
            return {}
        stored = format_of_dataset_folder(folder)
        try:
            return stored.record_labels(stored.load_dataset(folder), records)
        except UnlearnError:  # a damaged object: as one not there
            return {}


def reference_data_version(root: Path, name: str) -> str | None:
    """The data version (tag `data_version`) of the dataset `name`'s last production model: of the
    versions trained on it, of all the project's models, that are in production or were retired
    (in production until `unlearn model retire`), the one registered last; None without one. A
    rectification is a fact about the dataset, not about one model: a retired model's data still
    tells it, where reading production alone let the wrong labels back once the model was retired.
    A request is refused while its dataset has another production model (tasks.common), so the
    version a fix_labels promoted is the latest then; a model trained on the dataset since (`train
    NAME --model OTHER`, or after a retirement) was trained on data that passed this gate, and is
    the latest."""
    from tasks import tracking
    from unlearning.compliance.purge import RETIRED

    if not tracking.store_exists(root):
        return None
    tracking.connect(root)
    productions = [version for model in tracking.registered_model_names()
                   if (version := tracking.production_version(model)) is not None]
    candidates = [version for version in [*productions, *tracking.versions_tagged(RETIRED)]
                  if tracking.trained_on(version, version.name) == name]
    newest = max(candidates, key=lambda version: int(version.creation_timestamp or 0), default=None)
    return newest.tags.get("data_version") if newest is not None else None


def hashed_rows_back(root: Path | None, dataset, erasures: dict[str, dict]) -> dict[str, set[str]]:
    """Request id → the ids of `dataset`'s images whose salted (id, pixels) hash its entry recorded
    (`erased_rows`: tasks.erased_rows), in any dataset of the project; the salt read only when one is."""
    recorded = {request: n["erased_rows"] for request, n in erasures.items() if n.get("erased_rows")}
    if root is None or not recorded:
        return {}
    from tasks.erased_rows import rows_back
    from unlearning.compliance.signing import project_salt

    return rows_back(dataset, recorded, project_salt(root))


def feature_holds_values(dataset, feature: str) -> bool:
    """Whether a table's column `feature` holds any value (a revoked one is blanked in place)."""
    frame = getattr(dataset, "frame", None)
    return frame is not None and feature in getattr(dataset, "features", ()) and bool(frame[feature].notna().any())


def forgotten_class(dataset, nature: dict, classes: list[str] | None) -> str | None:
    """The name of the class a request forgot, as far as it can be told now: the name its `completed`
    entry recorded (`forget_class_name`, a name whatever the request wrote); for an entry written by
    older code, its `forget_class` as a name of the dataset's (a request names a class first by
    name, as processing resolved it), an index only through `classes`, the class list of the model it
    ran on. Not through the dataset's own list: a class removed from the source since shifts every
    index after it, and its folders `1/ 2/ 3/` named by digits are not their positions."""
    if nature.get("forget_class_name") is not None:
        return str(nature["forget_class_name"])
    value = nature.get("forget_class")
    if value is None or not hasattr(dataset, "classes"):
        return None
    value = str(value)
    if value in dataset.classes:
        return value
    index = whole_number_as_written(value)
    return classes[index] if classes is not None and index is not None and index < len(classes) else None


def class_trained_on(dataset, name: str) -> bool:
    """Whether an image dataset has training images of the class `name`."""
    if name not in getattr(dataset, "classes", ()):
        return False
    return bool((dataset.train & (dataset.labels == dataset.classes.index(name))).any())


def erasures_of(root: Path, dataset, completed: list) -> dict[str, dict]:
    """Completed ledger request id → what of its nature `dataset` is checked for, with `made_on`:
    everything, for a request made on the dataset (on a model version trained on it: made_on);
    for one made on another dataset, what is known in any dataset of the project — its deleted images
    by salted (id, pixels) hash, its redacted secrets by salted fingerprint (a secret is the same
    secret in any corpus of the project) —, not its record ids (each dataset's own: another one's
    records may share them), nor its revoked features and forgotten class (the schema of one
    model's data, which another dataset may hold with consent of its own). An audit leaves a
    request `completed`: audited ones count. `completed`: completed_requests."""
    natures = {r.id: (r, nature_of(root, r)) for r in completed}
    erasing = {rid: (r, n) for rid, (r, n) in natures.items() if any(n.get(k) for k in ERASING)}
    datasets = {model: datasets_of(root, model) for model in {n.get("model") for _, n in erasing.values()}}
    out = {}
    for request, (record, nature) in erasing.items():
        made = made_on(record, datasets[nature.get("model")])
        if made == dataset.name:
            out[request] = {**nature, "made_on": made}
        elif anywhere := {k: nature[k] for k in ANYWHERE if nature.get(k)}:
            out[request] = {**anywhere, "made_on": made}
    return out


def nature_of(root: Path, record) -> dict:
    """A completed request's recorded nature, with the fingerprints of the secrets it redacted and
    the salted hashes of the rows it deleted (`erased_rows`, where its entry recorded them)."""
    nature = dict(record.request)
    if found := redacted.secrets_removed(root, record):
        nature["secrets"] = sorted(found)
    if rows := (record.response or {}).get("erased_rows"):
        nature["erased_rows"] = rows
    if (name := (record.response or {}).get("forget_class_name")) is not None:
        nature["forget_class_name"] = name
    return nature


def merged(*erasures: dict[str, dict]) -> dict[str, dict]:
    """Request id → its nature, the fields of several readings of one request joined (the ledger's,
    an escrow's, the registry's)."""
    out: dict[str, dict] = {}
    for reading in erasures:
        for request, nature in reading.items():
            joined = out.setdefault(request, {})
            for key, value in nature.items():
                if key in ("delete_records", "revoke_features", "fix_labels", "secrets"):
                    joined[key] = sorted(set(joined.get(key) or ()) | set(value or ()))
                elif joined.get(key) is None:
                    joined[key] = value
    return out


def made_on(record, datasets: dict[str, str]) -> str | None:
    """The dataset a completed request erased from: that of the model version it completed with (its
    `dataset` tag), not of any version the model ever had — a model name retired and trained again on
    other data would carry the first dataset's erasures over. A version the store no longer has: the
    model's only dataset, where it had one."""
    version = str(((record.response or {}).get("model") or {}).get("version"))
    if version in datasets:
        return datasets[version]
    known = set(datasets.values())
    return known.pop() if len(known) == 1 else None


def datasets_of(root: Path, model: str) -> dict[str, str]:
    """Version → the dataset it was trained on (its `dataset` tag, which defaults to the model's name
    as everywhere else); a model with no version left (retired and gone): the one named after it."""
    from tasks import tracking

    versions = []
    if tracking.store_exists(root):
        tracking.connect(root)
        versions = tracking.model_versions(model)
    if not versions:
        return {"*": model}
    return {str(v.version): tracking.trained_on(v, model) for v in versions}

