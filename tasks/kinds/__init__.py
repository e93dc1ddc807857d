"""The kinds of model and the one place a dataset or a forget summary is mapped to
its kind. Everything else calls the kind's steps (tasks.kinds.base.Kind).

Each kind's module is imported on first use (`KINDS`, `TABULAR`, `TEXT` and `IMAGES` too): a table
request loads nothing of the text or image stacks."""

from __future__ import annotations

import importlib

from tasks.kinds.base import Kind

# The kinds by their format's name (tasks.formats), in the order KINDS lists them.
MODULES = {"table": "tasks.kinds.tabular", "text": "tasks.kinds.text", "images": "tasks.kinds.images"}
NAMED = {"TABULAR": "table", "TEXT": "text", "IMAGES": "images"}


def kind_named(name: str) -> Kind:
    """The kind whose format is called `name` ("table", "text", "images")."""
    return importlib.import_module(MODULES[name]).KIND


def kind_of(dataset) -> Kind:
    """The kind whose dataset type `dataset` is (TypeError for any other object)."""
    from tasks.formats import format_of

    return kind_named(format_of(dataset).name)


def kind_of_summary(summary: dict) -> Kind:
    """The kind a forget summary was written by, from the fields only that kind writes."""
    if "results" in summary:
        return kind_named("images")
    return kind_named("text" if "exposure" in summary else "table")


def __getattr__(name: str):
    if name == "KINDS":
        return tuple(kind_named(found) for found in MODULES)
    if name in NAMED:
        return kind_named(NAMED[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
