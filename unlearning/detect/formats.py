"""A value's format, and random values of the same format.

Used twice: the candidate space R of the exposure measure (science.md §3: rank a secret among
same-format candidates, log2 |R| is the maximum exposure) and "random same-format filler" redaction.

A template maps each ASCII digit to `9`, lower-case letter to `a`, upper-case letter to `A`, and
keeps every other character: "4111 1111 1111 1111" → "9999 9999 9999 9999". Filler drawn from a
template keeps separators, so a redacted card still reads like a card to the model and the text.
"""

from __future__ import annotations

import math
import random
import string

import numpy as np

DIGIT, LOWER, UPPER = "9", "a", "A"
_ALPHABETS = {DIGIT: string.digits, LOWER: string.ascii_lowercase, UPPER: string.ascii_uppercase}


def format_template(value: str) -> str:
    return "".join(_class_of(c) for c in value)


def _class_of(c: str) -> str:
    if c in string.digits:
        return DIGIT
    if c in string.ascii_lowercase:
        return LOWER
    if c in string.ascii_uppercase:
        return UPPER
    return c


def random_same_format(template: str, rng: random.Random | np.random.Generator) -> str:
    """One value drawn uniformly from the template's candidate space."""
    sizes = [len(_ALPHABETS[c]) if c in _ALPHABETS else 1 for c in template]
    picks = _draw(rng, sizes)
    return "".join(_ALPHABETS[c][k] if c in _ALPHABETS else c for c, k in zip(template, picks))


def _draw(rng: random.Random | np.random.Generator, sizes: list[int]) -> list[int]:
    """One uniform index below each size; numpy draws them in one call (exposure needs thousands)."""
    if isinstance(rng, np.random.Generator):
        return rng.integers(0, np.asarray(sizes, dtype=np.int64)).tolist() if sizes else []
    return [rng.randrange(n) for n in sizes]


def candidate_space_bits(template: str) -> float:
    """log2 |R|: the sum over free positions of log2 of their alphabet size (literals add 0)."""
    return sum(math.log2(len(_ALPHABETS[c])) for c in template if c in _ALPHABETS)
