"""Evidence that an image update forgot, without a model retrained per request (issue 13 §1,
science.md §6): the forget set Z is judged against HELD-OUT images of the same classes, evaluated
in the same updated model — what retraining would make of Z is what the model makes of images it
never saw.

Each forget sample i is a pair (image x_i, recorded label r_i); its controls are the held-out
(test-split) images of class r_i, scored with r_i. Per recorded label (a stratum), with n_f forget
samples and n_h controls, weights w = n_f / |Z|:

- classes still in D' (r has training images in D'): a model retrained on D' treats Z like unseen
  images of the same classes, so
      gap = acc(Z, r) − Σ w · acc(controls_s, r)             (points; acc = share predicted r)
  must lie within  margin + z · SE,  SE² = Σ w ã(1−ã)/|Z| + Σ w² ã(1−ã)/n_h, ã the control rate
  smoothed (k+1)/(n+2) so a control at 0 % or 100 % still has a sampling error. Two-sided for
  deletions (a forget set much *worse* than unseen images marks it as well as memorisation does:
  the Streisand effect); one-sided (upper) for relabelled samples (fix_labels): D' holds them under
  their corrected label, which only pulls a retrained model away from the old one, and an image
  whose old label was wrong looks less like that class than its held-out images do. Their controls
  are of the *recorded* class, not of the corrected one: a correction does not say what the image
  shows (relabelling a striped image "disc" leaves it striped, and a retrained model still calls it
  striped — controls of class "disc" raised a false alarm on exactly that).
- classes absent from D' (class forgetting, or deletions that took a class's last image): a
  model retrained on D' has no training image of r and predicts it (almost) never, on Z or on
  unseen images of the class, whatever its accuracy before. The expectation is ≈ 0, not the
  control's rate: acc(Z, r) and acc(controls, r) must each stay ≤ max_absent_accuracy (the same
  10 points the reference check allows between UA and UA_retrain). Comparing with the control
  alone would pass the original model, which recognises the held-out images of the class too.
- membership: the loss-threshold attack's AUC (unlearning.metrics.loss_mia_auc; members = Z,
  non-members = the controls, both scored with r), per stratum and weighted by w; 0.5 when Z is
  as unseen as the controls. Within 0.5 ± (auc_margin + z · SE), SE² = Σ w² (n_f + n_h + 1) /
  (12 n_f n_h) (the Mann–Whitney variance under no difference); one-sided for relabelled samples.
- retain and test accuracy against the model before: drops ≤ max_ra_drop, max_ta_drop points plus
  z standard errors, measured on fixed samples of D' and of the test images (by a hash of the
  record id, `utility_images` each, at least `utility_per_forget` per forget image) and judged
  paired: the model before's outputs on the same images are known, so only the images the two
  models disagree on carry sampling noise (`paired_drop` derives the tolerance). When the model
  before is itself a fast update, the same drops against the last model trained exactly that the
  chain of updates started from (its outputs on the samples kept with each version): steps that
  each pass can add up (`judge_request`). Those are held to the bare thresholds on the sample's
  estimate (drift_z = 0, `drift_config`), as the audit will judge the chain's end.
- the held-out controls judged: per forget class, the first max(min_controls, controls_per_forget ·
  n_r) by the same hash (`control_sample`), so the test sample's images of the class are among them.

What a request evaluates (`judge_request`): the model before and the update, each on Z and the
samples of D \\ Z, of the test images and of the controls (every metric of unlearning.metrics for
both on those sets, as the pipeline reports them). The model before's outputs are those of the
version the request starts from: they are computed once per version (`KnownOutputs`, kept in the
version's private state: when the request that made it evaluated it on its samples, or when it was
trained), so a request evaluates only the update, and reads the model before's rows from there
(those missing are evaluated and added).

A check whose tolerance covers every value the forget set could give it (one to three images: the
AUC's band 0.5 ± 0.56 or more, a gap's wider than the accuracies allow; `gap_can_fail`,
`auc_can_fail`) cannot fail: it is marked undecided (unlearning.checks), not shown as passed.

Strata without a held-out image of their class are left out (reported as `uncontrolled`); a
forget set with no controlled sample fails the check `heldout_controls` (use the reference mode).
Limits: one or a few records give wide tolerances (an accuracy of one image cannot be judged), and
a forget set selected non-randomly within its classes (all of one person's photos) can differ
from unseen images for reasons other than memorisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from unlearning.checks import too_few_images, undecided
from unlearning.errors import UnlearnError
from unlearning.images.request import ImageData, ImageRequest
# The thresholds live beside the reference checks' (no torch, no metrics): the forget flow names
# them in its parameters, and a table request must not load this module to build that signature.
from unlearning.images.verify import ImageEvidenceConfig
from unlearning.metrics import evaluate_outputs, loss_mia_auc, model_outputs
from unlearning.metrics.evaluate import Outputs
from unlearning.images.outputs import KnownOutputs, evaluate_sets, known_of
from unlearning.images.samples import first_by_key, paired_drop


@dataclass(frozen=True)
class Stratum:
    """Forget samples with one recorded label, and their held-out controls (images of that class)."""

    label: int
    forget: np.ndarray  # (n_f,) positions in Z
    controls: np.ndarray  # (n_h,) positions in the held-out set
    present: bool  # `label` has training images in D'


def control_positions(train: np.ndarray, labels: np.ndarray, classes, cap: int, seed: int = 0) -> np.ndarray:
    """Held-out (test-split) positions of the given classes, a seeded subsample of at most `cap`."""
    pos = np.flatnonzero(~np.asarray(train) & np.isin(labels, list(classes)))
    if len(pos) > cap:
        pos = np.sort(np.random.default_rng(seed).choice(pos, cap, replace=False))
    return pos


def strata(recorded: np.ndarray, control_labels: np.ndarray, present_classes: set[int]) -> list[Stratum]:
    """Z grouped by recorded label, each with the controls of that class."""
    recorded = np.asarray(recorded)
    if recorded.ndim != 1 or len(recorded) == 0:
        raise UnlearnError(f"need a non-empty 1-D array of recorded labels, got shape {recorded.shape}")
    return [Stratum(r, np.flatnonzero(recorded == r), np.flatnonzero(np.asarray(control_labels) == r),
                    r in present_classes) for r in sorted(set(recorded.tolist()))]


def label_losses(logits: torch.Tensor, labels) -> np.ndarray:
    """Cross-entropy of each row of `logits` (n, K) against `labels` (n,) — any label, not only the
    image's own: controls are scored with the forget samples' recorded label."""
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    return (torch.logsumexp(logits, 1) - logits.gather(1, labels[:, None]).squeeze(1)).double().numpy()


def predicted(logits: torch.Tensor) -> np.ndarray:
    return logits.argmax(1).numpy()


def smoothed_rate(hits: int, n: int) -> float:
    """(k + 1) / (n + 2): a rate whose binomial variance is never 0, even at 0 or n hits."""
    return (hits + 1) / (n + 2)


def accuracy_gap(groups: list[Stratum], forget_pred: np.ndarray, control_pred: np.ndarray, z: float,
                 margin: float) -> dict:
    """acc(Z, r) − weighted acc(controls, r) in points, and its tolerance margin + z · SE."""
    n_f = sum(len(g.forget) for g in groups)
    acc_f = acc_c = var = 0.0
    for g in groups:
        w = len(g.forget) / n_f
        hits_c = int((control_pred[g.controls] == g.label).sum())
        rate = smoothed_rate(hits_c, len(g.controls))
        acc_f += float((forget_pred[g.forget] == g.label).sum()) / n_f
        acc_c += w * hits_c / len(g.controls)
        var += w * rate * (1 - rate) / n_f + w * w * rate * (1 - rate) / len(g.controls)
    return {"forget": 100 * acc_f, "heldout": 100 * acc_c, "gap": 100 * (acc_f - acc_c),
            "tolerance": margin + z * 100 * math.sqrt(var), "n_forget": n_f}


def membership_auc(groups: list[Stratum], forget_logits: torch.Tensor, control_logits: torch.Tensor, z: float,
                   margin: float) -> dict:
    """The loss-threshold attack's AUC, Z against the controls, per stratum weighted by its share of
    Z; its tolerance around 0.5 is margin + z · SE under no difference (Mann–Whitney)."""
    n_f = sum(len(g.forget) for g in groups)
    auc = var = 0.0
    for g in groups:
        w, m, n = len(g.forget) / n_f, len(g.forget), len(g.controls)
        members = label_losses(forget_logits[g.forget], np.full(m, g.label))
        nonmembers = label_losses(control_logits[g.controls], np.full(n, g.label))
        auc += w * loss_mia_auc(members, nonmembers)
        var += w * w * (m + n + 1) / (12 * m * n)
    return {"auc": auc, "tolerance": margin + z * math.sqrt(var)}


def class_level(groups: list[Stratum], forget_pred: np.ndarray, control_pred: np.ndarray) -> dict:
    """Share of Z, and of the controls, predicted as their recorded label (points), for classes
    absent from D' (controls: None when none of them has a held-out image)."""
    hits_f = sum(int((forget_pred[g.forget] == g.label).sum()) for g in groups)
    n_f = sum(len(g.forget) for g in groups)
    controlled = [g for g in groups if len(g.controls)]
    n_c = sum(len(g.controls) for g in controlled)
    hits_c = sum(int((control_pred[g.controls] == g.label).sum()) for g in controlled)
    return {"forget": 100 * hits_f / n_f, "heldout": 100 * hits_c / n_c if n_c else None}


