"""Numbers read as written: Python's int() and float() also read '1_000' as 1000 and other scripts'
digits ('٣', '３') as 3, so a count or a number of days would be one the user never typed."""

from __future__ import annotations


def as_written(value: object) -> str:
    """`value` as text, stripped, when it is written in ASCII without '_'; ValueError otherwise."""
    text = str(value).strip()
    if not text.isascii() or "_" in text:
        raise ValueError(f"{value!r} is not a number written in ASCII digits (no '_')")
    return text


def whole_number_as_written(value: object) -> int | None:
    """The whole number ≥ 0 that `value` writes in ASCII digits alone ('3', ' 30 ', 7, '03'), None for
    anything else: a sign, '.', '_', other scripts' digits ('٣'), '²' (which str.isdigit() passes
    and int() raises on), a word. Callers add their own rule (a range, one way of writing it)."""
    try:
        text = as_written(value)
    except ValueError:
        return None
    return int(text) if text.isdigit() else None
