"""From a table, a model and an erasure request to the tensors of an unlearning Problem.

Z = training rows that are deleted, relabelled, or informative on a revoked feature (science.md §1:
after standardisation every row is informative, so revoking a feature touches all of them);
Z̃ = the rows that stay, as the corrected table encodes them: revoked features neutralised, labels
fixed — taken from the model version's own encoding of its data (`Encoded`, kept with the version),
so that a request costs O(|Z|·p) of encoding, not a pandas pass over the table.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from unlearning.tabular import certified, influence, logreg
from unlearning.tabular.bundle import ModelBundle
from unlearning.tabular.data import Table
from unlearning.tabular.encoding import CLIP
from unlearning.tabular.problem import Problem, make_problem


FEW_IDS = 4  # up to this many ids, `_holds` compares each with every row (0.3–0.5 ms each on 40k rows, against 2.5 ms for a set lookup per row)


@dataclass(frozen=True)
class TrainingData:
    X: torch.Tensor  # (n, d)
    y: torch.Tensor  # (n,)
    # record id of each row, (n,) str objects: an array, not a list, because Prefect visits every
    # element of a list passed to a task (0.6 s for Adult's ids) and never looks into an array
    ids: np.ndarray
    # the numeric features' values as given, (n, k) float64, NaN where missing or revoked
    # (Encoder.numeric_columns): X lost the clipped and missing ones, which refitting the
    # statistics after an erasure needs (Encoder.raw_from)
    numbers: torch.Tensor


@dataclass(frozen=True)
class Encoded:
    """A model version's table encoded with its feature map, kept with the version (tasks.state)
    so that a request on it reads these instead of re-encoding the table through pandas: the
    training rows (the row order of Problem.X) with their numeric values as given, the held-out
    rows, and per one-hot column how many training rows hold its category (what forgetting the
    categories that left needs: the map knows the categories of its training rows only, and one
    that a held-out row alone still holds would name what every training holder of it was).
    `data_version`: the data version they were encoded from (None: unknown, never kept)."""

    train: TrainingData
    test: TrainingData
    category_counts: torch.Tensor  # (d,) int64
    data_version: str | None = None

    def to_state(self) -> dict:
        """Tensors and strings (what torch.load reads back with weights_only); the ids as one JSON
        text, which loads 40× faster than a list of 40k strings."""
        return {"X": self.train.X, "y": self.train.y, "ids": json.dumps(self.train.ids.tolist()), "X_test": self.test.X,
                "y_test": self.test.y, "test_ids": json.dumps(self.test.ids.tolist()),
                "numbers": self.train.numbers, "numbers_test": self.test.numbers,
                "category_counts": self.category_counts,
                "data_version": self.data_version}

    @classmethod
    def from_state(cls, d: dict) -> "Encoded":
        return cls(TrainingData(d["X"], d["y"], _id_array(json.loads(d["ids"])), d["numbers"]),
                   TrainingData(d["X_test"], d["y_test"], _id_array(json.loads(d["test_ids"])), d["numbers_test"]),
                   d["category_counts"], d["data_version"])


@dataclass(frozen=True)
class Changes:
    """What a request changes in the rows of D: the records deleted, and the records that stay
    with a new label (record id → label)."""

    deleted: frozenset[str]
    relabelled: dict[str, str]


def training_data(table: Table, bundle: ModelBundle) -> TrainingData:
    """The model's training rows of `table`, encoded with the model's feature map."""
    return _encoded_rows(table, bundle, table.train_mask())


def held_out_data(table: Table, bundle: ModelBundle) -> TrainingData:
    return _encoded_rows(table, bundle, ~table.train_mask())


def _encoded_rows(table: Table, bundle: ModelBundle, mask: np.ndarray) -> TrainingData:
    frame = table.frame[mask]
    X, numbers = bundle.encoder.transform_with_numbers(frame)
    y = torch.as_tensor(bundle.encoder.encode_labels(frame[table.target]), dtype=torch.long)
    return TrainingData(X=torch.as_tensor(X, dtype=logreg.DTYPE), y=y, ids=_id_array(str(i) for i in frame.index),
                        numbers=torch.as_tensor(numbers, dtype=logreg.DTYPE))


def _id_array(ids) -> np.ndarray:
    ids = list(ids)
    out = np.empty(len(ids), dtype=object)
    out[:] = ids
    return out


def _holds(ids: np.ndarray, wanted) -> np.ndarray:
    """(n,) bool: which ids are in the set `wanted`."""
    if len(wanted) <= FEW_IDS:  # a comparison in C per id beats a set lookup in Python per row
        out = np.zeros(len(ids), dtype=bool)
        for record in wanted:
            out |= ids == record
        return out
    return np.fromiter((i in wanted for i in ids), dtype=bool, count=len(ids))


@dataclass(frozen=True)
class Deleted:
    """Which rows of a version's encoding a request deletes, (n,) bool per split: found once per
    request (a pass over the ids) and read by every step that drops or excludes them."""

    train: np.ndarray
    test: np.ndarray

    @classmethod
    def of(cls, encoded: Encoded, changes: Changes) -> "Deleted":
        return cls(_holds(encoded.train.ids, changes.deleted), _holds(encoded.test.ids, changes.deleted))


def encode_version(table: Table, bundle: ModelBundle, data_version: str | None = None) -> Encoded:
    """Every row of `table` encoded with `bundle`'s feature map (the O(n·p) pandas pass a
    model version's cache saves its requests)."""
    mask = table.train_mask()
    counts = torch.as_tensor(bundle.encoder.category_counts(table.frame[mask]), dtype=torch.long)
    return Encoded(_encoded_rows(table, bundle, mask), _encoded_rows(table, bundle, ~mask), counts, data_version)


