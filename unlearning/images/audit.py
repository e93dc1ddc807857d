"""The audit's reference checks on an image model (unlearning.images.verify's thresholds), cheaply.

An audit compares the production model with the model retrained on the current data: the forget
set's UA gap, and the TA and RA drops against the retrained model, each ≤ max_ta_drop /
max_ra_drop points on the whole sets. Evaluating both models on every test and D′ image costs
more than the retraining itself at small scale (two forward passes over 2,800 images against two
epochs over 800: 1.3 s against 0.8 s), and every other metric of unlearning.metrics was computed
beside them and dropped.

So each drop is decided in two stages (`staged_drop`): first on a fixed sample of the set (by a
hash of the record id, as the evidence samples are: unlearning.images.samples.first_by_key),
paired — both models on the same images, only those they disagree on carry noise
(samples.paired_drop) — and the verdict is taken there when the sample is clear of the threshold
by z standard errors either way; otherwise the rest of the set is evaluated and the whole-set
drop decides, exactly as before. A sampled verdict differs from the whole set's only when the
true drop lies on the other side of the threshold and the sample strayed z SE from it: at a true
drop on the threshold about Φ(−z) (0.13 % at z = 3) per look and k·Φ(−z) over k looks
(Bonferroni), where the sample holds enough disagreeing images for the normal approximation; with
almost none the smoothed SE is too small (a true drop of exactly 5 points, all losses, shows no
disagreement among the first 100 of 2,000 images with probability 0.95¹⁰⁰ ≈ 0.6 %, and then
passes there). Far less for drops away from the threshold. Not re-validated beyond bench.stream's
`--compare-audits` (0 of 18 audits changed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from unlearning.images.samples import paired_drop, sample_key
from unlearning.images.verify import ImageVerifyConfig, image_checks
from unlearning.metrics import model_outputs


def correct(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """(n,) bool: which images `model` classifies right."""
    if len(y) == 0:
        return np.zeros(0, dtype=bool)
    out = model_outputs(model, x, y)
    return (out.predictions == out.labels).numpy()


@dataclass(frozen=True)
class StagedDrop:
    """The drop from the retrained model to the audited one (points) and how it was decided."""

    drop: float
    se: float  # 0 when decided on the whole set
    n: int  # images both models were evaluated on
    population: int
    accuracy_after: float  # on those n images, %
    accuracy_retrain: float

    @property
    def sampled(self) -> bool:
        return self.n < self.population


def by_key(ids) -> np.ndarray:
    """Positions of `ids` in sample_key order: its first m are samples.first_by_key(ids, m)."""
    return np.argsort(np.array([sample_key(str(i)) for i in ids], dtype=np.uint64), kind="stable")


def sample_sizes(first: int | None, population: int) -> list[int]:
    """The sizes a drop is looked at: first, 2·first, 4·first, ... and the whole set (nested
    samples: first_by_key's first m images are among its first 2m)."""
    sizes, m = [], first
    while m is not None and m < population:
        sizes.append(m)
        m *= 2
    return sizes + [population]


def staged_drop(after: torch.nn.Module, retrained: torch.nn.Module, part: tuple, max_drop: float,
                sample: int | None, z: float) -> StagedDrop:
    """accuracy(retrained) − accuracy(after) on `part` (X, y, record ids), in points: looked at on
    the first `sample`, 2·`sample`, ... images by sample_key (each look evaluates only the images
    added) and decided at the first look where drop ± z·SE lies wholly on one side of `max_drop`
    (the paired SE of samples.paired_drop, finite-population corrected), on every image at the
    latest. k looks before the whole set err with probability ≤ k·Φ(−z) at a true drop on the
    threshold (Bonferroni), less away from it."""
    x, y, ids = part
    population = len(y)
    order = by_key(ids)
    ok_r, ok_a, done = np.zeros(0, bool), np.zeros(0, bool), 0
    for m in sample_sizes(sample, population):
        index = torch.as_tensor(np.sort(order[done:m]), dtype=torch.long)
        ok_r = np.concatenate([ok_r, correct(retrained, x[index], y[index])])
        ok_a = np.concatenate([ok_a, correct(after, x[index], y[index])])
        done = m
        d = paired_drop(ok_r, ok_a, population, 0.0, z)
        if m == population or d["drop"] + z * d["se"] <= max_drop or d["drop"] - z * d["se"] > max_drop:
            break
    acc_a, acc_r = (100 * float(ok.mean()) if len(ok) else 0.0 for ok in (ok_a, ok_r))
    return StagedDrop(acc_r - acc_a, d["se"] if done < population else 0.0, done, population, acc_a, acc_r)


def audit_checks(after: torch.nn.Module, retrained: torch.nn.Module, forget: tuple | None, retain: tuple,
                 test: tuple, kind: str, cfg: ImageVerifyConfig = ImageVerifyConfig()) -> tuple[list[dict], dict]:
    """(checks, metrics) of the audit: unlearning.images.verify.image_checks against the retrained
    model, the UA gap on the whole forget set `forget` (X, y; None: no forgotten image kept, the
    check is left out), the TA/RA drops by `staged_drop` on `retain` and `test` (X, y, ids).
    metrics: ua/ra/ta of both models (ra/ta on the images each drop was decided on: their
    difference is the drop) and, per drop, how many images that was."""
    drops = {key: staged_drop(after, retrained, part, limit, cfg.audit_images, cfg.audit_z)
             for key, part, limit in (("ra", retain, cfg.max_ra_drop), ("ta", test, cfg.max_ta_drop))}
    rows = {name: {key: getattr(d, f"accuracy_{name}") for key, d in drops.items()} for name in ("after", "retrain")}
    if forget is not None:
        for name, model in (("after", after), ("retrain", retrained)):
            rows[name]["ua"] = 100 - 100 * float(correct(model, *forget).mean()) if len(forget[1]) else 0.0
    else:
        rows = {name: {**row, "ua": 0.0} for name, row in rows.items()}
    checks = image_checks(rows["after"], None, rows["retrain"], kind, cfg,
                          n_forget=len(forget[1]) if forget is not None else None)
    for c in checks:
        d = drops.get(c["name"].split("_", 1)[0])
        if d is not None and d.sampled:
            c["threshold"] += f" (sample of {d.n} of {d.population}, SE {d.se:.2g})"
    if forget is None:
        checks = checks[1:]
    metrics = {**{f"{k}_{name}": v for name, row in rows.items() for k, v in row.items()},
               **{f"{k}_images_judged": d.n for k, d in drops.items()}}
    return checks, metrics
