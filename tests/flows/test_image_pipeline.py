"""The image scenario end to end (real Prefect, MLflow, DVC; digits and the tiny CNN): data add →
train → forget a class → alignment verified by evidence (the default: no model trained) and
promoted; another class verified against a retrained CNN (verify="reference"); bad image requests
→ exit 2, one line, nothing written."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest
import yaml

from flows.cli import main
from tests.flows.conftest import project_root
from tests.flows.test_cli_bad_input import snapshot
from unlearning.images.bundle import ImageTrainConfig


@pytest.fixture(scope="module")
def digits_ws(tmp_path_factory, prefect_harness):
    """A workspace with data/digits and a tiny CNN `digits` (v1, production), 6 epochs."""
    root = tmp_path_factory.mktemp("images")
    with project_root(root, chdir=True):
        assert main(["data", "add", "digits"]) == 0
        assert main(["train", "digits", "--epochs", "6"]) == 0
        yield root


def request_file(root, name: str, content: dict):
    path = root / name
    path.write_text(yaml.safe_dump(content))
    return path


@pytest.mark.parametrize("content, expect", [
    ({"forget_class": "seven"}, "unknown class 'seven' in forget_class"),
    ({"forget_class": 12}, "unknown class '12'"),
    ({"forget_class": 3, "delete_records": ["digits:0000"]}, "exactly one of delete_records, forget_class or fix_labels"),
    ({"revoke_features": ["pixel_0"]}, "holds images"),
    ({"redact": {"findings": "all"}}, "holds images"),
    ({"delete_records": ["no-such-image"]}, "not in dataset 'digits'"),
    ({"fix_labels": {"digits:0000": "eleven"}}, "unknown class 'eleven' in fix_labels"),
    ({"forget_class": 3, "method": "certified"}, "does not apply to an image model"),
])
def test_bad_image_requests_exit_2_and_change_nothing(digits_ws, capsys, content, expect):
    before = snapshot(digits_ws)
    path = request_file(digits_ws, "bad.yaml", {"id": "BAD-1", "model": "digits", **content})
    capsys.readouterr()
    assert main(["forget", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and expect in err, err
    path.unlink()
    assert snapshot(digits_ws) == before


def test_record_outside_the_training_subset_is_refused(digits_ws, capsys):
    from unlearning.images.data import load_images

    dataset = load_images(digits_ws / "data" / "digits")
    test_id = dataset.record_ids[int(np.flatnonzero(~dataset.train)[0])]
    path = request_file(digits_ws, "bad.yaml", {"id": "BAD-2", "model": "digits", "delete_records": [test_id]})
    capsys.readouterr()
    assert main(["forget", str(path)]) == 2
    assert "only its training images can be unlearned" in capsys.readouterr().err
    path.unlink()


def verify_run(root, request_id: str):
    """The `verify` child run of a forget request's lineage."""
    from tasks import tracking

    tracking.connect(root)
    client = mlflow.MlflowClient()
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              f"tags.request_id = '{request_id}'")
    return next(r for r in runs if r.info.run_name == "verify")


