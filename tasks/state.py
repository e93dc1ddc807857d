"""Private per-model state kept beside the project, never in MLflow (`.unlearn/`, git-ignored).

- the objective-perturbation noise b of a certified lineage: certified removal assumes the
  adversary does not know b, so publishing it with the model would void the certificate; sealed
  under the signing key, as is the Hessian cache, whose ∇L_b(θ; D) gives b with θ and D;
- the Hessian cache (H(θ*; D), its Cholesky factor, ‖X‖₂) per model version, and the version's
  table encoded with its feature map (`encoded/`, keyed by the version of its dataset's files), each
  with a fingerprint of its content checked on load, which is what makes a later request cheap;
- the exposures a language model version was measured at (salted fingerprint → bits), so that
  verification does not re-measure what `detect` / `scan --model` measured on the same version;
- what the evidence checks of a language model version measure once (its held-out perplexity,
  the "before" of every request on it), so a later request does not measure it again, and for a
  fast-updated one the forget runs of its chain since the last exact model (ids only);
- an image model version's outputs (features and logits) on its training and held-out images
  (`outputs/`, unlearning.images.outputs.KnownOutputs): the "before" of every request on it,
  computed once per version; derived from the images, so it goes with the version like `encoded/`;
- the audit escrow (`escrow/<model>/<forget run>.bin`, sealed by tasks.audit): what a request's
  audit needs of its removed data, deleted by that audit (or when the model is retired); sealed as
  `<forget run>.bin.pending` before the release, which names it (pending_escrow, settle_escrow);
- the project's signed word that a version is a retraining on its model's own schedule, with the
  digest of its files as logged (`exact/<run>.json`, attest_exact): what lets an audit skip
  retraining it, where its MLflow tags alone could be set by anyone who can write to the server;
- the project's signed copy of a forget run's version's guarantee block (`guarantee/<run>.json`,
  keep_guarantee): what a certificate rebuilt after a stop past the promotion signs, not the tag;
- the project's signed copy of the certificate a forget run logged (`run_certificates/<forget
  run>.json`, keep_run_certificate): what its batch's request certificates are made from, what a
  recovery finds a batch's run by (runs_certifying) and the gates read a request outside the ledger
  from, not the MLflow artifact or tags.
The per-version ones are keyed by the MLflow run id that produced the model.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import torch

from unlearning.compliance import escrow, signing
from unlearning.errors import UnlearnError


def state_dir(root: Path) -> Path:
    return Path(root) / ".unlearn"


def _private_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    return path


def save_noise(root: Path, run_id: str, b: torch.Tensor | None) -> None:
    if b is None:
        return
    _save_sealed(root, noise_file(root, run_id), {"b": b})


def load_noise(root: Path, run_id: str) -> torch.Tensor | None:
    kept = _load_sealed(root, noise_file(root, run_id), f"the certified noise of model run {run_id}")
    return kept if kept is None or torch.is_tensor(kept) else kept["b"]  # a tensor: kept in clear before 2026-12-07


def noise_file(root: Path, run_id: str) -> Path:
    return state_dir(root) / "noise" / f"{run_id}.pt"


def load_cache(root: Path, run_id: str) -> dict:
    """The cache kept with a model version, sealed ({}: none, or one kept before it had a fingerprint,
    which nothing vouches for: computed anew). AlteredState when its content is not the one it was
    saved with: its H, gradient or XᵀX would feed a certified bound without a pass over the data."""
    kept = _load_sealed(root, state_dir(root) / "cache" / f"{run_id}.pt", f"the Hessian cache of model run {run_id}")
    if not kept or FINGERPRINT_KEY not in kept:
        return {}
    cache = {k: kept[k] for k in CACHE_KEYS if k in kept}
    if kept[FINGERPRINT_KEY] != fingerprint(cache, cache):
        raise AlteredState(f"the kept cache of model run {run_id} (.unlearn/cache/{run_id}.pt) is not the content "
                           "it was saved with (damaged or altered since)")
    return cache


def _save_sealed(root: Path, path: Path, content: dict) -> None:
    """Private state that gives the certified noise b — b itself, and the cache's ∇L_b(θ; D), which
    gives it exactly with θ and D — sealed (AES-GCM under the escrow key, bound to the file's folder
    and name): with the signing key outside the project, a copy of `.unlearn/` does not give b."""
    _write_private(path, escrow.seal(content, signing.signing_key(root), sealed_name(path)))


def _load_sealed(root: Path, path: Path, what: str):
    """What _save_sealed kept at `path` (None: no file); one kept in clear before 2026-12-07 is read as
    it is. One that does not open is refused: another b would void the certificate unnoticed."""
    if not path.exists():
        return None
    kept = path.read_bytes()
    if not kept.startswith(escrow.MAGIC):
        return torch.load(io.BytesIO(kept))
    key = signing.signing_key(root, create=False)
    try:
        return escrow.open_sealed(kept, key, sealed_name(path))
    except UnlearnError:
        raise UnlearnError(f"{what} (.unlearn/{sealed_name(path)}) does not open with this signing key (another "
                           "project's UNLEARN_SIGNING_KEY, a key file from another backup, or an altered file): set "
                           "the project's signing key and run again") from None


# What a table model version keeps for the requests on it. A trained one (unlearning.tabular.erasure.model_cache):
# H(θ*; D), its Cholesky factor, ‖X‖₂, ∇L_b(θ*; D) and the θ it was taken at, and H's spectrum
# summaries (largest eigenvalue: the first-order step; diagonal: CG's preconditioner); XᵀX and the
# largest row norm and Σ‖x_i‖²x_i x_iᵀ (the certified bound without a pass over D'). One made by a
# request (erasure.version_cache): a bound on ‖X‖₂ and the request's H on D' with the θ it was taken at
# (`hessian_at`, which `gradient_at` need not be), the rest computed by the next request.
CACHE_KEYS = ("H", "L", "X_norm", "gradient", "gradient_at", "hessian_at", "lambda_max", "hess_diag", "gram",
              "row_norm_max", "gram_by_row_norm")


# The version's data encoded with its feature map (unlearning.tabular.erasure.Encoded), under
# `encoded` in the cache: the training and held-out rows, their ids, labels and numeric values as
# given (what refitting the feature map's statistics after an erasure needs), the per-column
# category counts, and the version of the dataset's files they were encoded from (under `data_version`:
# tasks.common.dataset_digest, not data.dvc's hash, which a request on another dataset changes). A file
# of its own: it holds the records themselves (its rows are what an erasure removes), so it is never
# written without the data it belongs to and goes with the version's other state (`drop_model_state`).
ENCODED_KEYS = ("X", "y", "ids", "X_test", "y_test", "test_ids", "numbers", "numbers_test", "category_counts",
                "data_version")


# An image model version's outputs, under `outputs` in the cache (KnownOutputs.as_state), and for a
# version made by a fast update `anchor`: the last exact model's outputs on the evidence's samples.
OUTPUT_KEYS = ("ids", "features", "logits", "anchor")

# A text model version's measured numbers, under `evidence` in the cache (tasks.kinds.text_chain.evidence_state):
# its held-out perplexity and that of the last model trained exactly it descends from.
EVIDENCE_KEYS = ("held_out_perplexity", "anchor_perplexity")
# ... and, for a fast-updated text version, the forget runs of the fast updates since that exact model
# (run ids, never a value): their escrowed secrets are suppressed and measured again by the next
# fast update on the chain (tasks.kinds.text_chain.chain_secrets).
CHAIN_KEY = "chain"
# ... and the run id of the model its fast updates are anchored to (that exact model, or the version
# itself once an audit passed it), which the next fast update finds sealed as the chain's teacher
# (teacher_file; tasks.kinds.text_teacher). An image version made by a chained deletion keeps the run id
# of its chain's first model there, and the id of the seal its chain was written with (tasks.kinds.images_chain).
TEACHER_RUN_KEY = "teacher_run"
CHAIN_SEAL_KEY = "chain_seal"


def save_cache(root: Path, run_id: str, cache: dict) -> None:
    keep = {k: cache[k] for k in CACHE_KEYS if k in cache}  # in one order: the fingerprint's
    if keep:
        _save_sealed(root, state_dir(root) / "cache" / f"{run_id}.pt", {**keep, FINGERPRINT_KEY: fingerprint(keep, keep)})
    if outputs := {k: v for k, v in (cache.get("outputs") or {}).items() if k in OUTPUT_KEYS}:
        save_outputs(root, run_id, outputs)
    encoded = {k: v for k, v in (cache.get("encoded") or {}).items() if k in ENCODED_KEYS}
    if encoded.get("data_version"):
        _save_private(state_dir(root) / "encoded" / f"{run_id}.pt",
                      {**encoded, FINGERPRINT_KEY: fingerprint(encoded, ENCODED_KEYS)})
    evidence = cache.get("evidence") or {}
    measured = {k: float(v) for k, v in evidence.items() if k in EVIDENCE_KEYS}
    if evidence.get(CHAIN_KEY):
        measured[CHAIN_KEY] = [str(run) for run in evidence[CHAIN_KEY]]
    for key in (TEACHER_RUN_KEY, CHAIN_SEAL_KEY):
        if evidence.get(key):
            measured[key] = str(evidence[key])
    if measured:
        save_evidence(root, run_id, measured)


def _save_private(path: Path, content: dict) -> None:
    buffer = io.BytesIO()
    torch.save(content, buffer)
    _write_private(path, buffer.getvalue())


def _write_private(path: Path, data: bytes) -> None:
    path = _private_file(path)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


class AlteredState(UnlearnError):
    """A private state file whose content is not what was saved (damaged, or altered since)."""


def load_encoded(root: Path, run_id: str, data_version: str | None) -> dict | None:
    """The encoded data kept with a model version, if it was encoded from `data_version` (None:
    absent — a version saved before it was kept — or of other data). AlteredState when its content
    is not the one it was saved with."""
    path = state_dir(root) / "encoded" / f"{run_id}.pt"
    if data_version is None or not path.exists():
        return None
    encoded = torch.load(path)
    if any(k not in encoded for k in (*ENCODED_KEYS, FINGERPRINT_KEY)):  # kept before it held every part: encode anew
        return None
    if encoded.get("data_version") != data_version:
        return None
    if encoded[FINGERPRINT_KEY] != fingerprint(encoded, ENCODED_KEYS):
        raise AlteredState(f"the kept encoding of model run {run_id} (.unlearn/encoded/{run_id}.pt) is not the "
                           "content it was saved with (damaged or altered since)")
    return encoded


# A kept encoding's or cache's fingerprint, saved in it and compared on load: an encoding damaged or
# altered since (two rows' ids swapped) made a request take another row's contribution out of θ than
# the one data/ lost, and its certificate state a residual on rows that are not D'; a cache's H, ∇L_b
# or XᵀX feeds the certified bound without a pass over the data. Not a MAC: whoever can write
# .unlearn/ holds the project's key as well; what it catches is a file that changed without its
# fingerprint. Each tensor's 8-byte words as integers summed mod 2⁶⁴ with odd weights per row and
# column (a word changed by any Δ ≠ 0 moves the sum by Δ·odd·odd ≠ 0), exact and independent of
# summation order: 5 ms on Adult's kept encoding (39k×92 rows), where sha256 of its 39 MB takes 21 ms.
FINGERPRINT_KEY = "fingerprint"
_WEIGHT_SEED = 0x5EED_E7C0DED


def fingerprint(content: dict, keys) -> str:
    """The fingerprint of `content`'s entries under `keys` (in that order), their names included."""
    digest = hashlib.sha256()
    for key in keys:
        value = content[key]
        digest.update(key.encode() + b"\0")
        if isinstance(value, torch.Tensor):
            digest.update(f"{value.dtype}{tuple(value.shape)}".encode() + _tensor_words(value))
        else:
            digest.update(str(value).encode() + b"\0")  # the ids' JSON text, the data's version, a norm
    return digest.hexdigest()


