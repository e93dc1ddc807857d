"""argparse types for numbers read as written (unlearning.numbers): `--seed ٣` or `--steps 1_000`
ran with a number the user never typed."""

from __future__ import annotations

import argparse

from unlearning.numbers import as_written


def read_as(kind: type, what: str, text: str):
    try:
        value = as_written(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    try:
        return kind(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None


def whole_number(text: str) -> int:
    return read_as(int, "a whole number", text)


def positive_whole_number(text: str) -> int:
    """A count that must be at least 1 (`demo --train-steps`): checked here, where the option is
    named, not by the config the run builds after writing its data."""
    value = whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def real_number(text: str) -> float:
    return read_as(float, "a number", text)
