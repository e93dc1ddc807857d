"""From a table, a model and an erasure request to the tensors of an unlearning Problem.

Z = training rows that are deleted, relabelled, or informative on a revoked feature (science.md §1:
after standardisation every row is informative, so revoking a feature touches all of them);
Z̃ = the rows that stay, encoded from the corrected table with the revoked features neutralised.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from unlearning.tabular import influence, logreg
from unlearning.tabular.bundle import ModelBundle
from unlearning.tabular.data import Table
from unlearning.tabular.problem import Certification, Problem, make_problem


@dataclass(frozen=True)
class TrainingData:
    X: torch.Tensor  # (n, d)
    y: torch.Tensor  # (n,)
    ids: list[str]  # record id of each row


def training_data(table: Table, bundle: ModelBundle) -> TrainingData:
    """The model's training rows of `table`, encoded with the model's feature map."""
    frame = table.frame[table.train_mask()]
    X = torch.as_tensor(bundle.encoder.transform(frame), dtype=logreg.DTYPE)
    y = torch.as_tensor(bundle.encoder.encode_labels(frame[table.target]), dtype=torch.long)
    return TrainingData(X=X, y=y, ids=[str(i) for i in frame.index])


def held_out_data(table: Table, bundle: ModelBundle) -> TrainingData:
    frame = table.frame[~table.train_mask()]
    X = torch.as_tensor(bundle.encoder.transform(frame), dtype=logreg.DTYPE)
    y = torch.as_tensor(bundle.encoder.encode_labels(frame[table.target]), dtype=torch.long)
    return TrainingData(X=X, y=y, ids=[str(i) for i in frame.index])


def affected_rows(data: TrainingData, bundle: ModelBundle, deleted: set[str], relabelled: set[str],
                  revoked_columns: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Row positions of Z in `data`: (deleted rows, replaced rows)."""
    ids = np.asarray(data.ids)
    is_deleted = np.isin(ids, list(deleted))
    is_replaced = np.isin(ids, list(relabelled))
    if revoked_columns:
        is_replaced |= (data.X[:, revoked_columns] != 0).any(dim=1).numpy()
    is_replaced &= ~is_deleted
    return np.flatnonzero(is_deleted), np.flatnonzero(is_replaced)


def build_problem(bundle: ModelBundle, before: Table, after: Table, b: torch.Tensor | None,
                  cache: dict | None = None) -> tuple[Problem, ModelBundle, TrainingData]:
    """The Problem turning `before` into `after` for `bundle`, the bundle with the new feature map
    (still holding θ*: `unlearned_bundle` puts the update's θ in), and the training data of
    `before` (row order of Problem.X)."""
    data = training_data(before, bundle)
    newly_revoked = [f for f in after.revoked if f not in bundle.encoder.revoked]
    encoder_after = bundle.encoder.with_revoked(newly_revoked) if newly_revoked else bundle.encoder
    revoked_columns = sorted(j for f in newly_revoked for j in bundle.encoder.derived_indices(f))
    deleted = set(before.frame.index.astype(str)) - set(after.frame.index.astype(str))
    relabelled = _relabelled(before, after)
    z_deleted, z_replaced = affected_rows(data, bundle, deleted, relabelled, revoked_columns)
    replaced_ids = [data.ids[i] for i in z_replaced]
    frame_after = after.frame.loc[replaced_ids]
    X_tilde = encoder_after.transform(frame_after)
    y_tilde = encoder_after.encode_labels(frame_after[after.target])
    certification = bundle.certification
    problem = make_problem(
        bundle.theta, logreg.Objective(l2=bundle.l2, b=b), data.X, data.y, len(bundle.labels),
        np.concatenate([z_deleted, z_replaced]), X_tilde, y_tilde,
        revoked=_all_revoked_columns(encoder_after), certification=certification, cache=cache)
    # values that left the data with the removed records leave the feature map too (D' encodes the same)
    return problem, bundle.with_theta(bundle.theta, encoder=encoder_after.keep_categories_of(after.frame)), data


def unlearned_bundle(bundle_after: ModelBundle, theta: torch.Tensor) -> ModelBundle:
    """The new model version: the feature map of D' with the unlearned θ. Registering
    `build_problem`'s bundle as it is would keep θ* — the model still trained on the erased
    rows — and the next request would start from a θ that is not the optimum of its data."""
    if theta.shape != bundle_after.theta.shape:
        raise ValueError(f"θ of shape {tuple(theta.shape)} for a model of shape {tuple(bundle_after.theta.shape)}")
    return bundle_after.with_theta(theta)


def _relabelled(before: Table, after: Table) -> set[str]:
    common = before.frame.index.intersection(after.frame.index)
    old = before.frame.loc[common, before.target].astype(str)
    new = after.frame.loc[common, after.target].astype(str)
    return set(common[(old != new).to_numpy()].astype(str))


def _all_revoked_columns(encoder) -> list[int]:
    """Every column zero in D' (earlier revocations included): their coordinates are fixed."""
    return sorted(j for f in encoder.revoked for j in encoder.derived_indices(f))


def model_cache(bundle: ModelBundle, table: Table, b: torch.Tensor | None) -> dict:
    """H(θ; D), its Cholesky factor, ‖X‖₂ and ∇L_b(θ; D) for a freshly produced model version,
    computed once so that the next request on this version only pays for its own rows. `b` is
    the version's perturbation (None: not certified); the gradient lets the next Newton step
    start from θ's own residual (influence.newton_gradient)."""
    data = training_data(table, bundle)
    obj = logreg.Objective(l2=bundle.l2, b=b)
    H = logreg.hessian(bundle.theta, data.X, obj)
    return {"H": H, "L": torch.linalg.cholesky(H), "X_norm": float(torch.linalg.matrix_norm(data.X, ord=2)),
            "gradient": logreg.gradient(bundle.theta, data.X, data.y, obj), "gradient_at": bundle.theta.clone(),
            **influence.spectral_cache(H)}