def _tensor_words(tensor: torch.Tensor) -> bytes:
    """The weighted sum of an 8-byte tensor's words (its bytes for another width: small ones)."""
    array = np.ascontiguousarray(tensor.detach().cpu().numpy())
    if array.itemsize != 8 or array.size == 0:  # an empty one: its shape, hashed beside it, is all it holds
        return array.tobytes()
    words = array.view(np.uint64).reshape(array.shape[0] if array.ndim else 1, -1)
    return int((words @ _odd_weights(0, words.shape[1])) @ _odd_weights(1, words.shape[0])).to_bytes(8, "little")


def _odd_weights(part: int, n: int) -> np.ndarray:
    """n odd 64-bit weights, spread by a splitmix64 step (a seeded generator costs 10 ms to start)."""
    with np.errstate(over="ignore"):
        x = np.arange(n, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(_WEIGHT_SEED + part)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31)) | np.uint64(1)


def save_outputs(root: Path, run_id: str, outputs: dict) -> None:
    _save_private(state_dir(root) / "outputs" / f"{run_id}.pt", outputs)


def load_outputs(root: Path, run_id: str) -> dict | None:
    path = state_dir(root) / "outputs" / f"{run_id}.pt"
    return torch.load(path) if path.exists() else None


def load_exposures(root: Path, run_id: str) -> dict[str, float]:
    path = state_dir(root) / "exposures" / f"{run_id}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def save_exposures(root: Path, run_id: str, measured: dict[str, float]) -> None:
    """Merge `measured` (keys from `exposure_key`) into the model version's record."""
    path = _private_file(state_dir(root) / "exposures" / f"{run_id}.json")
    merged = {**load_exposures(root, run_id), **measured}
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(merged, sort_keys=True))
    os.replace(tmp, path)


