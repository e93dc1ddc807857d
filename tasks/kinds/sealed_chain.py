"""The sealed file a chain of fast updates goes on from (tasks.state.teacher_file): the text chain's
teacher, the image chain's first model and gradient. Opening it is the same for both kinds: it may be
gone (deleted by hand), another chain's, altered, unreadable or not fit the model; then the update
does without it, and says so on one line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tasks import state
from tasks.common import progress
from unlearning.errors import UnlearnError, failure_reason

T = TypeVar("T")

# what a sealed file that does not open or does not fit raises: altered or another key (UnlearnError),
# unreadable (OSError), another architecture (RuntimeError from load_state_dict, KeyError), malformed
NOT_USABLE = (UnlearnError, OSError, RuntimeError, KeyError, TypeError, AttributeError)


def open_chain_file(root: Path, model: str, what: str, fits: Callable[[dict], bool], other: str,
                    build: Callable[[dict], T], instead: str) -> T | None:
    """build(the opened file) where it exists, `fits` (names the chain production keeps) and builds;
    else None after one warning: `what` the file is ("teacher", "start"), `other` the line for a file
    that does not fit, `instead` what the update does without it."""
    if not state.teacher_file(root, model).exists():  # e.g. deleted by hand: the chain cannot go on
        progress(f"  warning: the chain's sealed {what} is gone; {instead}")
        return None
    try:
        sealed = state.open_teacher(root, model)
        if not fits(sealed):
            progress(f"  warning: {other}; {instead}")
            return None
        return build(sealed)
    except NOT_USABLE as exc:
        progress(f"  warning: the chain's sealed {what} was not used ({failure_reason(exc, limit=120)}); {instead}")
        return None