def test_forget_class_promotes_alignment_verified_by_evidence(digits_ws, capsys):
    """The image default: evidence, no model trained — forget-set accuracy and membership against
    held-out images of the class, utility against the model before."""
    path = request_file(digits_ws, "forget3.yaml", {"id": "IMG-1", "model": "digits", "forget_class": "3"})
    capsys.readouterr()
    assert main(["forget", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verified"] and out["promoted"] and out["method"] == "alignment" and out["guarantee"] == "empirical"
    assert out["forget_class"] == "3" and out["model"]["version"] == "2"
    # no reference: no retrain row, no retraining time, no gap to retraining
    rows = {r["method"]: r for r in out["results"]}
    assert set(rows) == {"original", "alignment"} and rows["alignment"].get("avg_gap") is None
    assert out["timings"]["retrain_s"] is None and out["timings"]["speedup"] is None
    checks = {c["name"]: c for c in out["checks"]}
    assert set(checks) == {"forgotten_class_accuracy", "forgotten_class_heldout_accuracy", "membership_auc_vs_heldout",
                           "ta_drop_vs_original", "ra_drop_vs_original"}
    assert all(c["passed"] for c in checks.values())
    # what the checks measured: the original still knew the class, on Z and on unseen images of it
    assert out["metrics"]["forgotten_class_accuracy_before"] > 80
    assert out["metrics"]["forgotten_class_heldout_accuracy_before"] > 80
    assert checks["forgotten_class_accuracy"]["value"] == pytest.approx(100 - rows["alignment"]["ua"])
    run = verify_run(digits_ws, "IMG-1")
    assert run.data.params["verification_mode"] == "evidence" and run.data.params["retrains"] == "0"
    assert "reference" not in run.data.params  # no reference obtained, prefetched or trained

    # the data lost every training image of class 3 (test images stay), as a new DVC version
    from unlearning.images.data import load_images

    after = load_images(digits_ws / "data" / "digits")
    assert not (after.train & (after.labels == 3)).any() and (~after.train & (after.labels == 3)).any()
    assert out["data"]["before"] != out["data"]["after"]

    # the production model is the promoted CNN; as a pyfunc it maps images to class names
    model = mlflow.pyfunc.load_model("models:/digits@production")
    test = ~after.train & (after.labels != 3)
    predicted = np.asarray(model.predict(after.images[test]))
    assert (predicted == np.asarray(after.classes)[after.labels[test]]).mean() > 0.8
    forgotten = np.asarray(model.predict(after.images[~after.train & (after.labels == 3)]))
    assert (forgotten == "3").mean() < 0.3  # unseen images of the forgotten class: mostly not "3" any more
    version = mlflow.MlflowClient().get_model_version("digits", "2")
    assert version.tags["method"] == "alignment" and version.tags["verified"] == "true"

    # the same request again: already processed, nothing new
    assert main(["forget", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "already_processed"


def test_the_model_before_is_evaluated_once_per_version_and_its_outputs_go_with_it(digits_ws, capsys):
    """The evidence reads the model before from its version's outputs (tasks/state.py `outputs/`):
    written when v1 was trained and by the request that made each later version, never holding a
    deleted image's outputs, and purged with the version."""
    from tasks import state, tracking
    from unlearning.images.data import load_images

    tracking.connect(digits_ws)
    client = mlflow.MlflowClient()
    outputs = state.state_dir(digits_ws) / "outputs"
    v1, v2 = (client.get_model_version("digits", v) for v in ("1", "2"))
    assert verify_run(digits_ws, "IMG-1").data.metrics["evidence_images_evaluated_before"] == 0  # v1's, from training
    assert not (outputs / f"{v1.run_id}.pt").exists()  # purged with v1 when IMG-1 superseded it
    dataset = load_images(digits_ws / "data" / "digits")
    gone = [dataset.record_ids[p] for p in np.flatnonzero(dataset.train & (dataset.labels == 0))[:2]]
    path = request_file(digits_ws, "delete2.yaml", {"id": "IMG-2", "model": "digits", "delete_records": gone})
    capsys.readouterr()
    assert main(["forget", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verified"]
    # v2's, kept by IMG-1: its samples of D' and of the test images are fixed by record id, so only
    # controls of a class IMG-1 did not judge and the stand-ins for sampled images now erased are new
    assert out["metrics"]["evidence_images_evaluated_before"] <= out["metrics"]["evidence_controls"] + len(gone)
    assert out["metrics"]["evidence_test_images"] >= 10 and out["metrics"]["evidence_retain_images"] >= 10
    # v2 is a fast update of v1 (trained): IMG-2 also judges the drops against v1, whose outputs v2 kept
    assert {"ta_drop_vs_exact_model", "ra_drop_vs_exact_model"} <= {c["name"] for c in out["checks"]}
    v3 = client.get_model_version("digits", out["model"]["version"])
    kept = state.load_outputs(digits_ws, v3.run_id)["ids"]
    after = load_images(digits_ws / "data" / "digits")
    assert not set(gone) & set(kept)  # derived from the deleted images: not kept with v3
    assert set(state.load_outputs(digits_ws, v3.run_id)["anchor"]["ids"]) <= set(kept)  # v1's, on the samples
    train_ids = {after.record_ids[p] for p in np.flatnonzero(after.train)}
    assert set(kept) <= train_ids | {after.record_ids[p] for p in np.flatnonzero(~after.train)}
    assert len(set(kept) & train_ids) == out["metrics"]["evidence_retain_images"]  # what IMG-2 judged of D'
    assert f"outputs/{v3.run_id}.pt" in state.model_state_files(digits_ws, v3.run_id)  # listed, purged with v3
    assert not (outputs / f"{v2.run_id}.pt").exists()


def test_the_console_shows_the_evidence_checks_when_no_model_was_retrained():
    from tasks.kinds.images import KIND

    row = {"method": "alignment", **dict.fromkeys(("ua", "ra", "ta", "mia_efficacy", "mia_auc", "da", "lp", "nmi",
                                                   "f1", "rte_s"), 1.0)}
    checks = [{"name": "forgotten_class_accuracy", "value": 0.0, "threshold": "<= 10.0", "passed": True},
              {"name": "ta_drop_vs_original", "value": 6.5, "threshold": "<= 5.0", "passed": False}]
    lines = KIND.format_forget({"results": [{**row, "method": "original"}, row], "checks": checks})
    assert any("evidence, no model retrained" in line for line in lines)
    assert any("forgotten_class_accuracy" in line and "<= 10.0" in line and "yes" in line for line in lines)
    assert any("ta_drop_vs_original" in line and "6.5" in line and "NO" in line for line in lines)
    with_reference = KIND.format_forget({"results": [row, {**row, "method": "retrain"}], "checks": checks})
    assert not any("evidence" in line for line in with_reference)


def test_forget_class_verified_against_a_retrained_reference(digits_ws):
    """verify="reference" (opt-in): today's comparison with a CNN retrained on D'."""
    from flows.forget import forget_flow

    path = request_file(digits_ws, "forget5.yaml", {"id": "IMG-5", "model": "digits", "forget_class": "5"})
    out = forget_flow(root=str(digits_ws), request_path=str(path), verify="reference")
    assert out["verified"] and out["method"] == "alignment" and out["timings"]["retrain_s"] > 0
    rows = {r["method"]: r for r in out["results"]}
    assert set(rows) == {"original", "retrain", "alignment"}
    assert rows["original"]["ua"] < 10 and rows["retrain"]["ua"] == 100.0
    assert rows["alignment"]["ua"] >= 80 and abs(rows["alignment"]["ta"] - rows["retrain"]["ta"]) <= 5
    assert rows["retrain"]["da"] > rows["original"]["da"]
    assert {c["name"] for c in out["checks"]} == {"ua_gap_to_retrain", "ta_drop_vs_retrain", "ra_drop_vs_retrain"}
    assert verify_run(digits_ws, "IMG-5").data.params["reference"] == "trained"


def test_a_fast_update_verified_by_reference_keeps_the_reference_as_its_chains_exact_model(digits_ws):
    """The version IMG-5 made (alignment, verified against a retrained CNN) keeps its outputs on the
    samples and, as its anchor, the reference's: the next request, verified by evidence, judges its
    drift against that exact model instead of taking the fast update for an exact one."""
    from flows.forget import forget_flow
    from tasks import state, tracking
    from unlearning.images.data import load_images

    tracking.connect(digits_ws)
    production = mlflow.MlflowClient().get_model_version_by_alias("digits", "production")
    assert production.tags["method"] == "alignment" and production.tags["request_id"] == "IMG-5"
    kept = state.load_outputs(digits_ws, production.run_id)
    assert kept["anchor"] is not None and set(kept["anchor"]["ids"]) == set(kept["ids"])
    dataset = load_images(digits_ws / "data" / "digits")
    gone = [dataset.record_ids[p] for p in np.flatnonzero(dataset.train & (dataset.labels == 1))[:2]]
    path = request_file(digits_ws, "delete6.yaml", {"id": "IMG-6", "model": "digits", "delete_records": gone})
    out = forget_flow(root=str(digits_ws), request_path=str(path))
    assert out["verification"]["mode"] == "evidence"
    assert {"ta_drop_vs_exact_model", "ra_drop_vs_exact_model"} <= {c["name"] for c in out["checks"]}


def test_image_train_config_defaults():
    from unlearning.images.bundle import default_train_config
    from unlearning.images.data import build_digits

    digits = build_digits()
    assert default_train_config(digits, ImageTrainConfig()) == ("tiny", int(digits.train.sum()))
    assert default_train_config(digits, ImageTrainConfig(subset=600)) == ("tiny", 600)


def test_one_relabelled_image_gets_undecided_checks_not_passed_ones(digits_ws, capsys):
    """One image relabelled: the membership AUC's band (0.5 ± ≥ 0.9) and the one-sided accuracy
    gap's (above +5 points no outcome of one image can reach at controls ≈ 95 %) cover every value,
    so no check of the forget set has power. The request completes (undecided fails nothing) and
    --json, the certificate and the console say undecided, never ok."""
    from flows.erasure_cli import format_forget
    from tasks import tracking
    from unlearning.images.data import load_images

    dataset = load_images(digits_ws / "data" / "digits")
    one = dataset.record_ids[int(np.flatnonzero(dataset.train & (dataset.labels == 4))[0])]
    path = request_file(digits_ws, "relabel1.yaml", {"id": "IMG-U1", "model": "digits", "fix_labels": {one: "9"}})
    capsys.readouterr()
    assert main(["forget", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verified"] and out["promoted"]
    checks = {c["name"]: c for c in out["verification"]["checks"]}
    for name in ("membership_auc_vs_heldout", "forget_accuracy_gap_to_heldout"):
        assert checks[name]["decided"] is False and checks[name]["reason"].startswith("1 forget image")
    assert checks["ta_drop_vs_original"].get("decided", True)
    assert out["verification"]["decided"] is False and out["verification"]["reason"].startswith("1 forget image")
    certificate = tracking.load_json(out["run_id"], "certificate.json")
    assert certificate["verification"] == out["verification"]
    text = format_forget(out)
    assert "removal undecided: no check with power judged the forget set" in text
    assert any("membership_auc_vs_heldout" in line and "undecided (1 forget image" in line for line in text.splitlines())
