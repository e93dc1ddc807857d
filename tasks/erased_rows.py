"""The images a completed deletion removed, known in any dataset of the project: a salted hash of
each one's id, class and pixels, kept in its `completed` ledger entry (`erased_rows`), so that a
copy of the data under another dataset name (`unlearn data add other --images <the restored
backup>`) is refused as the dataset the images were deleted from is.

Ids alone cannot be compared across datasets: they are each dataset's own, and another dataset's
records may carry the same ids (tasks.erased.made_on). A hash binds the id to the content: a record
of another dataset matches only when both are the same. The hash is an HMAC with the project's salt
(tasks.scan.project_salt, the fingerprints' and the request hashes'); never a raw value.

**Not for table rows.** They were hashed the same way (id and cells) until a review showed the hash
gives the record back: the entry names the id in clear, and a row's cells come from small domains,
so whoever holds the project's salt tried every combination of the values the remaining data shows
and recovered the three deleted people's full rows in 1.4 s. A ledger is kept for good; what it
holds must not enumerate back to an erased record. A pixel digest cannot be enumerated. A copy of
a table under another dataset name is therefore not refused (docs/compliance.md says so); the gates
keep the check by id on the dataset the deletion was made on (tasks.erased), as for image entries
completed before `erased_rows` was recorded. (A batch finished after a kill records the hashes its
manifest kept: tasks.batches.keep_erased_rows.)"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

IMAGES = "images-v1"
DIGITS = 32  # hex digits kept of each HMAC-SHA256: 128 bits, no chance collision between rows


def deleted_rows(root: Path, requests: list) -> dict[str, dict]:
    """Request id → the images its `delete_records` remove, hashed (`rows_recorded`), from the data
    its model's production version was trained on, read before the run deletes them; none for a
    request deleting nothing, for a table or a corpus, or when that data cannot be read."""
    deleting = [r for r in requests if r.delete_records]
    if not deleting:
        return {}
    from tasks.common import production_dataset
    from unlearning.compliance.signing import project_salt

    salt = project_salt(root)
    found = {}
    for model in {r.model for r in deleting}:
        if (dataset := production_dataset(root, model, images_only=True)) is None:
            continue
        for request in (r for r in deleting if r.model == model):
            if (recorded := rows_recorded(dataset, request.delete_records, salt)) is not None:
                found[request.id] = recorded
    return found


def rows_recorded(dataset, ids, salt: bytes) -> dict | None:
    """{"scheme", "rows": the sorted hashes} of the images `ids` of `dataset` (those it holds); None
    for a dataset of another kind (tables: see the module doc) or that holds none of them."""
    if scheme_of(dataset) is None:
        return None
    rows = set(row_hashes(dataset, salt, only=set(map(str, ids))))
    return {"scheme": IMAGES, "rows": sorted(rows)} if rows else None


def rows_back(dataset, recorded: dict[str, dict], salt: bytes) -> dict[str, set[str]]:
    """Request id → the ids of `dataset`'s images whose hash is among its `erased_rows`
    (`recorded`): none when the dataset is of another kind. The dataset is hashed once."""
    if scheme_of(dataset) is None:
        return {}
    hashed = None
    found = {}
    for request, rows in recorded.items():
        if rows.get("scheme") != IMAGES:
            continue  # a table's, from an entry written before tables stopped being hashed: not read
        hashed = hashed if hashed is not None else row_hashes(dataset, salt)
        found[request] = {hashed[d] for d in rows.get("rows") or () if d in hashed}
    return found


def scheme_of(dataset) -> str | None:
    """IMAGES for an image dataset; None for a table (see the module doc) or a corpus (its removed
    secrets are known by fingerprint: tasks.redacted)."""
    from tasks import formats

    return IMAGES if formats.format_of(dataset) is formats.IMAGES else None


def row_hashes(dataset, salt: bytes, only: set[str] | None = None) -> dict[str, str]:
    """Hash → record id, of every image of `dataset` (or those in `only`)."""
    out = {}
    for position, record in enumerate(dataset.record_ids):
        if only is None or record in only:
            pixels = dataset.images[position]
            content = [str(record), dataset.classes[int(dataset.labels[position])], list(pixels.shape),
                       hashlib.sha256(pixels.tobytes()).hexdigest()]
            out[row_hash(salt, content)] = str(record)
    return out


def row_hash(salt: bytes, content: list) -> str:
    """HMAC-SHA256 with the project's salt of a record's id and content (domain-separated from the
    secrets' fingerprints and the request hashes, which use the same salt)."""
    body = b"erased-row\0" + json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()
    return hmac.new(salt, body, hashlib.sha256).hexdigest()[:DIGITS]