def exposure_key(fingerprint: str, n_candidates: int) -> str:
    return f"{fingerprint}:{n_candidates}"


EXACT_FORMAT = "unlearnflow.exact/1"


def exact_facts(model: str, version: str, run_id: str, data_version: str | None, digest: str | None,
                model_sha256: str | None) -> dict:
    """What attest_exact signs of a version: which it is, the data it was retrained on, and its files
    (their digest as logged), so that neither its tags nor its files on the tracking server can be
    changed under the word."""
    return {"format": EXACT_FORMAT, "model": model, "version": str(version), "run_id": run_id,
            "data_version": data_version, "dataset_digest": digest, "model_sha256": model_sha256}


def attest_exact(root: Path, facts: dict) -> None:
    """Sign, in the version's private state, that it is a retraining on its model's own schedule on
    `facts`' data version and dataset files (exact_facts): written where the pipeline promotes such
    a version (a request's retraining or fall-back, an audit's promotion), before its commit point. An audit takes a
    production model as exact without retraining only on this word (attested_exact), not on its
    MLflow tags alone, which anyone who can write to the tracking server can set; and only for the
    files it was logged with (`model_sha256`), which the audit hashes again as it downloads them."""
    _write_signed_state(root, "exact", facts)


def attested_exact(root: Path, facts: dict) -> bool:
    """Whether the version's private state holds this project's signed word for exactly `facts`."""
    try:
        return _read_signed_state(root, "exact", facts["run_id"]) == facts
    except AlteredState:
        return False