def forget_evidence(forget_logits: torch.Tensor, recorded, control_logits: torch.Tensor, control_labels,
                    present_classes: set[int], relabelled: bool, cfg: ImageEvidenceConfig) -> dict:
    """Every statistic of the module docstring for one model's outputs: logits (n_f, K) on Z with
    its recorded labels, logits (n_h, K) on the held-out controls with their labels, the classes D'
    still holds, and whether Z is relabelled (fix_labels: one-sided) rather than deleted."""
    groups = strata(recorded, control_labels, present_classes)
    f_pred, c_pred = predicted(forget_logits), predicted(control_logits)
    controlled = [g for g in groups if len(g.controls)]
    present = [g for g in controlled if g.present]
    absent = [g for g in groups if not g.present]
    return {
        "n_forget": len(np.asarray(recorded)), "n_controls": len(np.asarray(control_labels)),
        "uncontrolled": sum(len(g.forget) for g in groups if not len(g.controls)),
        "one_sided": bool(relabelled),
        "accuracy": accuracy_gap(present, f_pred, c_pred, cfg.z, cfg.accuracy_margin) if present else None,
        "absent": class_level(absent, f_pred, c_pred) if absent else None,
        "membership": membership_auc(controlled, forget_logits, control_logits, cfg.z, cfg.auc_margin)
        if controlled else None,
    }


