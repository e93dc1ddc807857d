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


def whole_number(text: str) -> int:
    value = as_written(text)
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def real_number(text: str) -> float:
    value = as_written(text)
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