def keep_guarantee(root: Path, model: str, version: str, run_id: str, block: dict) -> None:
    """Sign, in a forget run's new version's private state, the certificate's method and guarantee
    fields of its update (its GUARANTEE_TAG's value), before its commit point: what a certificate
    rebuilt after a stop past the promotion signs (kept_guarantee), where the tag could have been
    rewritten meanwhile by anyone who can write to the tracking server."""
    _write_signed_state(root, "guarantee", {"model": model, "version": str(version), "run_id": run_id,
                                            "guarantee": block})


def kept_guarantee(root: Path, model: str, version: str, run_id: str) -> dict | None:
    """The guarantee block keep_guarantee signed for this version (None: none kept — a version
    registered before it was, or not by a forget run); AlteredState when the file does not verify
    with the project's key or names another version."""
    facts = _read_signed_state(root, "guarantee", run_id)
    if facts is None:
        return None
    if (facts.get("model"), facts.get("version")) != (model, str(version)) or not isinstance(facts.get("guarantee"), dict):
        raise AlteredState(f"the signed guarantee of model run {run_id} (.unlearn/guarantee/{run_id}.json) names "
                           f"another version than {model} v{version}")
    return facts["guarantee"]


def keep_run_certificate(root: Path, run_id: str, certificate: dict) -> None:
    """Sign, in the project's private state, the certificate a forget run logs to MLflow next (its
    `certificate.json`, as it reads back from there): what the certificates of its batch's requests
    are made from (kept_run_certificate), where the artifact could be rewritten by anyone who can
    write to the tracking server and the project's key would sign what it says."""
    _write_signed_state(root, RUN_CERTIFICATES, {"run_id": run_id, "certificate": certificate})


