"""Numbers read as written: Python's int() and float() also read '1_000' as 1000 and other scripts'
digits ('٣', '３') as 3, so a count or a number of days would be one the user never typed."""

from __future__ import annotations


def as_written(value: object) -> str:
    """`value` as text, stripped, when it is written in ASCII without '_'; ValueError otherwise."""
    text = str(value).strip()
    if not text.isascii() or "_" in text:
        raise ValueError(f"{value!r} is not a number written in ASCII digits (no '_')")
    return text
