"""Unlearning requests (science.md §1): which records to delete, features to revoke, labels to fix.

A request is read from YAML or JSON exactly as written (`load_request`), checked on its own by pydantic, then
against the dataset it applies to (`validate_request`). Every problem a user can cause becomes one
`UnlearnError` with a one-line message.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pydantic

from unlearning.documents import PLAIN_NAME, load_document, unknown_fields_named
from unlearning.errors import UnlearnError
from unlearning.storage import check_model_name, refuse_personal_name
from unlearning.tabular.data import Table, format_number

KINDS = ("delete_records", "revoke_features", "fix_labels", "redact", "forget_class")
TABLE_KINDS = ("delete_records", "revoke_features", "fix_labels")
REDACT_POLICIES = ("token", "same_format")
AUTO_METHOD = "auto"
_ID_RE = re.compile(r"[A-Za-z0-9._-]+")
MAX_ID = 128  # a request id names ledger entries, certificates, escrow and run names: a name, not a text
_SHOWN = 5  # how many offending ids an error message names


def _as_text(value: Any) -> Any:
    """Ids and labels are strings. Files are read as text already (unlearning.documents); a
    request built in Python may still give numbers. Anything else is left for pydantic to reject."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return format_number(value)
    if isinstance(value, str):
        return value.strip()
    return value


