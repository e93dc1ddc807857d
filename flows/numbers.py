"""argparse types for numbers read as written: Python's int() and float() also read '1_000' as
1000 and other scripts' digits ('٣', '３') as 3, so `--seed ٣` or `--steps 1_000` ran with a number
the user never typed. These take ASCII only, without '_'."""

from __future__ import annotations

import argparse


def as_written(text: str) -> str:
    value = text.strip()
    if not value.isascii() or "_" in value:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number written in ASCII digits (no '_')")
    return value


def read_as(kind: type, what: str, text: str):
    value = as_written(text)
    try:
        return kind(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None


def whole_number(text: str) -> int:
    return read_as(int, "a whole number", text)


def real_number(text: str) -> float:
    return read_as(float, "a number", text)
