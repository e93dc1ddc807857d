"""A chain of image deletions through the pipeline (real Prefect, MLflow, DVC; digits, the tiny CNN):
each deletion of a few images is unrolled from the chain's first model over every image the chain
deleted (tasks.kinds.images_chain), whose weights and gradient stay sealed beside the audit escrow
until the audit that covers the chain deletes them; a class forgotten mid-chain ends the chain."""

from __future__ import annotations

import hashlib
import json

import mlflow
import numpy as np
import torch
import yaml

from flows.cli import main
from tasks import state, tracking
from tasks.kinds import images_chain as chains
from tests.flows.test_audit_text import sealed_teacher
from tests.flows.test_faults import run_killed
from tests.flows.test_pipeline import run_json
from unlearning.images import ImageData, delete_records
from unlearning.images.alignment import AlignmentConfig, unroll
from unlearning.images.bundle import training_data
from unlearning.images.data import load_images


def production():
    return mlflow.MlflowClient().get_model_version_by_alias("digits", "production")


def deletion(workspace, request_id: str, ids: list[str]):
    path = workspace / f"{request_id}.yaml"
    path.write_text(yaml.safe_dump({"id": request_id, "model": "digits", "delete_records": ids}))
    return path


def test_a_chain_of_deletions_is_unrolled_from_its_first_model_and_its_audit_deletes_it(workspace, capsys):
    assert main(["data", "add", "digits"]) == 0
    assert main(["train", "digits", "--epochs", "6"]) == 0
    trained = production()
    bundle = tracking.load_version_bundle("digits", trained.version)
    dataset = load_images(workspace / "data" / "digits")
    first_data = training_data(dataset, bundle)
    picked = np.flatnonzero(dataset.train)[[5, 300, 800, 1200]]
    ids = [dataset.record_ids[p] for p in picked]

    code, first = run_json(capsys, ["forget", str(deletion(workspace, "IMG-C1", ids[:2]))])
    assert code == 0 and first["promoted"] and first["method"] == "alignment", first
    assert [e["kind"] for e in first["superseded"] if e["kind"] == "chain_teacher"] == ["chain_teacher"]
    sealed = sealed_teacher(workspace, "digits")
    assert sealed["anchor"] == trained.run_id and sealed["version"] == str(trained.version)
    assert all(torch.equal(sealed["state"][k], v) for k, v in bundle.model.state_dict().items())
    v2 = production()
    first_ids = state.load_evidence(workspace, v2.run_id)
    assert first_ids[state.TEACHER_RUN_KEY] == trained.run_id and first_ids[state.CHAIN_SEAL_KEY] == sealed["seal"]

    code, second = run_json(capsys, ["forget", str(deletion(workspace, "IMG-C2", ids[2:]))])
    assert code == 0 and second["promoted"], second
    v3 = production()
    kept = state.load_evidence(workspace, v3.run_id)
    assert kept[state.TEACHER_RUN_KEY] == trained.run_id and kept[state.CHAIN_SEAL_KEY] != first_ids[state.CHAIN_SEAL_KEY]
    [update_run] = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                      filter_string=f"params.unrolled_from = '{trained.run_id}'")
    assert update_run.data.params["method"] == "alignment"
    # the second deletion is the one unrolling of all four images from the trained model (library)
    positions = sorted(bundle.train_ids.index(i) for i in ids)
    at_once = unroll(bundle.model, ImageData(first_data.X, first_data.y, first_data.schedule),
                     delete_records(len(first_data), positions), AlignmentConfig())
    promoted = tracking.load_version_bundle("digits", v3.version).model.state_dict()
    for k, v in at_once.model.state_dict().items():
        torch.testing.assert_close(promoted[k], v, rtol=1e-5, atol=1e-6)
    sealed = sealed_teacher(workspace, "digits")
    assert sealed["seal"] == kept[state.CHAIN_SEAL_KEY] and set(sealed["grad"]) <= set(promoted)

    # a class forgotten mid-chain (alignment's steps, from the model before) ends the chain: its version
    # names none, and the next deletion starts a new one from it
    path = workspace / "IMG-C3.yaml"
    path.write_text(yaml.safe_dump({"id": "IMG-C3", "model": "digits", "forget_class": "9"}))
    code, forgot = run_json(capsys, ["forget", str(path)])
    assert code == 0 and forgot["promoted"], forgot
    v4 = production()
    assert chains.kept_ids(workspace, v4.run_id) == (None, None)
    assert not [e for e in forgot["superseded"] if e["kind"] == "chain_teacher"]
    fifth = [i for i in (dataset.record_ids[p] for p in np.flatnonzero(dataset.train)[[40, 41]])
             if dataset.labels[dataset.record_ids.index(i)] != 9]
    code, after_class = run_json(capsys, ["forget", str(deletion(workspace, "IMG-C4", fifth))])
    assert code == 0 and after_class["promoted"], after_class
    assert chains.kept_ids(workspace, production().run_id)[0] == v4.run_id
    assert sealed_teacher(workspace, "digits")["anchor"] == v4.run_id
    assert mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string="params.unrolled_from = 'the model before'")

    code, audited = run_json(capsys, ["audit", "digits"])
    assert sorted(audited["covered_requests"]) == ["IMG-C1", "IMG-C2", "IMG-C3", "IMG-C4"], audited
    stays = audited["promoted"] is None  # passed and decided: production stays; else the retrained model is promoted
    assert audited["teacher"] == {"deleted": True, "file_sha256": audited["teacher"]["file_sha256"],
                                  "production_teaches": stays}
    assert not state.teacher_file(workspace, "digits").exists()
    record = json.loads((workspace / audited["record"]).read_text())
    assert record["teacher"] == audited["teacher"]
    if stays:  # the next deletion starts a new chain from the audited production
        assert chains.kept_ids(workspace, production().run_id) == (None, None)