class RedactSpec(pydantic.BaseModel):
    """Which findings of a scan to remove from a text corpus, and what replaces them.

    `findings`: "all", or a list of finding fingerprints; `detectors` narrows either to some
    detectors. `policy`: "token" (a redaction mark of the same length) or "same_format" (a random
    string of the same format)."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    findings: str | list[str] = "all"
    detectors: list[str] = []
    policy: str = "token"

    @pydantic.field_validator("findings")
    @classmethod
    def _all_or_list(cls, value: Any) -> Any:
        if isinstance(value, str) and value != "all":
            raise ValueError("give 'all' or a list of finding fingerprints")
        if isinstance(value, list) and not value:
            raise ValueError("an empty list selects nothing: give 'all' or fingerprints")
        return value

    @pydantic.field_validator("policy")
    @classmethod
    def _known_policy(cls, value: str) -> str:
        if value not in REDACT_POLICIES:
            raise ValueError(f"unknown policy {value!r}: use one of {', '.join(REDACT_POLICIES)}")
        return value


class UnlearningRequest(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    id: str
    model: str
    delete_records: list[str] = []
    revoke_features: list[str] = []
    fix_labels: dict[str, str] = {}  # record id → corrected label
    redact: RedactSpec | None = None  # text corpora: remove detected secrets
    forget_class: str | None = None  # image datasets: a class name or index (every training image of it)
    method: str = AUTO_METHOD

    @pydantic.field_validator("id", "model", "method", mode="before")
    @classmethod
    def _strip(cls, value: Any) -> Any:
        return value.strip() if isinstance(value, str) else value

    @pydantic.field_validator("id")
    @classmethod
    def _safe_id(cls, value: str) -> str:
        if not _ID_RE.fullmatch(value):
            raise ValueError("use only letters, digits, '.', '_' and '-' (not empty)")
        if not value.strip("."):  # names certificate and escrow files: '.' and '..' name their folders
            raise ValueError(f"'{value}' is only dots; use at least one letter, digit, '_' or '-'")
        return value

    @pydantic.field_validator("model", "method")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty")
        return value

    @pydantic.field_validator("delete_records", "revoke_features", mode="before")
    @classmethod
    def _list_as_text(cls, value: Any) -> Any:
        return [_as_text(v) for v in value] if isinstance(value, list) else value

    @pydantic.field_validator("forget_class", mode="before")
    @classmethod
    def _class_as_text(cls, value: Any) -> Any:
        value = _as_text(value)
        if value == "":
            raise ValueError("give a class name or index")
        return value

    @pydantic.field_validator("fix_labels", mode="before")
    @classmethod
    def _mapping_as_text(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {_as_text(k): _as_text(v) for k, v in value.items()}
        return value

    @pydantic.model_validator(mode="after")
    def _asks_for_something(self) -> UnlearningRequest:
        if not self.kinds():
            raise ValueError(
                f"request '{self.id}' asks for nothing: give at least one of {', '.join(KINDS)}"
            )
        return self

    def kinds(self) -> list[str]:
        return [kind for kind in KINDS if getattr(self, kind)]

    def content_hash(self) -> str:
        """sha256 of the request's canonical JSON. The order of records and features does not
        matter (they are sets), so a reordered copy of a request has the same hash."""
        content = self.model_dump()
        content["delete_records"] = sorted(content["delete_records"])
        content["revoke_features"] = sorted(content["revoke_features"])
        if content["forget_class"] is None:  # absent: the hash of requests without it is unchanged
            del content["forget_class"]
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------
# Reading


def load_request(path: Path, new: bool = True) -> UnlearningRequest:
    """A request file read exactly as written (unlearning.documents: no YAML 1.1 coercion, no
    duplicate keys, bounded size and depth), then checked by the schema. `new` (a request entering
    the pipeline, not one the ledger stored): its id is at most MAX_ID characters too — a request
    submitted before that limit still loads from the ledger and is processed."""
    path = Path(path)
    data = load_document(path, "request file")
    request = request_from_dict(data, f"request file '{path.name}'")
    if new and len(request.id) > MAX_ID:
        raise UnlearnError(f"request file '{path.name}': id: {len(request.id)} characters; use at most {MAX_ID}")
    if new:  # an id names ledger entries, certificates and runs, for good: not a card number or a key
        try:
            refuse_personal_name(request.id, "request", "the ledger")
        except UnlearnError as exc:
            raise UnlearnError(f"request file '{path.name}': {exc}") from None
    if new:  # the model names folders (data/<model> while planning, .unlearn/escrow/<model>): '../..' read
        try:  # a folder outside the project and 300 characters ended in a traceback (ENAMETOOLONG)
            check_model_name(request.model)  # not refuse_personal_name: a model named so earlier is still served
        except UnlearnError as exc:
            raise UnlearnError(f"request file '{path.name}': {exc}") from None
    return request


def request_from_dict(data: Any, origin: str = "request") -> UnlearningRequest:
    """Build a request from parsed YAML/JSON, turning pydantic's report into one line."""
    fields = list(UnlearningRequest.model_fields)
    if not isinstance(data, dict):
        raise UnlearnError(
            f"{origin} must be a mapping with the keys {', '.join(fields)}; "
            f"found {type(data).__name__ if data is not None else 'an empty document'}"
        )
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise UnlearnError(f"{origin} has unknown fields: {unknown_fields_named(unknown)}; "
                           f"allowed fields: {', '.join(fields)}")
    missing = [k for k in ("id", "model") if k not in data]
    if missing:
        raise UnlearnError(f"{origin} is missing the required field(s): {', '.join(missing)}")
    try:
        return UnlearningRequest(**data)
    except pydantic.ValidationError as exc:
        raise UnlearnError(f"{origin} is invalid: {_one_line(exc)}") from None


def _one_line(exc: pydantic.ValidationError) -> str:
    """pydantic's multi-line report as 'field: problem; field: problem'."""
    parts = []
    for error in exc.errors():
        location = ".".join(str(p) if not isinstance(p, str) or PLAIN_NAME.fullmatch(p) else "(a key not shown)"
                            for p in error["loc"])  # an unknown key may be a value written as a key
        message = error["msg"].removeprefix("Value error, ").replace("\n", " ")
        parts.append(f"{location}: {message}" if location else message)
    return "; ".join(dict.fromkeys(parts))


# ---------------------------------------------------------------------------------------------
# Checking against the dataset