def kept_run_certificate(root: Path, run_id: str) -> dict | None:
    """The certificate keep_run_certificate signed for this forget run (None: none kept — a run
    certified before it was, or one stopped before its certificate was kept); AlteredState when the
    file does not verify with the project's key or is another run's."""
    facts = _read_signed_state(root, RUN_CERTIFICATES, run_id)
    if facts is None:
        return None
    if facts.get("run_id") != run_id or not isinstance(facts.get("certificate"), dict):
        raise AlteredState(f"the signed certificate of forget run {run_id} (.unlearn/{RUN_CERTIFICATES}/{run_id}.json) "
                           "is another run's")
    return facts["certificate"]


def runs_certifying(root: Path, request_id: str) -> list[tuple[str, dict]]:
    """(forget run, its certificate) of each signed copy (keep_run_certificate) whose certificate
    certifies `request_id`, oldest first: which run processed a request, as the project signed it
    (its MLflow tags could be rewritten). Found by what each copy says, then verified: AlteredState
    when a copy that names the request does not verify."""
    folder = state_dir(root) / RUN_CERTIFICATES
    found = []
    for path in sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []:
        try:
            named = signing.certified_request(json.loads(path.read_text()).get("certificate") or {})
        except (OSError, ValueError, AttributeError):
            named = None  # not a copy this code wrote: one naming the request is read, and verified, below
        if named == request_id:
            found.append((path.stem, kept_run_certificate(root, path.stem)))
    return found


# Keyed by the forget run (its MLflow parent run), not by a model version: kept as long as the signed
# certificates of its requests are (.unlearn/certificates/), whose content it is.
RUN_CERTIFICATES = "run_certificates"


def _write_signed_state(root: Path, folder: str, facts: dict) -> None:
    path = _private_file(state_dir(root) / folder / f"{facts['run_id']}.json")
    signing.write_signed(path, signing.sign(facts, signing.signing_key(root)))


def _read_signed_state(root: Path, folder: str, run_id: str) -> dict | None:
    """The facts signed in `<folder>/<run_id>.json` (None: no such file); AlteredState when it does not
    verify with the project's key."""
    path = state_dir(root) / folder / f"{run_id}.json"
    if not path.exists():
        return None
    try:
        document = json.loads(path.read_text())
        ok = isinstance(document, dict) and signing.verify(document, signing.signing_key(root, create=False))[0]
    except (OSError, ValueError, UnlearnError):
        ok = False
    if not ok:
        raise AlteredState(f".unlearn/{folder}/{run_id}.json does not verify with this project's key "
                           "(damaged or altered since it was signed)")
    return {k: v for k, v in document.items() if k != "signature"}


