"""The kinds of model and the one place a dataset or a forget summary is mapped to
its kind. Everything else calls the kind's steps (tasks.kinds.base.Kind)."""

from __future__ import annotations

from tasks.kinds.base import Kind
from tasks.kinds.images import KIND as IMAGES
from tasks.kinds.tabular import KIND as TABULAR
from tasks.kinds.text import KIND as TEXT

KINDS: tuple[Kind, ...] = (TABULAR, TEXT, IMAGES)


def kind_of(dataset) -> Kind:
    """The kind whose dataset type `dataset` is."""
    for kind in KINDS:
        if kind.holds(dataset):
            return kind
    raise TypeError(f"no kind of model holds a {type(dataset).__name__}")


def kind_of_summary(summary: dict) -> Kind:
    """The kind a forget summary was written by, from the fields only that kind writes."""
    if "results" in summary:
        return IMAGES
    return TEXT if "exposure" in summary else TABULAR
