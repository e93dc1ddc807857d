"""Verification of an image unlearning update (guarantee `empirical`): pass/fail thresholds.
The evidence mode (the default, no model retrained) has its own: unlearning.images.evidence.

With a retrained reference (the default) the checks bound the gap to it, in percentage points:
    |UA − UA_retrain| ≤ max_ua_gap (+ z·SE on n forget images, `ua_gap_tolerance`)
                                          the update forgot about as much as retraining
                                          (undecided where that bound covers every UA
                                          n images allow: unlearning.checks)
    TA_retrain − TA ≤ max_ta_drop         and kept about as much test accuracy
    RA_retrain − RA ≤ max_ra_drop         and retain accuracy
Without one (`reference: false`): UA ≥ min_class_ua for class forgetting, and
TA ≥ TA_original − max_ta_drop. MIA, DA, LP, NMI and F1 are reported beside, not thresholded: the
population attacks overestimate forgetting (science.md §5) and the feature metrics are read
against retraining, not in absolute terms.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field
from unlearning.checks import too_few_images, undecided


class ImageEvidenceConfig(BaseModel):
    """Thresholds of the evidence checks (unlearning.images.evidence's module docstring); points are
    percentage points. Here, not there: the forget flow's parameters name it, and this module
    imports neither torch nor the metrics."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    z: float = Field(3.0, gt=0, description="sampling tolerance in standard errors (one-sided ≈ 0.13 % false alarms)")
    accuracy_margin: float = Field(2.0, ge=0, description="points allowed beyond sampling between Z and the controls")
    auc_margin: float = Field(0.02, ge=0, description="membership AUC allowed beyond sampling around 0.5")
    max_absent_accuracy: float = Field(10.0, ge=0, le=100,
                                       description="accuracy on a class D' no longer holds (Z and held-out), points")
    max_ta_drop: float = Field(5.0, ge=0, description="TA_original − TA, points")
    max_ra_drop: float = Field(5.0, ge=0, description="RA_original − RA, points")
    max_controls: int = Field(2000, ge=10, description="held-out images of Z's classes drawn from (seeded subsample)")
    controls_per_forget: int = Field(8, ge=1, description="held-out images judged per forget image of a class "
                                                           "(a fixed sample by record id; at least min_controls)")
    min_controls: int = Field(20, ge=1, description="held-out images judged per class of Z, at least")
    utility_images: int | None = Field(100, ge=10, description="test and D' images (each) the TA/RA drops are "
                                                               "measured on, paired with the model before (a fixed "
                                                               "sample by record id; None: all)")
    utility_per_forget: int = Field(8, ge=0, description="the TA/RA samples hold at least this many images per "
                                                         "forget image")
    drift_z: float | None = Field(0.0, ge=0, description="the TA/RA drops since the chain's exact model "
                                                       "(`*_vs_exact_model`): standard errors of tolerance (0: "
                                                       "the bare max_ta_drop/max_ra_drop on the sample's "
                                                       "estimate, as the audit judges the chain's end; None: z)")
    max_drift: float | None = Field(None, ge=0, description="... and their points (None: max_ta_drop, max_ra_drop)")


class ImageVerifyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    reference: bool = Field(True, description="retrain a reference on D' and bound the gaps to it")
    max_ua_gap: float = Field(10.0, ge=0, description="|UA − UA_retrain|, points")
    ua_gap_z: float = Field(3.0, ge=0, description="standard errors of the two UAs on the forget set added to "
                                                   "max_ua_gap (one image moves UA by 100 points)")
    max_ta_drop: float = Field(5.0, ge=0, description="TA_reference − TA, points")
    max_ra_drop: float = Field(5.0, ge=0, description="RA_retrain − RA, points")
    min_class_ua: float = Field(90.0, ge=0, le=100, description="no reference, class forgetting: UA ≥ this")
    max_test: int | None = Field(2000, ge=10, description="test images evaluated (seeded subsample)")
    audit_images: int | None = Field(100, ge=10, description="the audit: test and D' images (each, a fixed sample by "
                                                             "record id) its TA/RA drops are first judged on; the "
                                                             "whole sets when that sample is not clear of the "
                                                             "threshold (unlearning.images.audit; None: whole sets)")
    audit_z: float = Field(3.0, gt=0, description="the audit's sample is clear of a threshold at this many paired "
                                                  "standard errors")
    evidence: ImageEvidenceConfig = Field(ImageEvidenceConfig(), description="thresholds of the evidence mode")


def ua_gap_tolerance(cfg: ImageVerifyConfig, n_forget: int | None, ua: float, ua_retrain: float) -> float:
    """The bound on |UA − UA_retrain| for a forget set of `n_forget` images: max_ua_gap plus z
    standard errors of the two accuracies (SE² = Σ p(1−p)/n, p smoothed to (k+1)/(n+2) so that 0 %
    and 100 % keep a variance, as the evidence checks do). Deleting one to five images moves UA by
    20–100 points between two models that forgot equally well: a fixed 10 points failed most such
    updates and audits while saying nothing; with one to three images the check cannot fail (it
    cannot judge them: `ua_gap_can_fail`, reported undecided). On a class of hundreds of images
    it stays within a point of max_ua_gap when both UAs are near 0 or 100 % (as forgetting a class
    makes them) and widens to ≈ max_ua_gap + 9 at 50 %. The two UAs are measured on the same
    images, so treating them as independent binomials over-states the noise (conservative: fewer
    false alarms, more misses); a paired test on the images where the models disagree would be
    tighter. `n_forget` None: the fixed bound."""
    if not n_forget:
        return cfg.max_ua_gap
    rates = [(round(a / 100 * n_forget) + 1) / (n_forget + 2) for a in (ua, ua_retrain)]
    return cfg.max_ua_gap + cfg.ua_gap_z * 100 * math.sqrt(sum(p * (1 - p) / n_forget for p in rates))


def ua_gap_can_fail(cfg: ImageVerifyConfig, n_forget: int | None, ua_retrain: float) -> bool:
    """Whether some UA the judged model could have on `n_forget` images (100·k/n, k = 0..n) is
    further from the retrained model's than its `ua_gap_tolerance`. With one to three images
    (and four around 50 %) none is: the bound (108 points at three images, 210 at one) covers
    every UA, and the check is undecided rather than passed. Past ≈ 30 images the extreme UA's
    gap (≥ 50 points) is beyond the widest bound, so only small sets are enumerated."""
    if not n_forget:
        return True
    if cfg.max_ua_gap + cfg.ua_gap_z * 100 * math.sqrt(0.5 / n_forget) < 50:
        return True
    return any(abs(100 * k / n_forget - ua_retrain) > ua_gap_tolerance(cfg, n_forget, 100 * k / n_forget, ua_retrain)
               for k in range(n_forget + 1))


# The checks that judge the forget set (the others judge utility): where every one of a request's
# is undecided, no check with power says the images are forgotten (unlearning.checks.undecided_removal).
REMOVAL_CHECKS = frozenset({"ua", "ua_gap_to_retrain", "heldout_controls", "forget_accuracy_gap_to_heldout",
                            "forgotten_class_accuracy", "forgotten_class_heldout_accuracy",
                            "membership_auc_vs_heldout"})


def image_checks(after: dict, before: dict, retrain: dict | None, kind: str, cfg: ImageVerifyConfig,
                 n_forget: int | None = None) -> list[dict]:
    """The checks of the module docstring on metric dicts (unlearning.metrics.evaluate_model keys);
    `n_forget`: the forget set's size, which widens the UA bound (`ua_gap_tolerance`)."""
    def check(name, value, threshold, passed):
        return {"name": name, "value": float(value), "threshold": threshold, "passed": bool(passed)}

    if retrain is not None:
        ua_gap = abs(after["ua"] - retrain["ua"])
        ua_bound = ua_gap_tolerance(cfg, n_forget, after["ua"], retrain["ua"])
        ta_drop, ra_drop = retrain["ta"] - after["ta"], retrain["ra"] - after["ra"]
        ua = check("ua_gap_to_retrain", ua_gap, f"<= {ua_bound:.1f}", ua_gap <= ua_bound)
        if not ua_gap_can_fail(cfg, n_forget, retrain["ua"]):
            ua = undecided(ua, too_few_images(n_forget))
        return [ua,
                check("ta_drop_vs_retrain", ta_drop, f"<= {cfg.max_ta_drop}", ta_drop <= cfg.max_ta_drop),
                check("ra_drop_vs_retrain", ra_drop, f"<= {cfg.max_ra_drop}", ra_drop <= cfg.max_ra_drop)]
    ta_drop = before["ta"] - after["ta"]
    checks = [check("ta_drop_vs_original", ta_drop, f"<= {cfg.max_ta_drop}", ta_drop <= cfg.max_ta_drop)]
    if kind == "forget_class":
        checks.insert(0, check("ua", after["ua"], f">= {cfg.min_class_ua}", after["ua"] >= cfg.min_class_ua))
    return checks


# (key, header, format): accuracies and MIA efficacy in percent, the rest in [0, 1], RTE in seconds.
TABLE_COLUMNS = (("ua", "UA %", "{:.1f}"), ("ra", "RA %", "{:.1f}"), ("ta", "TA %", "{:.1f}"),
                 ("mia_efficacy", "MIA-eff %", "{:.1f}"), ("mia_auc", "MIA-AUC", "{:.3f}"), ("da", "DA", "{:.3f}"),
                 ("lp", "LP %", "{:.1f}"), ("nmi", "NMI", "{:.3f}"), ("f1", "F1", "{:.3f}"),
                 ("rte_s", "RTE s", "{:.1f}"), ("cpu_s", "CPU s", "{:.1f}"), ("speedup", "speed-up", "{:.1f}×"),
                 ("avg_gap", "avg gap", "{:.2f}"))


def markdown_table(rows: list[dict], columns=TABLE_COLUMNS) -> str:
    """One row per model; a column is shown when some row has it; missing values print as '-'."""
    shown = [c for c in columns if any(r.get(c[0]) is not None for r in rows)]

    def cell(row, key, fmt):
        value = row.get(key)
        if value is None or value != value:
            return "-"
        return fmt.format(value) if isinstance(value, (int, float)) else str(value)

    lines = ["| method | " + " | ".join(h for _, h, _ in shown) + " |",
             "|---|" + "---:|" * len(shown)]
    lines += ["| " + str(r["method"]) + " | " + " | ".join(cell(r, k, f) for k, _, f in shown) + " |" for r in rows]
    return "\n".join(lines) + "\n"
