"""A table model version keeps no statistic of the records erased from it (red team, session 21,
SEVERE 1): the feature map saved with every version (`bundle.json`) holds each column's training
mean and deviation and the largest row norm. Kept from the data before an erasure, n·mean − Σ(D')
gave a deleted person's age, hours, sex and city back exactly, even from a version tagged `exact`.

The map is refitted on D' with every request (unlearning.tabular.erasure.refitted_to): the new
version's statistics are those `train` would fit on the corrected data, whatever the method."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from flows.cli import main
from tasks import data as data_store
from tasks import tracking
from tests.flows.test_pipeline import add_and_train, request_file, run_json
from unlearning import registry
from unlearning.tabular import erasure
from unlearning.tabular.data import correct_table
from unlearning.tabular.encoding import Encoder
from unlearning.tabular.training import TrainConfig, train_bundle
from tests.flows.conftest import synthetic_people


def fitted_statistics(encoder: Encoder) -> dict:
    """Per surviving column (named by feature and category hash, so maps with forgotten columns
    compare), its mean and deviation, and the scale."""
    stats = {}
    for f in encoder.features:
        if f in encoder.revoked:
            continue
        keys = encoder.categories[f] if f in encoder.categorical else [None]
        for j, key in zip(encoder.derived_indices(f), keys):
            if f in encoder.categorical and key is None:
                continue
            stats[(f, key)] = (encoder.mean[j], encoder.std[j])
    return {"columns": stats, "scale": encoder.scale}


def assert_fitted_on(encoder: Encoder, table) -> None:
    """`encoder`'s statistics are those a fit on `table`'s training rows gives (same category keys)."""
    fresh = Encoder.fit(table, salt=bytes.fromhex(encoder.salt))
    got, want = fitted_statistics(encoder), fitted_statistics(fresh)
    assert got["columns"].keys() == want["columns"].keys()  # no category of an erased training row
    for key, (mean, std) in want["columns"].items():
        assert got["columns"][key] == pytest.approx((mean, std), rel=1e-12, abs=1e-15), key
    assert got["scale"] == pytest.approx(want["scale"], rel=1e-12)


@pytest.mark.parametrize("train_args,forget_args", [((), ()), ((), ("--method", "retrain")),
                                                     (("--certified",), ())])
def test_the_new_version_keeps_the_statistics_of_the_corrected_data_only(workspace, people_csv, capsys,
                                                                         train_args, forget_args):
    add_and_train(people_csv, capsys, *train_args)
    before = data_store.load_dataset(workspace, "people")
    victim = next(i for i, train in zip(before.frame.index, before.train_mask()) if train)
    request = request_file(workspace, id="SEV-1", delete_records=[str(victim)])
    code, out = run_json(capsys, ["forget", str(request), *forget_args])
    assert code == 0, out
    after = data_store.load_dataset(workspace, "people")
    bundle = tracking.load_version_bundle("people", out["model"]["version"])
    assert_fitted_on(bundle.encoder, after)
    # the attack: with the statistics of D, n·mean − Σ(D') was the deleted row's age and hours
    numeric = bundle.encoder.numeric_columns()
    kept = after.frame[after.train_mask()]
    sums = kept[["age", "hours"]].astype(float).sum().to_numpy()
    recovered = np.asarray(bundle.encoder.mean)[numeric][:2] * (len(kept) + 1) - sums
    assert not np.allclose(recovered, before.frame.loc[victim, ["age", "hours"]].astype(float), atol=1e-6)


def people_table(frame: pd.DataFrame):
    from unlearning.tabular.data import Table

    frame = frame.set_index("person")
    frame.index = frame.index.astype(str)
    features = ("age", "hours", "sex", "city")
    return Table(name="people", frame=frame.astype({"age": float, "hours": float}), target="label",
                 features=features, categorical=("sex", "city"), labels=tuple(sorted(frame["label"].unique())))


@pytest.mark.parametrize("method", ["second_order", "certified", "retrain"])
def test_the_map_after_an_erasure_depends_on_the_data_left_alone(method):
    """Two tables that differ only in the record erased give the same feature map after the erasure
    (an exact retraining: the same θ too), for deletions and a revocation alike; without the refit
    the two maps differ by that record's values."""
    frame = synthetic_people(300, seed=3)
    one = people_table(frame)
    victim = next(i for i, train in zip(one.frame.index, one.train_mask()) if train)
    other_frame = frame.copy()
    row = other_frame["person"] == victim
    other_frame.loc[row, ["age", "hours", "city"]] = [79, 99.5, "Boise" if frame.loc[row, "city"].item() != "Boise"
                                                       else "Cork"]
    other = people_table(other_frame)
    salt = bytes(16)
    certified = method == "certified"
    results = []
    for table in (one, other):
        bundle, b, _ = train_bundle(table, TrainConfig(certified=certified, tol=1e-10))
        bundle = bundle.with_theta(bundle.theta, encoder=Encoder.fit(table, salt=salt))  # one key for both
        bundle, b, _ = retrain_under(bundle, table, b, certified)
        for revoke in ([], ["city"]):
            after = correct_table(table, [victim], revoke, {})
            cache = erasure.model_cache(bundle, table, b)
            problem, bundle_after, _ = erasure.build_problem(bundle, table, after, b, dict(cache))
            result = registry.run("tabular", method, problem, None)
            results.append((revoke, erasure.unlearned_bundle(bundle_after, result.theta), result))
    before_maps = [Encoder.fit(t, salt=salt) for t in (one, other)]
    assert before_maps[0].mean != before_maps[1].mean  # the record is in D's statistics
    for (revoke, first, r1), (_, second, r2) in zip(results[:2], results[2:]):
        assert first.encoder == second.encoder, revoke
        if method == "retrain":
            assert torch.allclose(first.theta, second.theta, atol=1e-8), revoke


