"""The objective-perturbation noise b of a certified table model is what hides a deleted record
in the certified update (Guo et al.: θ⁻ is (ε, δ)-indistinguishable from retraining only over b's
randomness). Until 2026-12-07 b was drawn from `--seed` (0 by default, logged as a parameter of the
fit run) and a retraining past the budget drew it from the request's id: anyone reading MLflow and
the data left rebuilt b, trained each candidate of the deleted record with the data left, applied
the certified update and found the one that gives the published θ⁻ bit for bit (red team 5)."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import torch

from tasks import data as data_store
from tasks import state, tracking
from tests.flows.test_pipeline import add_and_train, request_file, run_json
from unlearning import registry
from unlearning.tabular import erasure
from unlearning.tabular.data import Table, _in_train
from unlearning.tabular.training import TrainConfig, train_bundle


def fit_params() -> dict:
    """The parameters MLflow records for the certified fit (the `fit` step's run)."""
    runs = tracking.client().search_runs([e.experiment_id for e in tracking.client().search_experiments()])
    return next(r.data.params for r in runs if r.data.params.get("certified") == "True" and "seed" in r.data.params)


def seeded_noise(shape, sigma: float, seed: int) -> torch.Tensor:
    """b as it was drawn before: N(0, σ²I) from a torch generator seeded with `seed`."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * sigma


def with_row(after: Table, position: int, record: str, values: dict) -> Table:
    """D rebuilt by an attacker: the data left with a candidate of the deleted record at its place."""
    row = pd.DataFrame({k: [v] for k, v in values.items()}, index=[record]).astype(after.frame.dtypes.to_dict())
    frame = pd.concat([after.frame.iloc[:position], row, after.frame.iloc[position:]])
    return Table(name=after.name, frame=frame, target=after.target, features=after.features,
                 categorical=after.categorical, labels=after.labels, revoked=after.revoked)


def certified_update_of(before: Table, after: Table, cfg: TrainConfig) -> torch.Tensor:
    """θ⁻ as the pipeline computes it: certified training on D, its version cache, the certified update."""
    bundle, b, _ = train_bundle(before, cfg)
    problem, _, _ = erasure.build_problem(bundle, before, after, b, dict(erasure.model_cache(bundle, before, b)))
    return registry.run("tabular", "certified", problem, None).theta


def test_the_published_model_and_the_data_left_do_not_give_a_deleted_record_back(workspace, people_csv, capsys):
    add_and_train(people_csv, capsys, "--certified")
    production = tracking.require_production("people", workspace)
    sigma, params = float(tracking.version_tags("people", production.version)["sigma"]), fit_params()
    noise = state.load_noise(workspace, production.run_id)
    assert not torch.equal(noise, seeded_noise(noise.shape, sigma, int(params["seed"])))

    frame = pd.read_csv(people_csv)
    victim = next(p for p in frame["person"] if _in_train(p))
    truth = frame.set_index("person").loc[victim]
    code, out = run_json(capsys, ["forget", str(request_file(workspace, id="GONE-1", delete_records=[victim]))])
    assert code == 0 and out["method"] == "certified", out
    published = tracking.load_version_bundle("people", out["model"]["version"]).theta
    # the attacker: D' from data/, θ⁻ from MLflow, the fit's parameters; the victim's hours, sex
    # and city known, the label and age (around the truth, to keep the test short) enumerated
    after = data_store.load_dataset(workspace, "people")
    cfg = TrainConfig(certified=True, seed=int(params["seed"]))
    position = list(frame["person"]).index(victim)
    distances = {}
    for label in after.labels:
        for age in range(int(truth["age"]) - 2, int(truth["age"]) + 3):
            values = {"age": float(age), "hours": float(truth["hours"]), "sex": truth["sex"],
                      "city": truth["city"], "label": label}
            theta = certified_update_of(with_row(after, position, victim, values), after, cfg)
            distances[(label, age)] = float((theta - published).norm())
    assert min(distances.values()) > 1e-9, min(distances.items(), key=lambda kv: kv[1])


def test_the_fresh_noise_of_a_retraining_past_the_budget_is_not_derived_from_the_request(workspace, people_csv,
                                                                                        capsys):
    add_and_train(people_csv, capsys, "--certified", "--budget", "1e-6")
    frame = pd.read_csv(people_csv)
    victim = next(p for p in frame["person"] if _in_train(p))
    code, out = run_json(capsys, ["forget", str(request_file(workspace, id="PAST-1", delete_records=[victim]))])
    assert code == 0 and out["method"] == "retrain", out
    production = tracking.require_production("people", workspace)
    noise = state.load_noise(workspace, production.run_id)
    sigma = float(tracking.version_tags("people", production.version)["sigma"])
    old_seed = int(hashlib.sha256(b"PAST-1").hexdigest()[:8], 16)
    assert not torch.equal(noise, seeded_noise(noise.shape, sigma, old_seed))
    runs = tracking.client().search_runs([e.experiment_id for e in tracking.client().search_experiments()])
    assert not any("seed" in k for r in runs for k in r.data.params if r.data.params.get("method") == "retrain")
    # nor is b itself written anywhere MLflow keeps (its store and artifacts) or printed
    digits = [repr(float(v))[:12].encode() for v in noise.reshape(-1)[:3]]
    files = [p for p in (workspace / "mlflow").rglob("*") if p.is_file()]
    assert not [p for p in files for d in digits if d in p.read_bytes()]
    assert not any(d.decode() in json.dumps(out) for d in digits)