@dataclass(frozen=True)
class EvidenceSets:
    """What the evidence of one request is measured on: Z with its recorded labels, the held-out
    controls, the classes D' holds and whether Z is relabelled (fix_labels) rather than deleted."""

    forget: tuple[torch.Tensor, torch.Tensor]  # (n_f, C, H, W), (n_f,) recorded labels
    controls: tuple[torch.Tensor, torch.Tensor]  # (n_h, C, H, W), (n_h,) their labels
    present: frozenset[int]
    relabelled: bool


def evidence_sets(data: ImageData, request: ImageRequest, controls: tuple[torch.Tensor, torch.Tensor]) -> EvidenceSets:
    """The sets of a request on the model's training set, with held-out `controls` (control_positions)."""
    present = frozenset(torch.unique(request.d_prime(data)[1]).tolist())
    return EvidenceSets((data.X[request.forget], data.y[request.forget]), controls, present,
                        request.corrected is not None)


def evidence_of(model: torch.nn.Module, sets: EvidenceSets, cfg: ImageEvidenceConfig) -> dict:
    """`forget_evidence` of one model: its outputs on Z and on the controls."""
    forget, controls = (model_outputs(model, x, y) for x, y in (sets.forget, sets.controls))
    return forget_evidence(forget.logits, forget.labels.numpy(), controls.logits, controls.labels.numpy(),
                           set(sets.present), sets.relabelled, cfg)