def changes_between(before: Table, after: Table) -> Changes:
    """The changes turning `before` into `after`, found by comparing the tables (O(n))."""
    deleted = frozenset(before.frame.index.astype(str)) - frozenset(after.frame.index.astype(str))
    common = before.frame.index.intersection(after.frame.index)
    old = before.frame.loc[common, before.target].astype(str)
    new = after.frame.loc[common, after.target].astype(str)
    changed = (old != new).to_numpy()
    return Changes(deleted, dict(zip(common[changed].astype(str), new[changed])))


def requested_changes(before: Table, delete_records, fix_labels: dict) -> Changes:
    """The changes of a request as `correct_table` makes them, read off the request (O(|Z|)):
    a label fix of a deleted record, or to the label a record already has, changes nothing."""
    deleted = frozenset(str(r) for r in delete_records)
    fixes = {str(k): str(v) for k, v in fix_labels.items() if str(k) not in deleted}
    current = before.frame.loc[list(fixes), before.target].astype(str) if fixes else {}
    return Changes(deleted, {k: v for k, v in fixes.items() if current[k] != v})


def affected_rows(data: TrainingData, is_deleted: np.ndarray, relabelled: set[str],
                  revoked_columns: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Row positions of Z in `data` (`is_deleted`: (n,) bool): (deleted rows, replaced rows)."""
    is_replaced = _holds(data.ids, relabelled)
    if revoked_columns:
        is_replaced |= (data.X[:, revoked_columns] != 0).any(dim=1).numpy()
    is_replaced &= ~is_deleted
    return np.flatnonzero(is_deleted), np.flatnonzero(is_replaced)


def build_problem(bundle: ModelBundle, before: Table, after: Table, b: torch.Tensor | None,
                  cache: dict | None = None, encoded: Encoded | None = None,
                  changes: Changes | None = None) -> tuple[Problem, ModelBundle, Encoded]:
    """The Problem turning `before` into `after` for `bundle`, the bundle with the new feature map
    (still holding the starting θ: `unlearned_bundle` puts the update's θ in), and D' encoded with it.

    The feature map's statistics are refitted on D' first (`refitted_to`): the Problem is posed in
    the map of D', θ* re-expressed in it, so the new version keeps nothing of the erased rows
    in its statistics either, and the update's Newton step removes what the re-expression leaves.

    `encoded`: `before` encoded with `bundle` (the version's cache; None: encoded now) — Z, Z̃
    and D' are then taken from it, so the request costs O(|Z|·p) of pandas encoding: a replaced
    row is the cached row with the revoked columns zeroed and its new label, exactly what encoding
    the corrected row gives. `changes`: the request's changes (None: found by comparing the tables)."""
    encoded = encoded if encoded is not None else encode_version(before, bundle)
    changes = changes if changes is not None else changes_between(before, after)
    newly_revoked = [f for f in after.revoked if f not in bundle.encoder.revoked]
    deleted = Deleted.of(encoded, changes)
    bundle, encoded, cache = refitted_to(bundle, encoded, deleted.train, newly_revoked, b, cache)
    if cache and not _newton_ready(cache, bundle.theta):  # a version made by a request (`version_cache`), map kept
        cache = {**cache, **newton_cache(bundle, encoded.train, b, kept=cache)}
    encoder_after = bundle.encoder.with_revoked(newly_revoked) if newly_revoked else bundle.encoder
    revoked_columns = sorted(j for f in newly_revoked for j in bundle.encoder.derived_indices(f))
    data = encoded.train
    z_deleted, z_replaced = affected_rows(data, deleted.train, set(changes.relabelled), revoked_columns)
    X_tilde, y_tilde = corrected_rows(data, z_replaced, revoked_columns, new_labels(encoder_after, changes))
    encoded_after = corrected_encoding(encoded, deleted, bundle.encoder, encoder_after, changes, revoked_columns,
                                       after.version)
    zeroed = zero_in_new_data(encoder_after, encoded_after)
    encoded_after = held_out_as_served(encoded_after, zeroed)
    problem = make_problem(
        bundle.theta, logreg.Objective(l2=bundle.l2, b=b), data.X, data.y, len(bundle.labels),
        np.concatenate([z_deleted, z_replaced]), X_tilde, y_tilde,
        revoked=zeroed, certification=bundle.certification, cache=cache)
    # values that left the data with the removed records leave the feature map too (D' encodes the same)
    encoder_after = encoder_after.forget_absent(encoded_after.category_counts.numpy())
    return problem, bundle.with_theta(bundle.theta, encoder=encoder_after), encoded_after


def refitted_to(bundle: ModelBundle, encoded: Encoded, deleted: np.ndarray, revoking: list[str],
                b: torch.Tensor | None, cache: dict | None) -> tuple[ModelBundle, Encoded, dict | None]:
    """`bundle`, `encoded` (D) and `cache` moved to the feature map whose statistics are D''s
    training rows' (Encoder.refitted; `deleted`: (n,) bool, the training rows D' has not;
    `revoking`: features D' revokes): θ* re-expressed in it
    (Encoder.reexpressed), every row of D encoded with it from its values, and the version's
    cache — H and ∇L_b at θ* under the old map — computed again at the re-expressed θ
    (`newton_cache`) when there was one. Unchanged when D' has D's statistics (a label
    fix, a held-out row deleted, a map already refitted)."""
    encoder = bundle.encoder
    raw = encoder.raw_from(encoded.train.X.numpy(), encoded.train.numbers.numpy())
    refit, train_X = encoder.refitted(raw, ~deleted, revoking)
    if refit.same_statistics(encoder):
        return bundle, encoded, cache
    moved = bundle.with_theta(encoder.reexpressed(bundle.theta, refit), encoder=refit)
    before_X = encoded.train.X
    test_X = refit.transform_raw(encoder.raw_from(encoded.test.X.numpy(), encoded.test.numbers.numpy()))
    encoded = replace(encoded, train=replace(encoded.train, X=torch.as_tensor(train_X, dtype=logreg.DTYPE)),
                      test=replace(encoded.test, X=torch.as_tensor(test_X, dtype=logreg.DTYPE)))
    if cache:
        change = MapChange.between(before_X, encoded.train.X, encoded.train.numbers.numpy(), encoder, refit)
        # what the step needs; the certified bound takes its exact pass over D' (5 ms on Adult)
        # rather than XᵀX computed again (50 ms)
        moved_norm = ({"X_norm": spectral_norm_after(cache["X_norm"], encoded.train.X, change)}
                      if cache.get("X_norm") is not None else {})
        kept = {**moved_hessian(cache, change, bundle.l2), **moved_gradient(cache, change, encoded.train.y, bundle, moved, b)}
        cache = {**newton_cache(moved, encoded.train, b, kept=kept), **moved_norm}
    return moved, encoded, cache


@dataclass(frozen=True)
class MapChange:
    """How D's rows encoded under one feature map read under another (same columns, other
    statistics): X′ = X·Mᵀ + R, M = diag(a, s/s′) + c in the bias column (Encoder.change_to), and R
    non-zero only on the rows whose numeric values either map clips or imputes (`off_rows`, found
    from the values as given; one-hot values are never clipped or missing, so R is rounding
    elsewhere, far inside the allowances of what reads it)."""

    M: torch.Tensor  # (d, d)
    X: torch.Tensor  # D's rows under the first map
    X_moved: torch.Tensor  # the same rows under the second
    off_rows: torch.Tensor  # (r,) long: the rows R holds
    missed: float  # ‖R‖_F
    encoder: object  # the two maps (Encoder)
    target: object

    @classmethod
    def between(cls, X: torch.Tensor, X_moved: torch.Tensor, numbers: np.ndarray, encoder, target) -> "MapChange":
        """`numbers`: the rows' numeric values as given (TrainingData.numbers)."""
        a, c, ratio = encoder.change_to(target)
        d = X.shape[1]
        diagonal = torch.as_tensor(np.append(a, ratio), dtype=X.dtype)
        last = torch.as_tensor(np.append(c, 0.0), dtype=X.dtype)
        M = torch.diag(diagonal)
        M[:, d - 1] += last
        off = torch.as_tensor(np.flatnonzero(_clipped_or_missing(numbers, encoder, target)), dtype=torch.long)
        cols = torch.as_tensor(encoder.numeric_columns(), dtype=torch.long)
        X_off = X[off]
        missed = X_moved[off][:, cols] - (X_off[:, cols] * diagonal[cols] + X_off[:, -1:] * last[cols])
        return cls(M, X, X_moved, off, float(torch.linalg.matrix_norm(missed)), encoder, target)


def _clipped_or_missing(numbers: np.ndarray, *encoders) -> np.ndarray:
    """(n,) bool: the rows holding a numeric value that any of `encoders` (same columns) clips or
    imputes — an O(n·k) pass over the k numeric columns, not over X. Revoked features are 0 under
    every map, and skipped."""
    first = encoders[0]
    columns = first.numeric_columns()
    revoked = {j for f in first.revoked for j in first.derived_indices(f)}
    live = [i for i, j in enumerate(columns) if j not in revoked]
    off = np.zeros(len(numbers), dtype=bool)
    if not live:
        return off
    values = numbers[:, live]
    for encoder in encoders:
        kept = [columns[i] for i in live]
        z = (values - np.asarray(encoder.mean)[kept]) / np.asarray(encoder.std)[kept]
        off |= ~(np.abs(z) <= CLIP).all(axis=1)  # NaN (missing) compares False
    return off


def spectral_norm_after(norm: float, X_moved: torch.Tensor, change: MapChange) -> float:
    """An upper bound on ‖X′‖₂ from ‖X‖₂ (the same rows before the map change) in O(n·p):
    ‖X′‖₂ ≤ min(‖M‖₂‖X‖₂ + ‖R‖_F, ‖X′‖_F) — instead of an SVD of X′ (45 ms on Adult, 50× the
    certified step it serves). The certificate's rounding allowance and `finetune`'s step only
    need a bound. R's rounding outside the numeric columns (~1e-15·‖X′‖_F) is far inside the 1e-12
    allowance below."""
    bound = float(torch.linalg.matrix_norm(change.M, ord=2)) * norm + change.missed
    # ‖M‖₂ grows as a column's deviation shrinks (an outlier deleted: 24,010 against a true 4.5 in
    # review), and a loose bound stalls `finetune`'s step: ‖X′‖_F bounds it too, within √p
    frobenius = float(torch.linalg.matrix_norm(X_moved))
    return min(bound, frobenius) * (1 + 1e-12)  # float64 rounding of the terms, far below it


def moved_hessian(cache: dict, change: MapChange, l2: float) -> dict:
    """The cache's H(θ_H; D) and θ_H under the new map (`change`), in O(p³ + r·p²) instead of
    O(n·p²): on the rows the map change keeps linear the logits are the same, so their curvature is
    too and their part of the data Hessian moves as M·H·Mᵀ; the r rows off the map (R) are taken out
    at θ_H under the old map and put back under the new one. {} when the cache holds no H with its
    θ_H, or the model is multinomial (`newton_cache` then computes it)."""
    H, at = cache.get("H"), cache.get("hessian_at")
    if H is None or at is None or not logreg.is_binary(at):
        return {}
    eye = torch.eye(len(H), dtype=H.dtype)
    off = change.off_rows
    data = H - l2 * eye - logreg.data_hessian(at, change.X[off])
    at_moved = change.encoder.reexpressed(at, change.target)  # the same logits on the rows M keeps linear
    moved = change.M @ data @ change.M.T + logreg.data_hessian(at_moved, change.X_moved[off])
    return {"H": (moved + moved.T) / 2 + l2 * eye, "hessian_at": at_moved}


def moved_gradient(cache: dict, change: MapChange, y: torch.Tensor, before: ModelBundle, after: ModelBundle,
                   b: torch.Tensor | None) -> dict:
    """∇L_b(θ; D) under the new map at θ re-expressed (`after`'s θ), from the cache's under the old
    map at `before`'s θ, in O(p² + r·p) instead of a pass over D: the rows the map keeps linear keep
    their logits, so their sum Σ r_i x_i moves as M·(…); the r rows off the map are taken out and
    put back (`y`: D's labels). {} when the cache's gradient is not at `before`'s θ."""
    g, at = cache.get("gradient"), cache.get("gradient_at")
    if g is None or at is None or at.shape != before.theta.shape or not torch.equal(at, before.theta):
        return {}
    off = change.off_rows
    shift = b if b is not None else 0.0
    data = g - before.l2 * at - shift - logreg.data_gradient(at, change.X[off], y[off])
    theta = after.theta
    moved = change.M @ data + logreg.data_gradient(theta, change.X_moved[off], y[off])
    return {"gradient": moved + after.l2 * theta + shift, "gradient_at": theta.clone()}


def new_labels(encoder, changes: Changes) -> dict[str, int]:
    """Record id → index of its new label."""
    ids = list(changes.relabelled)
    return dict(zip(ids, (int(v) for v in encoder.encode_labels([changes.relabelled[i] for i in ids]))))


def corrected_rows(data: TrainingData, rows: np.ndarray, revoked_columns: list[int],
                   labels: dict[str, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows `rows` of `data` as D' has them: revoked columns 0, fixed labels."""
    index = torch.as_tensor(rows, dtype=torch.long)
    return _corrected(data.X[index], data.y[index], data.ids[rows] if labels else [],
                      revoked_columns, labels)


def _corrected(X: torch.Tensor, y: torch.Tensor, ids, revoked_columns: list[int],
               labels: dict[str, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """X, y (copies of rows with record ids `ids`) corrected in place."""
    if revoked_columns:
        X[:, revoked_columns] = 0.0
    for k, record in enumerate(ids):
        label = labels.get(record)
        if label is not None:
            y[k] = label
    return X, y


def corrected_encoding(encoded: Encoded, deleted: Deleted, encoder_before, encoder_after, changes: Changes,
                       revoked_columns: list[int], data_version: str | None) -> Encoded:
    """D' encoded with the new feature map, from D's encoding: the deleted rows dropped, the
    revoked columns zeroed, the fixed labels set (rows keep their order, as encoding D' gives
    them), and the category counts less the deleted training rows' categories."""
    labels = new_labels(encoder_after, changes)
    counts = encoded.category_counts.clone()
    splits = []
    for split, gone in ((encoded.train, deleted.train), (encoded.test, deleted.test)):
        if gone.any() and split is encoded.train:
            held = encoder_before.one_hot_indicators(split.X[torch.as_tensor(gone)].numpy())
            counts -= torch.as_tensor(held.sum(axis=0), dtype=torch.long)
        keep = torch.as_tensor(~gone)
        ids = split.ids[~gone]
        X, y = _corrected(split.X[keep], split.y[keep], ids if labels else [], revoked_columns, labels)
        splits.append(TrainingData(X, y, ids, _numbers_without(split.numbers[keep], encoder_before,
                                                                encoder_after)))
    counts[revoked_columns] = 0
    return Encoded(splits[0], splits[1], counts, data_version)


def _numbers_without(numbers: torch.Tensor, encoder_before, encoder_after) -> torch.Tensor:
    """`numbers` with the columns of features revoked by `encoder_after` NaN: a revoked feature's
    values are not kept with a version that no longer reads them."""
    numeric = encoder_before.numeric_columns()
    gone = [numeric.index(j) for f in encoder_after.revoked if f not in encoder_before.revoked
            for j in encoder_before.derived_indices(f) if j in numeric]
    if gone:
        numbers = numbers.clone()
        numbers[:, gone] = float("nan")
    return numbers


def unlearned_bundle(bundle_after: ModelBundle, theta: torch.Tensor) -> ModelBundle:
    """The new model version: the feature map of D' with the unlearned θ. Registering
    `build_problem`'s bundle as it is would keep θ* — the model still trained on the erased
    rows — and the next request would start from a θ that is not the optimum of its data."""
    if theta.shape != bundle_after.theta.shape:
        raise ValueError(f"θ of shape {tuple(theta.shape)} for a model of shape {tuple(bundle_after.theta.shape)}")
    return bundle_after.with_theta(theta)


def zero_in_new_data(encoder, encoded_after: Encoded) -> list[int]:
    """Every column zero in D' (revoked features, earlier revocations included, and categories no
    training row of D' holds: their mean in the refitted map is 0): their coordinates are fixed at
    their optimum (influence.revoked_optimum), so that no method leaves there a weight learned from
    the erased rows alone (its sign was their label)."""
    revoked = {j for f in encoder.revoked for j in encoder.derived_indices(f)}
    absent = {j for f in encoder.categorical if f not in encoder.revoked for j in encoder.derived_indices(f)
              if int(encoded_after.category_counts[j]) == 0}
    return sorted(revoked | absent)


def held_out_as_served(encoded: Encoded, zeroed: list[int]) -> Encoded:
    """`encoded` with the held-out rows 0 in the columns D' holds at 0 (`zero_in_new_data`): a
    category whose last training holder left is forgotten from the map (its key gone), so serving
    encodes a held-out row holding it with 0 there, while the refitted map's mean of 0 gave it
    1/scale (red team 5: a certified model's logit for that row 160.6 kept against 127.4 served).
    The kept encoding is what evaluate, the checks and the next request read."""
    if not zeroed or not len(encoded.test.X) or not bool(encoded.test.X[:, zeroed].any()):
        return encoded
    X = encoded.test.X.clone()
    X[:, zeroed] = 0.0
    return replace(encoded, test=replace(encoded.test, X=X))


def model_cache(bundle: ModelBundle, table: Table, b: torch.Tensor | None, encoded: Encoded | None = None) -> dict:
    """H(θ; D), its Cholesky factor, ‖X‖₂, ∇L_b(θ; D) and XᵀX for a freshly produced model
    version, computed once so that the next request on this version only pays for its own rows
    (XᵀX: the certified bound without a pass over D'). `b` is
    the version's perturbation (None: not certified); the gradient lets the next Newton step
    start from θ's own residual (influence.newton_gradient). Under "encoded": D encoded with the
    version's feature map (`encoded`, else encoded now, keyed by `table.version`)."""
    encoded = encoded if encoded is not None else encode_version(table, bundle, table.version)
    X = encoded.train.X
    return {**newton_cache(bundle, encoded.train, b), "X_norm": float(torch.linalg.matrix_norm(X, ord=2)),
            **certified.data_cache(X), "encoded": encoded.to_state()}


def version_cache(encoded: Encoded, problem: Problem, result=None) -> dict:
    """What a model version made by a request keeps for the next one: D' encoded with its feature
    map, a bound on ‖X‖₂ (the request's, which holds for the rows of D' under the new map: a
    subset of the rows it bounded, with columns zeroed at most; else ‖X‖_F, O(n·p)), the
    request's Newton matrix on D' (`kept_hessian`) and ∇L_b(θ; D') at the version's θ when the
    update's result (`result`, methods.Result) holds it from its residual's pass: the next request
    then starts without a pass over D'. Not XᵀX, as `model_cache` computes it at training: a
    certified request takes the exact pass instead of the O(p²) bound it would allow."""
    norm = problem.cache.get("X_norm")
    if norm is None:
        norm = float(torch.linalg.matrix_norm(encoded.train.X)) * (1 + 1e-12)
    gradient = getattr(result, "gradient", None)
    at = {"gradient": gradient, "gradient_at": result.theta.clone()} if gradient is not None else {}
    return {"X_norm": float(norm), **kept_hessian(problem), **at, "encoded": encoded.to_state()}


def kept_hessian(p: Problem) -> dict:
    """H(θ_H; D') and θ_H from the request's H(θ_H; D) (θ_H: where it was computed, θ* or an earlier
    version's θ, `newton_cache`), in O((|Z| + |Z̃|)·p²): Z's rows taken out, Z̃'s put in, at θ_H. The
    next request reuses it while its θ stays within HESSIAN_DRIFT of θ_H, instead of computing H
    over D again (O(n·p²)). {} when the request had none, is multinomial, or touched most rows (a
    revocation: the next request computes H)."""
    H, at = p.cache.get("H"), p.cache.get("hessian_at")
    if H is None or at is None or not logreg.is_binary(at) or p.touched * 4 > p.n:
        return {}
    return {"H": H + influence.rows_hessian_change(p, at), "hessian_at": at}


# A kept H(θ_H; D) serves as the Newton matrix at a θ within this distance of θ_H (binary models):
# rows are scaled to ‖x‖ ≤ 1, so no logit moves more than ‖θ − θ_H‖, and a curvature weight σ(1−σ)
# moves by a factor within e^{±‖θ − θ_H‖} (|d ln σ(1−σ)/dz| = |1 − 2σ| ≤ 1): H(θ_H) is within 3 % of H(θ)
# either way, and a Newton step on it leaves at most about 3 % of the gradient it removes (the evidence
# allows 10 %; on Adult's deletions it left 1e-5 to 8e-4, the matrix within 1.2e-4 of H(θ) at a drift of 0.009).
HESSIAN_DRIFT = 0.03


def newton_cache(bundle: ModelBundle, data: TrainingData, b: torch.Tensor | None, kept: dict | None = None) -> dict:
    """What a Newton step from θ on `data` reads: H, its Cholesky factor and spectrum summaries,
    ∇L_b(θ; D) and the θ it was taken at. H is `kept`'s H(θ_H; D) when θ is within HESSIAN_DRIFT of
    its θ_H, else H(θ; D) computed now (O(n·p²): 0.03–0.04 s on Adult); ∇L_b is `kept`'s when taken
    at θ itself, else computed now (a pass, O(n·p)). `hessian_at`: θ_H. `lambda_max` bounds H(θ)'s
    largest eigenvalue either way (the first-order step that cannot overshoot)."""
    obj = logreg.Objective(l2=bundle.l2, b=b)
    theta, kept = bundle.theta, kept or {}
    gradient = ({"gradient": kept["gradient"], "gradient_at": theta.clone()} if _gradient_at(kept, theta)
                else {"gradient": logreg.gradient(theta, data.X, data.y, obj), "gradient_at": theta.clone()})
    drift = hessian_drift(kept, theta)
    if drift is None:
        H = logreg.hessian(theta, data.X, obj)
        return {"H": H, "L": torch.linalg.cholesky(H), **gradient, "hessian_at": theta.clone(),
                **influence.spectral_cache(H)}
    H = kept["H"]
    spectrum = influence.spectral_cache(H)
    return {"H": H, "L": torch.linalg.cholesky(H), **gradient, "hessian_at": kept["hessian_at"],
            **spectrum, "lambda_max": spectrum["lambda_max"] * math.exp(drift)}


def hessian_drift(cache: dict, theta: torch.Tensor) -> float | None:
    """‖θ − θ_H‖ when the cache's H(θ_H) may serve as θ's Newton matrix (HESSIAN_DRIFT), else None."""
    H, at = cache.get("H"), cache.get("hessian_at")
    if H is None or at is None or not logreg.is_binary(theta) or at.shape != theta.shape:
        return None
    drift = float((theta - at).norm())
    return drift if drift <= HESSIAN_DRIFT else None


def _gradient_at(cache: dict, theta: torch.Tensor) -> bool:
    at = cache.get("gradient_at")
    return cache.get("gradient") is not None and at is not None and at.shape == theta.shape and torch.equal(at, theta)


def _newton_ready(cache: dict, theta: torch.Tensor) -> bool:
    """Whether the cache holds what a Newton step from θ reads: H, its factor and ∇L_b at θ itself
    (a trained version's cache; a request-made one keeps no factor)."""
    return "H" in cache and "L" in cache and _gradient_at(cache, theta)