def load_evidence(root: Path, run_id: str) -> dict:
    path = state_dir(root) / "evidence" / f"{run_id}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def save_evidence(root: Path, run_id: str, measured: dict) -> None:
    """Merge `measured` (numbers only, never a secret) into the version's evidence record."""
    path = _private_file(state_dir(root) / "evidence" / f"{run_id}.json")
    merged = {**load_evidence(root, run_id), **measured}
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(merged, sort_keys=True))
    os.replace(tmp, path)


# Each kind of private state kept per model version: its folder and file suffix.
MODEL_STATE = (("cache", ".pt"), ("encoded", ".pt"), ("outputs", ".pt"), ("noise", ".pt"), ("exposures", ".json"),
               ("evidence", ".json"), ("exact", ".json"), ("guarantee", ".json"))


def drop_model_state(root: Path, run_id: str) -> list[str]:
    """Delete the cache, encoded data, image outputs, noise, exposure and evidence records and the
    signed words that it is exact (attest_exact) and of its guarantee (keep_guarantee) of a superseded
    model version; returns what was removed."""
    removed = []
    for name in model_state_files(root, run_id):
        (state_dir(root) / name).unlink()
        removed.append(name)
    return removed


def model_state_files(root: Path, run_id: str) -> list[str]:
    """The private state a model version keeps ("cache/<run>.pt", ...), as paths under the state
    folder: what its purge deletes and what a certificate lists while it is kept beyond use."""
    found = []
    for kind, suffix in MODEL_STATE:
        folder = state_dir(root) / kind
        # a write that was killed leaves its temp file (`<run>.tmp`, `<run>.<pid>.tmp`): it holds
        # what the version's file holds (the encoded rows of its data), so it goes with it
        # (`.<run><suffix>.<pid>.tmp`: a signed file's, signing.write_signed)
        leftovers = ([*folder.glob(f"{run_id}.tmp"), *folder.glob(f"{run_id}.*.tmp"),
                      *folder.glob(f".{run_id}{suffix}.*.tmp")] if folder.is_dir() else [])
        found += [f"{kind}/{path.name}" for path in [folder / f"{run_id}{suffix}", *leftovers] if path.exists()]
    return found


def escrow_dir(root: Path, model: str) -> Path:
    """Where the sealed audit escrow of a model's requests waits for its audit (tasks.audit)."""
    return state_dir(root) / "escrow" / model


def escrow_file(root: Path, model: str, run_id: str) -> Path:
    """The escrow of the forget run `run_id` once its model version is in production."""
    return escrow_dir(root, model) / f"{run_id}.bin"


def teacher_file(root: Path, model: str) -> Path:
    """The sealed teacher of a model's chain of fast updates: the model `suppress` anchors each update
    of a text chain to (tasks.kinds.text_teacher), the first model of an image chain and the gradient
    of the images it deleted (tasks.kinds.images_chain). Not a request's escrow (no `.bin`: the
    audit's coverage does not count it); it lives beside them, beyond use in the same way, and the
    next audit deletes it."""
    return escrow_dir(root, model) / "teacher.sealed"


def seal_teacher(root: Path, model: str, content: dict, pending: bool) -> None:
    """Seal a chain's teacher file (AES-GCM under the project key, bound to its name), pending until
    the release names it (settle_escrow) when `pending`."""
    path = teacher_file(root, model)
    write_sealed(pending_escrow(path) if pending else path,
                 escrow.seal(content, signing.signing_key(root), sealed_name(path)))