# Not cached: a cache would keep record ids, erased ones included, in a long-running service's
# memory (`unlearn serve`). Hashing 60,000 ids takes about 0.06 s.
def control_sample(ids, labels, recorded, cfg: ImageEvidenceConfig) -> np.ndarray:
    """Positions of the held-out controls judged: per recorded class r with n_r forget images, the
    max(min_controls, controls_per_forget · n_r) of class r first by sample_key. A stratum's gap
    variance is ã(1−ã)(w/|Z| + w²/n_h) = w ã(1−ã)/|Z| · (1 + n_r/n_h): with n_h ≥ 8 n_r the controls
    widen the tolerance by ≤ 6 % over infinitely many (the membership AUC's (n_f+n_h+1)/(12 n_f n_h)
    likewise), and the sample is a prefix of the one the test images are drawn from, so the two share
    their images."""
    labels, ids = np.asarray(labels), list(ids)
    counts = {int(r): int(n) for r, n in zip(*np.unique(np.asarray(recorded), return_counts=True))}
    keep = []
    for r, n_r in counts.items():
        pos = np.flatnonzero(labels == r)
        take = first_by_key([ids[p] for p in pos], max(cfg.min_controls, cfg.controls_per_forget * n_r))
        keep.extend(pos[take].tolist())
    return np.array(sorted(keep), dtype=np.int64)


def utility_sample_size(cfg: ImageEvidenceConfig, n_forget: int) -> int | None:
    """Images of the test set, and of D′, the TA/RA drops are measured on (None: all)."""
    if cfg.utility_images is None:
        return None
    return max(cfg.utility_images, cfg.utility_per_forget * n_forget)


def utility_drops(before: dict, after: dict, populations: dict, cfg: ImageEvidenceConfig) -> dict:
    """{"ta": paired_drop, "ra": paired_drop} from the two models' Outputs on the same sampled test
    and D′ images (`before`, `after`: {"test": Outputs, "retain": Outputs}) and the sets' sizes."""
    limits = {"test": cfg.max_ta_drop, "retain": cfg.max_ra_drop}
    return {key: paired_drop((before[name].predictions == before[name].labels).numpy(),
                             (after[name].predictions == after[name].labels).numpy(),
                             populations[name], limits[name], cfg.z)
            for key, name in (("ta", "test"), ("ra", "retain"))}


def check(name: str, value, threshold: str, passed: bool) -> dict:
    return {"name": name, "value": float(value), "threshold": threshold, "passed": bool(passed)}


def gap_can_fail(acc: dict, one_sided: bool) -> bool:
    """Whether some accuracy Z could have (k of its n images right, k = 0..n: a gap from
    −heldout to 100 − heldout) lies outside the gap's tolerance, the controls being what they
    are. One image at a control rate of 90 % has a tolerance of ≈ 94 points: every gap it allows
    (−90 or +10) is within, the check cannot fail."""
    low, high = -acc["heldout"], 100 - acc["heldout"]
    return high > acc["tolerance"] or (not one_sided and -low > acc["tolerance"])


def gap_band_reason(acc: dict) -> str:
    """Why a gap check cannot fail: the band against controls this accurate covers every accuracy
    the forget images allow (few images, or, one-sided, controls so accurate that no forget accuracy
    can exceed them by the tolerance, at any number of images)."""
    n = acc["n_forget"]
    return (f"{n} forget image{'' if n == 1 else 's'} against controls {acc['heldout']:.3g} % right: the band "
            f"({acc['tolerance']:.3g} points) covers every accuracy they allow")