def validate_request(req: UnlearningRequest, table: Table, methods: Iterable[str]) -> None:
    """Raise `UnlearnError` if `req` cannot be applied to `table` (the model is checked elsewhere).

    `methods` are the registered method names; "auto" is always accepted. A label fix that does
    not change the label is allowed: it is a no-op.
    """
    _check_method(req.method, methods)
    if req.forget_class is not None:
        raise UnlearnError(f"dataset '{table.name}' is a table: 'forget_class' applies to image datasets; "
                           f"use {', '.join(TABLE_KINDS)}")
    if req.redact is not None:
        raise UnlearnError(f"dataset '{table.name}' is a table: 'redact' applies to text datasets; "
                           f"use {', '.join(TABLE_KINDS)}")
    _check_record_ids(req, table)
    _check_features(req.revoke_features, table)
    _check_labels(req.fix_labels, table)


def _check_method(method: str, methods: Iterable[str]) -> None:
    valid = [AUTO_METHOD, *(m for m in methods if m != AUTO_METHOD)]
    if method not in valid:
        raise UnlearnError(f"unknown method '{method}'; valid methods: {', '.join(valid)}")


def _shown(ids: list[str]) -> str:
    more = ", ..." if len(ids) > _SHOWN else ""
    return ", ".join(repr(i if len(i) <= 60 else i[:57] + "...") for i in ids[:_SHOWN]) + more  # one line


def _check_record_ids(req: UnlearningRequest, table: Table) -> None:
    twice = [i for i, n in Counter(req.delete_records).items() if n > 1]
    if twice:
        raise UnlearnError(
            f"{len(twice)} record ids are listed more than once in delete_records "
            f"({_shown(twice)}); list each record once"
        )
    known = set(table.frame.index)
    named = list(dict.fromkeys([*req.delete_records, *req.fix_labels]))
    unknown = [i for i in named if i not in known]
    if unknown:
        raise UnlearnError(
            f"{len(unknown)} record ids are not in dataset '{table.name}' ({_shown(unknown)}); "
            f"use values of its id column '{table.frame.index.name}'"
        )
    both = [i for i in req.fix_labels if i in set(req.delete_records)]
    if both:
        raise UnlearnError(
            f"{len(both)} records are both deleted and relabelled ({_shown(both)}); "
            "a deleted record needs no label fix: drop it from fix_labels"
        )
    _check_classes_remain(req, table)


def _check_classes_remain(req: UnlearningRequest, table: Table) -> None:
    """The corrected training set must still hold 2 classes, or no classifier can be refit."""
    train = table.frame[table.train_mask()]
    kept = train.drop(index=[i for i in req.delete_records if i in train.index])
    labels = kept[table.target].copy()
    fixes = {i: v for i, v in req.fix_labels.items() if i in labels.index}
    if fixes:
        labels.loc[list(fixes)] = list(fixes.values())
    if labels.nunique() < 2:
        raise UnlearnError(
            f"the request leaves fewer than 2 classes among the training records of "
            f"'{table.name}'; delete fewer records"
        )


def _check_features(features: list[str], table: Table) -> None:
    twice = [f for f, n in Counter(features).items() if n > 1]
    if twice:
        raise UnlearnError(
            f"features listed more than once in revoke_features: {', '.join(twice)}; "
            "list each once"
        )
    for feature in features:
        if feature == table.target:
            raise UnlearnError(
                f"'{feature}' is the target, not a feature; use fix_labels to change labels"
            )
        if feature not in table.features:
            raise UnlearnError(
                f"unknown feature '{feature}' in revoke_features; valid features: "
                f"{', '.join(table.features)}"
            )
        if feature in table.revoked:
            raise UnlearnError(
                f"feature '{feature}' is already revoked in dataset '{table.name}'; "
                "remove it from revoke_features"
            )


def _check_labels(fix_labels: dict[str, str], table: Table) -> None:
    outside = [i for i, label in fix_labels.items() if label not in table.labels]
    if outside:
        raise UnlearnError(
            f"fix_labels gives {len(outside)} records a label outside the label set "
            f"{list(table.labels)} ({_shown(outside)}); use one of those labels"
        )
