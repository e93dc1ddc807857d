"""A verification check, as every kind of model writes it: {name, value, threshold, passed}, plus
`decided: False` and a `reason` on a check that could not have failed.

A threshold widened by the sampling error of a small sample (z · SE on one or three images) can
cover every value the statistic can take: an AUC within 0.5 ± 0.56, a UA gap within 108 points.
Such a check says nothing about the model, so it is marked undecided instead of being shown as
evidence. `passed` stays True on it (it did not fail, and cannot), so that every verdict —
`all(c["passed"] ...)`, auto's fall-back, the audit's — treats it as what it is: not a failure and
not a pass either, only a check without power. Printers show it as "undecided (reason)".
"""

from __future__ import annotations


def undecided(check: dict, reason: str) -> dict:
    """`check` marked as one that could not have failed. A check that failed anyway was decided
    (only a value rounded across the band's edge could get here): it is returned as it is."""
    return {**check, "decided": False, "reason": reason} if check["passed"] else check


def is_decided(check: dict) -> bool:
    return check.get("decided", True) is not False


def too_few_images(n: int) -> str:
    """The reason of an image check whose band covers every value `n` forget images allow."""
    return f"{n} forget image{'' if n == 1 else 's'}: too few to decide, the band covers every possible value"


def outcome(check: dict) -> str:
    """"ok", "FAILED" or "undecided" — what a console or a report shows of a check."""
    if not is_decided(check):
        return "undecided"
    return "ok" if check["passed"] else "FAILED"


def undecided_removal(checks: list[dict], removal: set[str]) -> str | None:
    """Why a verification says nothing about whether the data was removed — every one of its
    checks named in `removal` (those judging the forget set, not utility) is undecided — or None
    when one of them decided (or none is undecided)."""
    judged = [c for c in checks if c["name"] in removal]
    if not judged or any(is_decided(c) for c in judged):
        return None
    return judged[0]["reason"]
