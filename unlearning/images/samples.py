"""The samples the image evidence and the audit judge on, and their statistics: which images (by a
hash of the record id: a fixed function of the set, unrelated to any model) and the paired drop of
accuracy from one model to another on them, with its standard error (unlearning.images.evidence
for the per-request checks, unlearning.images.audit for the audit's staged looks).
"""

from __future__ import annotations

import hashlib
import math

import numpy as np


def sample_key(record_id: str) -> int:
    """A record's place in every sample of this module: a hash of its id, so that the sample of a
    set is a fixed function of the set (the same test images every request, D′'s sample losing
    only the erased ones) and the next request's model before already knows its outputs on it."""
    return int.from_bytes(hashlib.blake2b(str(record_id).encode(), digest_size=8).digest(), "big")


def first_by_key(ids, m: int | None) -> np.ndarray:
    """Positions (ascending) of the `m` ids with the smallest sample_key; all when m is None or ≥ len."""
    ids = list(ids)
    if m is None or m >= len(ids):
        return np.arange(len(ids))
    keys = np.array([sample_key(str(i)) for i in ids], dtype=np.uint64)
    return np.sort(np.argsort(keys, kind="stable")[:m])


def paired_drop(correct_before, correct_after, population: int, max_drop: float, z: float) -> dict:
    """The accuracy drop (points) from the model before to the update on a sample of n of a set's
    `population` images, judged paired, and its tolerance max_drop + z · SE.

    Per image d = 1 if the model before got it right and the update wrong, −1 the other way, 0 when
    both agree: the drop over the whole set is exactly mean(d) (TA_before − TA_after), and the
    sample's mean is its unbiased estimate (the sample is by a hash of the record id: unrelated to
    either model). Var = (N − n)/(N − 1) · S²/n (a sample without replacement from N), S² = E[d²] −
    E[d]², with E[d²] the share of discordant pairs (b lost + c gained) smoothed to (b + c + 1)/(n + 2)
    and S² ≥ 1/(n + 2), so a sample without discordance keeps a width. Only the discordant images
    carry noise: an update that flips 2 % of the predictions is measured on 100 images to ±1.4
    points (SE), where an unpaired TA of 100 images has ±4. Passing when drop ≤ max_drop + z · SE
    keeps a false alarm on an update whose true drop is ≤ max_drop under Φ(−z) (0.13 % at z = 3,
    one-sided); a true drop of max_drop + 2z · SE is caught as often. The price is width: an update
    flipping 20 % of 100 sampled predictions is judged to ≈ max_drop + 12 points, so the sample
    catches a damaged model (tens of points), not a drop of a few points beyond max_drop (the full
    set, utility_images None, does). A sample of the whole set has SE 0: the full check."""
    before, after = np.asarray(correct_before, bool), np.asarray(correct_after, bool)
    n = len(before)
    if n == 0:
        return {"drop": 0.0, "se": 0.0, "tolerance": max_drop, "n": 0, "population": population,
                "lost": 0, "gained": 0}
    lost, gained = int((before & ~after).sum()), int((~before & after).sum())
    fpc = (population - n) / (population - 1) if population > 1 else 0.0
    spread = max((lost + gained + 1) / (n + 2) - ((lost - gained) / n) ** 2, 1 / (n + 2))
    se = 100 * math.sqrt(max(fpc, 0.0) * spread / n)
    return {"drop": 100 * (lost - gained) / n, "se": se, "tolerance": max_drop + z * se, "n": n,
            "population": population, "lost": lost, "gained": gained}
