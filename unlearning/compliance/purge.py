"""Which artifacts an erasure supersedes, and when they are purged (compliance.md §4, ICO "beyond use").

The rule. When an erasure promotes version N of a registered model, every earlier version of that
model that is not purged yet is superseded: along a lineage the data only loses records, so each
earlier version was trained on (or updated from a model trained on) data that still held the
removed records — the previous production version, older ones, and candidates that were
registered but never promoted (a failed verification or a rolled-back run). The data version the
request replaced is superseded with the previous production version (its DVC objects that the
current data does not share).

Superseded artifacts are purged right after the promotion (model files deleted, version tagged
`purged`, aliases removed), or — with a retention of `keep_days` — kept "beyond use" until a purge
date (no alias, tagged `beyond_use`), which a later comply run enforces. A version superseded
twice keeps the earlier of its two purge dates. Tags, all on the superseded model version:

    superseded_by  the version whose promotion superseded it
    purge_after    UTC ISO time from which it is purged
    beyond_use     "until <date>" while it is kept beyond use
    purge_data     the DVC data version to purge with it (the one its successor's request replaced)
    purged         UTC ISO time its artifacts were deleted
    retired        UTC ISO time its model was taken out of production for good (`unlearn model retire`),
                   on the version that was in production; purged at once
    rolled_back    why a run that registered it ended without promoting it (tasks.release): a candidate
                   never in production, which a request's earlier result and the gates pass over

Pure logic only: `tasks.release` reads and writes the tags.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from unlearning.errors import UnlearnError
from unlearning.numbers import whole_number_as_written

SUPERSEDED_BY = "superseded_by"
PURGE_AFTER = "purge_after"
BEYOND_USE = "beyond_use"
PURGE_DATA = "purge_data"
PURGED = "purged"
RETIRED = "retired"
ROLLED_BACK = "rolled_back"
MAX_KEEP_DAYS = 3650
KEEP_ENV = "UNLEARN_KEEP_SUPERSEDED_DAYS"


def check_keep_days(value: object, origin: str = "--keep-superseded") -> int | None:
    """A retention in whole days (0 = purge now), or None when not given."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    days = None if isinstance(value, bool) else whole_number_as_written(value)
    if days is None or days > MAX_KEEP_DAYS:
        raise UnlearnError(f"{origin} must be a whole number of days from 0 to {MAX_KEEP_DAYS} (0 = purge now), "
                           f"not {value!r}")
    return days


def purge_time(now: datetime, keep_days: int | None) -> datetime:
    """When artifacts superseded `now` are purged: at once, or after the retention."""
    return now if not keep_days else now + timedelta(days=keep_days)


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def superseded(new_version: str | int, versions: dict[str, dict]) -> list[str]:
    """The versions (of one registered model, version → tags) that promoting `new_version`
    supersedes: every earlier one not purged yet (see the module doc)."""
    new = int(new_version)
    return sorted((v for v, tags in versions.items() if int(v) < new and PURGED not in tags), key=int)


def supersede_tags(tags: dict, new_version: str | int, when: datetime, purge_data: str | None) -> dict:
    """The tags to set on a superseded version (`tags`: its current ones). An earlier purge date
    stands; a data version already scheduled stays."""
    current = tags.get(PURGE_AFTER)
    after = when if current is None or datetime.fromisoformat(current) > when else datetime.fromisoformat(current)
    out = {SUPERSEDED_BY: tags.get(SUPERSEDED_BY, str(new_version)), PURGE_AFTER: iso(after)}
    if purge_data and PURGE_DATA not in tags:
        out[PURGE_DATA] = purge_data
    return out


def is_due(tags: dict, now: datetime) -> bool:
    """Superseded, not purged yet, and its purge date has come."""
    after = tags.get(PURGE_AFTER)
    return after is not None and PURGED not in tags and datetime.fromisoformat(after) <= now


def beyond_use_label(purge_after: str) -> str:
    return f"until {purge_after[:10]}"
