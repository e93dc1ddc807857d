"""`auto`'s fall-back for images (issue 13 §3), real Prefect, MLflow and DVC on the digits CNN: a
fast update that fails its checks is replaced by the CNN retrained on D' under `auto` (evidence
mode: retrained now; reference mode: the reference verification retrained), recorded as such; an
explicitly chosen method keeps failing visibly. The failing update is alignment cut to one step
(`steps: 1`): far too short to forget a class, which the unmodified checks catch."""

from __future__ import annotations

import mlflow
import pytest

from tests.flows.test_image_pipeline import digits_ws, request_file  # noqa: F401 — digits_ws: a fixture (this module's own workspace)

TOO_SHORT = {"steps": 1}  # one forget and one recover step: the class is still recognised


def child_runs(root, request_id: str) -> dict:
    """The child runs of a forget request's lineage by name (the last of each name)."""
    from tasks import tracking

    tracking.connect(root)
    client = mlflow.MlflowClient()
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              f"tags.request_id = '{request_id}'", order_by=["attributes.start_time ASC"])
    return {r.info.run_name: r for r in runs}


def production(root) -> str:
    from tasks import tracking

    tracking.connect(root)
    return str(tracking.production_version("digits").version)


def test_an_explicit_method_that_fails_its_checks_is_not_replaced(digits_ws):
    from flows.forget import forget_flow

    before = production(digits_ws)
    path = request_file(digits_ws, "explicit.yaml", {"id": "FB-0", "model": "digits", "forget_class": "2"})
    out = forget_flow(root=str(digits_ws), request_path=str(path), method="alignment", options=TOO_SHORT)
    assert not out["verified"] and not out["promoted"] and out["method"] == "alignment"
    assert out["fallback"] is None and out["verification"]["retrains"] == 0
    assert not {c["name"]: c for c in out["checks"]}["forgotten_class_accuracy"]["passed"]
    assert production(digits_ws) == before
    assert "fall back to retraining" not in child_runs(digits_ws, "FB-0")


def test_auto_falls_back_to_retraining_when_the_evidence_fails(digits_ws, capsys):
    from flows.forget import forget_flow
    from unlearning.images.data import load_images

    path = request_file(digits_ws, "auto.yaml", {"id": "FB-1", "model": "digits", "forget_class": "2"})
    out = forget_flow(root=str(digits_ws), request_path=str(path), method="auto", options=TOO_SHORT)
    assert out["verified"] and out["promoted"] and out["status"] == "completed"
    assert out["method"] == "retrain" and out["guarantee"] == "exact" and out["requested_method"] == "auto"
    assert out["verification"]["mode"] == "evidence" and out["verification"]["retrains"] == 1
    # the failed attempt, recorded: what failed and where the retrained model came from
    attempt = out["fallback"]
    assert attempt["method"] == "alignment" and "forgotten_class_accuracy" in attempt["failed_checks"]
    assert attempt["reference"] == "trained"
    # the retrained model passed the same evidence checks; it never saw class 2
    checks = {c["name"]: c for c in out["checks"]}
    assert all(c["passed"] for c in checks.values()) and checks["forgotten_class_accuracy"]["value"] <= 10
    rows = {r["method"]: r for r in out["results"]}
    assert set(rows) == {"original", "alignment", "retrain"} and rows["alignment"]["ua"] < rows["retrain"]["ua"]
    t = out["timings"]
    assert t["retrain_s"] > 0 and t["update_s"] >= t["retrain_s"] + attempt["update_s"] - 1e-9
    assert t["time_to_removal_s"] is not None
    # the certificate says the same; the production model is the retrained version
    runs = child_runs(digits_ws, "FB-1")
    client = mlflow.MlflowClient()
    from tasks import tracking

    certificate = tracking.load_json(out["run_id"], "certificate.json")
    assert certificate["verification"]["retrains"] == 1 and certificate["config"]["fallback"]["method"] == "alignment"
    fallback = runs["fall back to retraining"]
    assert fallback.data.params["failed_method"] == "alignment" and fallback.data.params["reference"] == "trained"
    assert "fallback.json" in {a.path for a in client.list_artifacts(fallback.info.run_id)}
    assert production(digits_ws) == out["model"]["version"]
    version = client.get_model_version("digits", out["model"]["version"])
    assert version.tags["method"] == "retrain" and version.tags["verified"] == "true"
    after = load_images(digits_ws / "data" / "digits")
    assert not (after.train & (after.labels == 2)).any()
    # the console line says auto fell back, and why
    from flows.erasure_cli import format_forget

    text = format_forget(out)
    assert "auto fell back to retraining: alignment failed forgotten_class_accuracy" in text.splitlines()[0]
    assert "auto: alignment was not promoted" in text and "evidence, the retrained model" in text


def test_a_retrained_version_starts_a_new_exact_chain(digits_ws):
    """The next request on the retrained version judges no drift against an older exact model:
    the retrained version is the anchor."""
    from flows.forget import forget_flow

    path = request_file(digits_ws, "next.yaml", {"id": "FB-2", "model": "digits", "forget_class": "7"})
    out = forget_flow(root=str(digits_ws), request_path=str(path))
    assert out["verified"] and out["method"] == "alignment" and out["fallback"] is None
    assert not {"ta_drop_vs_exact_model", "ra_drop_vs_exact_model"} & {c["name"] for c in out["checks"]}


def test_auto_promotes_the_verification_reference_when_the_reference_checks_fail(digits_ws):
    from flows.forget import forget_flow

    path = request_file(digits_ws, "ref.yaml", {"id": "FB-3", "model": "digits", "forget_class": "4"})
    out = forget_flow(root=str(digits_ws), request_path=str(path), method="auto", options=TOO_SHORT,
                      verify="reference")
    assert out["verified"] and out["promoted"] and out["method"] == "retrain" and out["guarantee"] == "exact"
    assert out["verification"]["mode"] == "reference" and out["verification"]["retrains"] == 1
    assert out["fallback"]["reference"] == "the verification's reference"
    assert "ua_gap_to_retrain" in out["fallback"]["failed_checks"]
    # one model retrained for the request: the verification's, promoted
    runs = child_runs(digits_ws, "FB-3")
    assert runs["verify"].data.params["reference"] == "trained"
    assert {c["name"] for c in out["checks"]} == {"ua_gap_to_retrain", "ta_drop_vs_retrain", "ra_drop_vs_retrain"}
    assert all(c["value"] == 0 for c in out["checks"])  # the reference against itself
    assert production(digits_ws) == out["model"]["version"]
    # what was promoted is the model retrained on D': it never saw class 4 and cannot predict it,
    # and the version keeps its outputs as an exact model (the next chain's anchor, no older one)
    from tasks import state, tracking
    from unlearning.images.data import load_images

    rows = {r["method"]: r for r in out["results"]}
    assert rows["retrain"]["ua"] == 100.0 and rows["alignment"]["ua"] < 100.0
    version = mlflow.MlflowClient().get_model_version("digits", out["model"]["version"])
    assert version.tags["method"] == "retrain"
    after = load_images(digits_ws / "data" / "digits")
    assert not (after.train & (after.labels == 4)).any()
    tracking.connect(digits_ws)
    kept = state.load_outputs(digits_ws, version.run_id)
    assert kept["ids"] and kept["anchor"] is None
