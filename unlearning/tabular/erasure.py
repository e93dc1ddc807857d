"""From a table, a model and an erasure request to the tensors of an unlearning Problem.

Z = training rows that are deleted, relabelled, or informative on a revoked feature (science.md §1:
after standardisation every row is informative, so revoking a feature touches all of them);
Z̃ = the rows that stay, as the corrected table encodes them: revoked features neutralised, labels
fixed — taken from the model version's own encoding of its data (`Encoded`, kept with the version),
so that a request costs O(|Z|·p) of encoding, not a pandas pass over the table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

import numpy as np
import torch

from unlearning.tabular import certified, influence, logreg
from unlearning.tabular.bundle import ModelBundle
from unlearning.tabular.data import Table
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
    if cache and "H" not in cache:  # a version made by a request keeps no H (`version_cache`): the map is kept
        cache = {**cache, **newton_cache(bundle, encoded.train, b)}
    encoder_after = bundle.encoder.with_revoked(newly_revoked) if newly_revoked else bundle.encoder
    revoked_columns = sorted(j for f in newly_revoked for j in bundle.encoder.derived_indices(f))
    data = encoded.train
    z_deleted, z_replaced = affected_rows(data, deleted.train, set(changes.relabelled), revoked_columns)
    X_tilde, y_tilde = corrected_rows(data, z_replaced, revoked_columns, new_labels(encoder_after, changes))
    encoded_after = corrected_encoding(encoded, deleted, bundle.encoder, encoder_after, changes, revoked_columns,
                                       after.version)
    problem = make_problem(
        bundle.theta, logreg.Objective(l2=bundle.l2, b=b), data.X, data.y, len(bundle.labels),
        np.concatenate([z_deleted, z_replaced]), X_tilde, y_tilde,
        revoked=zero_in_new_data(encoder_after, encoded_after), certification=bundle.certification, cache=cache)
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
        # what the step needs; the certified bound takes its exact pass over D' (5 ms on Adult)
        # rather than XᵀX computed again (50 ms)
        moved_norm = ({"X_norm": spectral_norm_after(cache["X_norm"], before_X, encoded.train.X, encoder, refit)}
                      if cache.get("X_norm") is not None else {})
        cache = {**newton_cache(moved, encoded.train, b), **moved_norm}
    return moved, encoded, cache


def spectral_norm_after(norm: float, X: torch.Tensor, X_moved: torch.Tensor, encoder, target) -> float:
    """An upper bound on ‖X′‖₂ from ‖X‖₂ (the same rows under `encoder`, X′ under `target`) in O(n·p):
    X′ = X·Mᵀ + R with M the map change (Encoder.change_to) and R the rows it misses (clipped or
    missing values), so ‖X′‖₂ ≤ min(‖M‖₂‖X‖₂ + ‖R‖_F, ‖X′‖_F) — instead of an SVD of X′ (45 ms on Adult, 50× the
    certified step it serves). The certificate's rounding allowance and `finetune`'s step only
    need a bound."""
    a, c, ratio = encoder.change_to(target)
    d = X.shape[1]
    diagonal = torch.as_tensor(np.append(a, ratio), dtype=X.dtype)  # M = diag(a, s/s′) + c in the bias column
    last = torch.as_tensor(np.append(c, 0.0), dtype=X.dtype)
    M = torch.diag(diagonal)
    M[:, d - 1] += last
    # R is 0 but for rounding outside the numeric columns (one-hot values are never clipped or
    # missing), and that rounding (~1e-15·‖X′‖_F) is far inside the 1e-12 allowance below
    cols = torch.as_tensor(encoder.numeric_columns(), dtype=torch.long)
    predicted = X[:, cols] * diagonal[cols] + X[:, -1:] * last[cols]
    missed = float(torch.linalg.matrix_norm(X_moved[:, cols] - predicted))  # ‖R‖_F, no n×p×p product
    bound = float(torch.linalg.matrix_norm(M, ord=2)) * norm + missed
    # ‖M‖₂ grows as a column's deviation shrinks (an outlier deleted: 24,010 against a true 4.5 in
    # review), and a loose bound stalls `finetune`'s step: ‖X′‖_F bounds it too, within √p
    frobenius = float(torch.linalg.matrix_norm(X_moved))
    return min(bound, frobenius) * (1 + 1e-12)  # float64 rounding of the terms, far below it


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


def version_cache(encoded: Encoded, request_cache: dict) -> dict:
    """What a model version made by a request keeps for the next one: D' encoded with its feature
    map and a bound on ‖X‖₂ (the request's, which holds for the rows of D' under the new map: a
    subset of the rows it bounded, with columns zeroed at most; else ‖X‖_F, O(n·p)). Not H, ∇L_b
    or XᵀX, as `model_cache` computes them at training: the next request that deletes or revokes
    refits the map and computes them in its new map (`refitted_to`), so computing them here, before
    the promotion, would only delay the removal (0.13 s on Adult); one that keeps the map (a label
    fix, a held-out row) computes H and ∇L_b then (`build_problem`), and a certified one takes the
    exact pass instead of the O(p²) bound that XᵀX would allow."""
    norm = request_cache.get("X_norm")
    if norm is None:
        norm = float(torch.linalg.matrix_norm(encoded.train.X)) * (1 + 1e-12)
    return {"X_norm": float(norm), "encoded": encoded.to_state()}


def newton_cache(bundle: ModelBundle, data: TrainingData, b: torch.Tensor | None) -> dict:
    """What a Newton step from θ on `data` reads: H(θ; D), its Cholesky factor and spectrum
    summaries, ∇L_b(θ; D) and the θ it was taken at (O(n·p²): 0.04 s on Adult)."""
    obj = logreg.Objective(l2=bundle.l2, b=b)
    H = logreg.hessian(bundle.theta, data.X, obj)
    return {"H": H, "L": torch.linalg.cholesky(H), "gradient": logreg.gradient(bundle.theta, data.X, data.y, obj),
            "gradient_at": bundle.theta.clone(), **influence.spectral_cache(H)}