def open_teacher(root: Path, model: str) -> dict:
    """The chain's teacher file, opened (UnlearnError: altered or sealed under another name or key;
    OSError: unreadable)."""
    path = teacher_file(root, model)
    return escrow.open_sealed(path.read_bytes(), signing.signing_key(root), sealed_name(path))


def teacher_to_drop(root: Path, model: str) -> dict:
    """What an audit will delete of the model's sealed teacher (it memorised the requests the audit
    covers): {"deleted": whether one is sealed, "file_sha256": its file's digest or None}. The audit's
    record states it and its completion deletes that file (drop_teacher), so a run killed before its
    record deletes nothing and one killed after it is completed by the next audit's recovery: the
    deletion is never done without a signed record that says so."""
    digest = teacher_digest(root, model)
    return {"deleted": digest is not None, "file_sha256": digest}


def teacher_digest(root: Path, model: str) -> str | None:
    try:
        return hashlib.sha256(teacher_file(root, model).read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def drop_teacher(root: Path, model: str, digest: str | None) -> bool:
    """Delete the sealed teacher an audit's record named by its digest, and any teacher cut short
    (pending, partly written). A teacher sealed since (a forget run between a killed audit and its
    recovery) is the next chain's and stays: the one the record named was replaced by it. Whether
    the named file was deleted."""
    path = teacher_file(root, model)
    named = digest is not None and teacher_digest(root, model) == digest
    if named:
        path.unlink()
    for leftover in (pending_escrow(path), private_tmp(path), private_tmp(pending_escrow(path))):
        leftover.unlink(missing_ok=True)
    return named


def pending_escrow(path: Path) -> Path:
    """Where an escrow is sealed before its run's promotion. Only the release's end (tasks.release.
    finish: committed or rolled back, at once or by a later run's recovery) gives it its name, so a
    promoted version never lacks its escrow and a run rolled back leaves none an audit would read."""
    return path.with_name(path.name + ".pending")


def private_tmp(path: Path) -> Path:
    """Where a sealed file is written before it is renamed to `path` (tasks.audit.write_private)."""
    return path.with_name(f".{path.name}.tmp")


def sealed_name(path: Path) -> str:
    """The name a sealed file (an escrow, a teacher) is bound to: its model folder and file name."""
    return f"{path.parent.name}/{path.name}"


def write_sealed(path: Path, content: bytes) -> None:
    """A sealed file written whole or not at all (a temporary sibling renamed), private to the user."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = private_tmp(path)
    try:
        tmp.write_bytes(content)
        tmp.chmod(0o600)
        tmp.replace(path)
    except BaseException:  # a full disk mid-write: no partial copy of removed data stays behind
        tmp.unlink(missing_ok=True)
        raise


def settle_escrow(root: Path, model: str, run_id: str, promoted: bool) -> None:
    """The release's end: the run's sealed escrow, and the chain's teacher it sealed, named if
    `production` moved, deleted otherwise."""
    for path in (escrow_file(root, model, run_id), teacher_file(root, model)):
        pending = pending_escrow(path)
        private_tmp(pending).unlink(missing_ok=True)  # a write a kill cut short: a partial copy of removed data
        if pending.exists():
            if promoted:
                os.replace(pending, path)  # a rename: it needs no free space
            else:
                pending.unlink()


def drop_model_escrow(root: Path, model: str) -> list[dict]:
    """Delete every escrow of a model that will never be audited (retired): the purge entries."""
    folder = escrow_dir(root, model)
    paths = sorted([*folder.glob("*.bin"), *folder.glob("*.bin.pending"), *folder.glob("*.sealed"),
                    *folder.glob("*.sealed.pending"), *folder.glob(".*.tmp")]) if folder.is_dir() else []
    for path in paths:
        path.unlink()
    return [{"artifact": f"{'chain teacher' if '.sealed' in p.name else 'audit escrow'} {model}/{p.name}",
             "kind": "chain_teacher" if ".sealed" in p.name else "audit_escrow", "action": "purged"} for p in paths]