def auc_can_fail(mia: dict) -> bool:
    """Whether an AUC in [0, 1] (both ends reachable: every forget loss below, or above, every
    control's) can leave 0.5 ± tolerance (one-sided: exceed 0.5 + tolerance). Three images
    against 24 controls have a tolerance of 0.56: no AUC can."""
    return mia["tolerance"] < 0.5


def within(value: float, tolerance: float, one_sided: bool) -> tuple[str, bool]:
    """(threshold text, passed) for a deviation that must stay within ±tolerance, or ≤ tolerance."""
    if one_sided:
        return f"<= {tolerance:.3g}", value <= tolerance
    return f"|x| <= {tolerance:.3g}", abs(value) <= tolerance


def n_controlled(evidence: dict) -> int:
    """Forget images with held-out controls: those the membership AUC is measured on."""
    return evidence["n_forget"] - evidence["uncontrolled"]


def evidence_checks(evidence: dict, after: dict, before: dict, cfg: ImageEvidenceConfig,
                    drops: dict | None = None) -> list[dict]:
    """The checks, in the {name, value, threshold, passed} form of unlearning.images.verify, from
    `forget_evidence` and the TA/RA drops: `drops` (utility_drops, measured on a sample, paired) or,
    without it, the unlearning.metrics rows (ra, ta) of the update and the original on whole sets."""
    checks = []
    if evidence["accuracy"] is None and evidence["membership"] is None and evidence["absent"] is None:
        checks.append(check("heldout_controls", 0, ">= 1 held-out image of the forget set's classes", False))
    if (acc := evidence["accuracy"]) is not None:
        gap = check("forget_accuracy_gap_to_heldout", acc["gap"], *within(acc["gap"], acc["tolerance"],
                                                                         evidence["one_sided"]))
        if not gap_can_fail(acc, evidence["one_sided"]):
            gap = undecided(gap, gap_band_reason(acc))
        checks.append(gap)
    if (absent := evidence["absent"]) is not None:
        limit = cfg.max_absent_accuracy
        checks.append(check("forgotten_class_accuracy", absent["forget"], f"<= {limit}", absent["forget"] <= limit))
        if absent["heldout"] is not None:
            checks.append(check("forgotten_class_heldout_accuracy", absent["heldout"], f"<= {limit}",
                                absent["heldout"] <= limit))
    if (mia := evidence["membership"]) is not None:
        deviation, tol = mia["auc"] - 0.5, mia["tolerance"]
        text = f"<= {0.5 + tol:.3g}" if evidence["one_sided"] else f"0.5 ± {tol:.3g}"
        auc = check("membership_auc_vs_heldout", mia["auc"], text, within(deviation, tol, evidence["one_sided"])[1])
        checks.append(auc if auc_can_fail(mia) else undecided(auc, too_few_images(n_controlled(evidence))))
    if drops is None:
        drops = {"ta": {"drop": before["ta"] - after["ta"], "se": 0.0, "tolerance": cfg.max_ta_drop},
                 "ra": {"drop": before["ra"] - after["ra"], "se": 0.0, "tolerance": cfg.max_ra_drop}}
    for key in ("ta", "ra"):
        d = drops[key]
        text = f"<= {d['tolerance']:.3g}" if not d["se"] else f"<= {d['tolerance']:.3g} (sample of {d['n']})"
        checks.append(check(f"{key}_drop_vs_original", d["drop"], text, d["drop"] <= d["tolerance"]))
    return checks


@dataclass(frozen=True)
class RequestImages:
    """Everything a request's evidence evaluates, each set as (X, y, record ids): Z with its
    recorded labels, D \\ Z, the test images (unlearning.metrics' sets) and the held-out controls."""

    forget: tuple
    retain: tuple
    test: tuple
    controls: tuple
    present: frozenset[int]
    relabelled: bool