def retrain_under(bundle, table, b, certified: bool):
    """θ fitted under `bundle`'s map (the salt pinned above changes no statistic)."""
    from unlearning.tabular import logreg

    data = erasure.training_data(table, bundle)
    fit = logreg.fit(data.X, data.y, len(bundle.labels), logreg.Objective(l2=bundle.l2, b=b), tol=1e-10)
    return bundle.with_theta(fit.theta), b, fit


def test_a_category_only_erased_training_rows_held_leaves_the_map_though_a_held_out_row_holds_it(
        workspace, capsys):
    """Review of the refit: the categories a map knows are its training rows', and the one that a
    held-out record alone still held stayed in `bundle.json` with a training mean of 0 — with the
    salt beside it, a dictionary named the value every training holder of which was erased."""
    from unlearning.tabular.data import _in_train
    from unlearning.tabular.encoding import category_key

    frame = synthetic_people()
    victim = next(p for p in frame["person"] if _in_train(p))
    held_out = next(p for p in frame["person"] if not _in_train(p))
    frame.loc[frame["person"].isin([victim, held_out]), "city"] = "Zurich"
    path = workspace / "people.csv"
    frame.to_csv(path, index=False)
    add_and_train(path, capsys)
    code, out = run_json(capsys, ["forget", str(request_file(workspace, id="ZUR-1", delete_records=[victim])),
                                  "--method", "retrain"])
    assert code == 0, out
    encoder = tracking.load_version_bundle("people", out["model"]["version"]).encoder
    assert category_key(bytes.fromhex(encoder.salt), "Zurich") not in encoder.categories["city"]
    assert_fitted_on(encoder, data_store.load_dataset(workspace, "people"))


@pytest.mark.parametrize("method", ["first_order", "finetune", "second_order", "certified"])
def test_no_method_leaves_a_weight_on_a_column_only_erased_rows_held(method):
    """Review of the refit: first_order and finetune left the column of a category only the erased
    record held a weight whose sign was that record's label. It is fixed at its optimum now (the
    column is zero in D'), as a retraining sets it: −b_j/Λ, or 0 without noise."""
    from unlearning.tabular.data import _in_train

    frame = synthetic_people(300, seed=5)
    victim = next(p for p in frame["person"] if _in_train(p))
    weights = []
    for label in ("yes", "no"):
        frame.loc[frame["person"] == victim, ["city", "label"]] = ["Zurich", label]
        table = people_table(frame)
        bundle, b, _ = train_bundle(table, TrainConfig(certified=method == "certified", tol=1e-10))
        after = correct_table(table, [victim], [], {})
        problem, bundle_after, _ = erasure.build_problem(bundle, table, after, b, erasure.model_cache(bundle, table, b))
        theta = registry.run("tabular", method, problem, None).theta
        (j,) = [j for j, key in zip(bundle.encoder.derived_indices("city"), bundle.encoder.categories["city"])
                if key == bundle.encoder.categories["city"][j - bundle.encoder.derived_indices("city")[0]]
                and bundle_after.encoder.categories["city"][j - bundle.encoder.derived_indices("city")[0]] is None]
        optimum = 0.0 if b is None else float(-b[j] / bundle.l2)
        assert float(theta[j]) == pytest.approx(optimum, abs=1e-12), label
        weights.append(float(theta[j]))
    # each certified training draws its own b (noise.draw_noise): its weight is −b_j/Λ above, no label in it
    assert weights[0] == weights[1] or method == "certified"


def test_the_audit_finds_a_map_fitted_before_a_deletion():
    """Review of the refit: a version exactly retrained by the code before the refit kept the map of
    the data before the deletion, and `audit --rebase` answered "retrained on the current data:
    nothing to retrain". Such a map is not exact: the audit retrains, and its check fails (the
    retrained model, in the map of the current data, is then promoted)."""
    from types import SimpleNamespace

    from tasks.audit import stale_feature_map, table_erasure
    from tasks.audit_checks import map_check

    frame = synthetic_people(300, seed=7)
    table = people_table(frame)
    victim = next(i for i, train in zip(table.frame.index, table.train_mask()) if train)
    bundle, _, _ = train_bundle(table, TrainConfig(tol=1e-8))
    after = correct_table(table, [victim], [], {})
    stale = SimpleNamespace(bundle=bundle, dataset=after, b=None, table=None)
    assert stale_feature_map(stale)
    assert not stale_feature_map(SimpleNamespace(bundle=bundle, dataset=table, b=None, table=None))
    refit = table_erasure(stale)[1].encoder  # the Problem the test built, kept for the audit's job and checks
    assert refit.same_statistics(erasure.build_problem(bundle, after, after, None)[1].encoder)
    failed, passed = map_check(bundle.encoder, refit), map_check(refit, refit)
    assert not failed["passed"] and failed["value"] > 0
    assert passed["passed"] and passed["value"] == 0.0