KILLED_BEFORE_RECORD = """
import os, sys
import tasks.audit_record
def killed(*args, **kwargs):
    os._exit(137)
tasks.audit_record.write_record = killed  # killed after the checks and the chain's hand-over, before the record
from flows.cli import main
sys.exit(main(["audit", "digits"]))
"""

KILLED_AFTER_RECORD = KILLED_BEFORE_RECORD.replace("write_record = killed", "record_verdicts = killed")


def test_the_chain_is_deleted_only_by_an_audit_whose_signed_record_says_so(workspace, capsys):
    """An audit killed before its record deletes nothing (the next one covers the requests again and
    its record names the file); one killed after its record is completed by the next run's recovery,
    which deletes the file the record names. Before, the file went before the record: a kill in
    between left a deletion that no record attests, and the next record said `deleted: false`."""
    assert main(["data", "add", "digits"]) == 0
    assert main(["train", "digits", "--epochs", "6"]) == 0
    dataset = load_images(workspace / "data" / "digits")
    ids = [dataset.record_ids[p] for p in np.flatnonzero(dataset.train)[[5, 300]]]
    code, forgot = run_json(capsys, ["forget", str(deletion(workspace, "IMG-K1", ids))])
    assert code == 0 and forgot["method"] == "alignment", forgot
    path = state.teacher_file(workspace, "digits")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()

    run_killed(workspace, KILLED_BEFORE_RECORD)
    assert path.exists() and not list((workspace / ".unlearn" / "audits").glob("*.json"))

    run_killed(workspace, KILLED_AFTER_RECORD)  # recovers the first (rolled back), killed after its own record
    [record_path] = list((workspace / ".unlearn" / "audits").glob("*.json"))
    record = json.loads(record_path.read_text())
    assert record["teacher"]["deleted"] and record["teacher"]["file_sha256"] == digest
    assert path.exists()  # stated, not yet done

    code, out = run_json(capsys, ["audit", "digits"])
    assert code == 0 and {"id": record_path.stem, "model": "digits", "outcome": "completed"} in out["recovered"], out
    assert not path.exists()  # the recovery completed what the signed record says
    assert main(["certificate", "verify", str(record_path)]) == 0