def subset(part: tuple, positions: np.ndarray) -> tuple:
    """(X, y, ids) at `positions`."""
    x, y, ids = part
    index = torch.as_tensor(positions, dtype=torch.long)
    return x[index], y[index], [ids[p] for p in positions.tolist()]


def request_sample(images: RequestImages, cfg: ImageEvidenceConfig) -> RequestImages:
    """What the checks are measured on: Z whole, the fixed samples of D′ and of the test images
    (utility_sample_size, first by sample_key) and the controls (control_sample)."""
    m = utility_sample_size(cfg, len(images.forget[1]))
    return RequestImages(images.forget, subset(images.retain, first_by_key(images.retain[2], m)),
                         subset(images.test, first_by_key(images.test[2], m)),
                         subset(images.controls, control_sample(images.controls[2], images.controls[1].numpy(),
                                                                images.forget[1].numpy(), cfg)),
                         images.present, images.relabelled)


@dataclass(frozen=True)
class Judgement:
    """One request's evidence (judge_request): both models' metrics and forget-set statistics, the
    checks, and the outputs each version keeps."""

    before: dict  # every metric of unlearning.metrics, model before
    after: dict  # the same, the update
    evidence_before: dict
    evidence_after: dict
    checks: list[dict]
    known_after: KnownOutputs  # the update's outputs on D' and the held-out images (not on a deleted Z)
    known_before: KnownOutputs | None  # `known` with the rows evaluated now added (None: nothing new)
    evaluated_before: int  # images the model before was evaluated on (0: all known)
    drops: dict = field(default_factory=dict)  # utility_drops: TA/RA drops on the sample, paired
    judged_images: dict = field(default_factory=dict)  # images per set the checks were measured on
    drops_since_exact: dict | None = None  # utility_drops from the anchor (judge_request), when given
    anchor_after: KnownOutputs | None = None  # the last exact model's outputs on the samples, for the next request


def known_part(known: KnownOutputs, part: tuple, classes) -> tuple[Outputs, np.ndarray]:
    """(`known`'s outputs on the images of `part` (X, y, ids) it holds whose label is in `classes`,
    with their labels in `part`; their positions in `part`)."""
    rows, labels = known.rows(), torch.as_tensor(part[1]).tolist()
    pos = np.array([p for p, i in enumerate(part[2]) if str(i) in rows and labels[p] in classes], dtype=np.int64)
    r = [rows[str(part[2][p])] for p in pos.tolist()]
    labels = torch.as_tensor(part[1]).long()[torch.as_tensor(pos)]
    return Outputs(known.features[r].double(), known.logits[r].double(), labels), pos


def drops_since_exact(anchor: KnownOutputs, sampled: RequestImages, after: dict, populations: dict,
                      cfg: ImageEvidenceConfig) -> dict:
    """utility_drops from the last model trained exactly (`anchor`: its outputs on the samples) to
    the update, on the sampled images the anchor knows (a stand-in for an erased sampled image
    drawn since is not among them) of the classes D' holds (a class forgotten since is lost on
    purpose)."""
    mine, theirs = {}, {}
    for name, part in (("retain", sampled.retain), ("test", sampled.test)):
        theirs[name], pos = known_part(anchor, part, sampled.present)
        out = after[name]
        index = torch.as_tensor(pos)
        mine[name] = Outputs(out.features[index], out.logits[index], out.labels[index])
    return utility_drops(theirs, mine, populations, cfg)


def drift_config(cfg: ImageEvidenceConfig) -> ImageEvidenceConfig:
    """The thresholds of the drops since the chain's exact model: drift_z and max_drift where set.
    The audit holds the chain's end to the bare max_ta_drop/max_ra_drop on whole sets against a
    retrained model; the 100-image samples at z = 3 let ≈ 5 + 3 × 2–3 points through, so a chain
    whose every step passed failed the weekly audit (bench.stream, 30 requests at 800 images: audit 2
    at TA 6.4 / RA 9.3 below the retrained model). With drift_z = 0 (the default) the sample's
    estimate is held to the audit's own threshold: every audit passed, for 1–2 more fall-backs a
    month (docs/benchmarks.md, the month of requests)."""
    update = {"z": cfg.z if cfg.drift_z is None else cfg.drift_z}
    if cfg.max_drift is not None:
        update.update(max_ta_drop=cfg.max_drift, max_ra_drop=cfg.max_drift)
    return cfg.model_copy(update=update)


def judge_request(before: torch.nn.Module, after: torch.nn.Module, images: RequestImages, cfg: ImageEvidenceConfig,
                  known: KnownOutputs | None = None, anchor: KnownOutputs | None = None) -> Judgement:
    """The evidence checks of one request: every metric and the forget-set evidence of the model
    before (its outputs read from `known` where it holds them) and of the update (evaluated), and
    the checks on them. Z is evaluated once per model for both the metrics and the evidence.

    `anchor`: when the model before is itself a fast update, the outputs on the samples of the
    last model trained exactly (trained or retrained) that the chain of updates started from; the
    TA/RA drops are then also judged against it (`ta_drop_vs_exact_model`, `ra_drop_vs_exact_model`):
    updates that each stay within a few points of the model before can add up to tens
    (bench.stream: 25 points of TA below the retrained model after 30 stacked deletions, every
    request passing). The Judgement's `anchor_after` is what the new version keeps of it (None
    with no anchor given: the model before is exact, and it is the anchor — `known_before`'s rows)."""
    sampled = request_sample(images, cfg)
    sets = (sampled.forget, sampled.retain, sampled.test, sampled.controls)
    outs_before, evaluated, running = evaluate_sets(before, sets, known)
    outs_after, _, _ = evaluate_sets(after, sets, None)
    populations = {"retain": len(images.retain[1]), "test": len(images.test[1])}
    after_sets = {"retain": outs_after[1], "test": outs_after[2]}
    drops = utility_drops({"retain": outs_before[1], "test": outs_before[2]}, after_sets, populations, cfg)
    since = (drops_since_exact(anchor, sampled, after_sets, populations, drift_config(cfg))
             if anchor is not None else None)
    sample_ids = list(sampled.retain[2]) + list(sampled.test[2])
    anchor_after = (anchor if anchor is not None else known_of([(sampled.retain[2], outs_before[1]),
                                                                (sampled.test[2], outs_before[2])])
                    ).restricted(sample_ids)

    def judged(outs: list[Outputs]) -> tuple[dict, dict]:
        forget, retain, test, controls = outs
        found = forget_evidence(forget.logits, forget.labels.numpy(), controls.logits, controls.labels.numpy(),
                                set(images.present), images.relabelled, cfg)
        return evaluate_outputs(forget, retain, test), found

    row_before, ev_before = judged(outs_before)
    row_after, ev_after = judged(outs_after)
    # the update's version keeps its outputs on its own training images and the held-out ones; a
    # deleted image's outputs are derived from erased data and are not kept with it
    first = 0 if images.relabelled else 1  # sets[0] is Z
    known_after = known_of([(ids, out) for (_, _, ids), out in zip(sets[first:], outs_after[first:])])
    known_before = running if evaluated else None
    checks = evidence_checks(ev_after, row_after, row_before, cfg, drops)
    if since is not None:
        checks += [{**c, "name": c["name"].replace("_vs_original", "_vs_exact_model")}
                   for c in evidence_checks(ev_after, row_after, row_before, cfg, since)[-2:]]
    return Judgement(row_before, row_after, ev_before, ev_after, checks, known_after, known_before,
                     evaluated, drops, {name: len(part[1]) for name, part in
                                        zip(("forget", "retain", "test", "controls"), sets)},
                     since, anchor_after)
