"""Records an erasure deleted, brought back into the data: the audit's safety net
(tasks.audit_checks.erased_records_back), the refusal at ingestion (tasks.erased.refuse_erased) and
the refusal to train on them (tasks.erased.refuse_erased_training).

The defect (main, real CLI): after RES-1 deleted P1003–P1005, `unlearn data add people --file <the
original csv> --replace` and `unlearn train people` put them back into production; the audit compared
production with a retraining on that same data, passed (agreement 1.0), wrote `audited` for RES-1, and
its record verified."""

from __future__ import annotations

import json

from flows.cli import main
from tasks import audit, dvc, ledger, tracking
from tasks import data as data_store
from tests.flows.test_audit import comply_requests, versions
from tests.flows.test_pipeline import add_and_train, request_file, run_json

ERASED = ["P1003", "P1004", "P1005"]


def restore_from_backup(workspace, people_csv) -> None:
    """data/people put back from the original source and `dvc add`ed, as a backup restored by hand
    would do (the path `unlearn data add --replace` no longer takes: its refusal is tested below)."""
    table = data_store._build_table("people", people_csv, "label", "person")
    data_store.save_dataset(table, data_store.dataset_dir(workspace, "people"))
    dvc.add_data(workspace)


def test_records_erased_by_a_ledger_request_and_brought_back_fail_the_audit(workspace, people_csv, capsys):
    add_and_train(people_csv, capsys)
    comply_requests(workspace, capsys, {"id": "RES-1", "delete_records": ERASED})
    restore_from_backup(workspace, people_csv)  # `train` now refuses this data (tested below): audited as it is
    production = tracking.production_alias("people")
    registered = set(versions("people"))

    code, out = run_json(capsys, ["audit", "people"])
    assert code == 1, out  # the old code: 0, PASSED with agreement 1.0
    checks = {c["name"]: c for c in out["checks"]}
    back = checks["erased_records_absent"]
    assert not out["passed"] and not back["passed"] and back["value"] == len(ERASED)
    assert {"check": "erased_records_absent", "requests": ["RES-1"]} in out["shortfall"]
    # the retrained model was trained on the records too: nothing registered, production unchanged
    assert out["promoted"] is None and "back in data/people" in out["not_promoted"]
    assert tracking.production_alias("people") == production and set(versions("people")) == registered
    [entry] = ledger.show(workspace, "RES-1").audits
    assert entry["event"] == "audit_failed"
    assert "back in the data" in entry["reason"] and "--replace" in entry["reason"], entry["reason"]
    record = workspace / out["record"]
    body = json.loads(record.read_text())
    assert body["promoted"] is None and not body["audit"]["passed"]
    assert main(["certificate", "verify", str(record)]) == 0  # verifies: it says FAILED
    # record ids are personal data: none in what the audit wrote or said
    written = record.read_text() + record.with_suffix(".html").read_text() + json.dumps(out) + entry["reason"]
    assert not any(r in written for r in ERASED)


def test_the_console_says_the_audit_failed_and_that_nothing_was_promoted(workspace, people_csv, capsys):
    add_and_train(people_csv, capsys)
    comply_requests(workspace, capsys, {"id": "RES-2", "delete_records": ERASED[:1]})
    restore_from_backup(workspace, people_csv)
    capsys.readouterr()
    assert main(["audit", "people"]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "erased_records_absent" in out and "nothing promoted" in out, out
    assert "retrained v" not in out and ERASED[0] not in out


def test_a_record_deleted_by_unlearn_forget_outside_the_ledger_brought_back_fails_even_a_rebase(
        workspace, people_csv, capsys):
    add_and_train(people_csv, capsys)
    path = request_file(workspace, id="OUT-1", delete_records=ERASED[:2])
    assert main(["forget", str(path)]) == 0
    restore_from_backup(workspace, people_csv)
    assert run_json(capsys, ["train", "people"])[0] == 0
    production = tracking.production_alias("people")

    code, out = run_json(capsys, ["audit", "people", "--rebase"])
    assert code == 1, out  # the old code: 0, passed (its escrow held no record id) and rebased
    back = {c["name"]: c for c in out["checks"]}["erased_records_absent"]
    assert back["value"] == 2 and "OUT-1" in back["threshold"]
    # not even --rebase promotes a retraining on the data that holds them
    assert out["promoted"] is None and not out["rebased"] and tracking.production_alias("people") == production
    assert audit.escrow_files(workspace, "people") == []  # covered, so deleted as any audit's


def test_an_audit_of_data_without_the_erased_records_still_passes(workspace, people_csv, capsys):
    add_and_train(people_csv, capsys)
    comply_requests(workspace, capsys, {"id": "RES-3", "delete_records": ERASED})
    code, out = run_json(capsys, ["audit", "people"])
    assert code == 0 and out["passed"], out
    assert "erased_records_absent" not in {c["name"] for c in out["checks"]}


def test_data_add_replace_refuses_a_source_with_records_a_completed_request_erased(workspace, people_csv, capsys):
    add_and_train(people_csv, capsys)
    comply_requests(workspace, capsys, {"id": "RES-4", "delete_records": ERASED})
    comply_requests(workspace, capsys, {"id": "RES-5", "delete_records": ["P1010"]})
    before = {p: p.read_bytes() for p in [workspace / "data.dvc", *sorted((workspace / "data").rglob("*"))]
              if p.is_file()}

    capsys.readouterr()
    argv = ["data", "add", "people", "--file", str(people_csv), "--target", "label", "--id", "person", "--replace"]
    assert main(argv) == 2  # the old code: 0, the four records back in data/people
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "4 record(s)" in err and "RES-4, RES-5" in err and "drop them from the source" in err, err
    assert not any(r in err for r in [*ERASED, "P1010"])
    after = {p: p.read_bytes() for p in [workspace / "data.dvc", *sorted((workspace / "data").rglob("*"))]
             if p.is_file()}
    assert after == before  # nothing written

    # the source without those rows is taken
    import pandas as pd

    frame = pd.read_csv(people_csv)
    cleaned = workspace / "cleaned.csv"
    frame[~frame["person"].isin([*ERASED, "P1010"])].to_csv(cleaned, index=False)
    assert main([*argv[:3], "--file", str(cleaned), *argv[5:]]) == 0


def test_data_add_refuses_nothing_in_a_project_without_a_ledger(workspace, people_csv, capsys):
    add_and_train(people_csv, capsys)
    argv = ["data", "add", "people", "--file", str(people_csv), "--target", "label", "--id", "person", "--replace"]
    assert main(argv) == 0
    assert not (workspace / "ledger.db").exists()


def test_train_refuses_data_holding_records_a_completed_request_erased(workspace, people_csv, capsys):
    add_and_train(people_csv, capsys)
    comply_requests(workspace, capsys, {"id": "RES-6", "delete_records": ERASED})
    restore_from_backup(workspace, people_csv)  # a backup put back by hand: `data add` never saw it
    production, registered = tracking.production_alias("people"), set(versions("people"))

    for argv in (["train", "people"], ["train", "people", "--model", "people-2"]):
        capsys.readouterr()
        assert main(argv) == 2  # the old code: 0, a production model that learned the erased records again
        captured = capsys.readouterr()
        err = captured.err.strip()
        assert len(err.splitlines()) == 1 and not captured.out, captured
        assert "3 record(s) erased by completed request(s) RES-6 are back in data/people" in err, err
        assert "--replace" in err, err
        assert not any(r in err for r in ERASED)
    assert tracking.production_alias("people") == production and set(versions("people")) == registered
    assert tracking.model_versions("people-2") == []

    # the data cleaned again: training is taken
    import pandas as pd

    frame = pd.read_csv(people_csv)
    cleaned = workspace / "cleaned.csv"
    frame[~frame["person"].isin(ERASED)].to_csv(cleaned, index=False)
    assert main(["data", "add", "people", "--file", str(cleaned), "--target", "label", "--id", "person",
                 "--replace"]) == 0
    assert run_json(capsys, ["train", "people"])[0] == 0


def test_the_audit_names_records_back_of_requests_an_earlier_audit_covered(workspace, people_csv, capsys):
    add_and_train(people_csv, capsys)
    comply_requests(workspace, capsys, {"id": "RES-7", "delete_records": ERASED})
    code, out = run_json(capsys, ["audit", "people"])
    assert code == 0 and out["passed"], out
    comply_requests(workspace, capsys, {"id": "RES-8", "delete_records": ["P1010"]})
    restore_from_backup(workspace, people_csv)  # every record back, RES-7's too, which the first audit covered

    code, out = run_json(capsys, ["audit", "people"])
    assert out["covered_requests"] == ["RES-8"] and code == 1, out
    back = {c["name"]: c for c in out["checks"]}["erased_records_absent"]
    # the old code: 1 record, RES-8's only; RES-7's three went unsaid in the signed record
    assert back["value"] == len(ERASED) + 1 and "RES-7, RES-8" in back["threshold"], back
    assert {"check": "erased_records_absent", "requests": ["RES-7", "RES-8"]} in out["shortfall"]
    assert out["promoted"] is None


def test_image_records_a_completed_request_erased_are_not_added_nor_trained_on_again(workspace, capsys):
    from tasks import data as data_store
    from tests.image_folders import write_image_folder
    from unlearning.images.data import load_images

    source = workspace / "incoming" / "shapes"
    write_image_folder(source)
    add = ["data", "add", "shapes", "--images", str(source), "--size", "16"]
    assert main(add) == 0 and main(["train", "shapes", "--epochs", "15"]) == 0
    data = load_images(workspace / "data" / "shapes")
    erased = [i for i, train in zip(data.record_ids, data.train) if train][:2]
    comply_requests(workspace, capsys, {"id": "IMG-E1", "model": "shapes", "delete_records": erased})
    cleaned = load_images(workspace / "data" / "shapes")

    capsys.readouterr()
    assert main([*add, "--replace"]) == 2  # the old code: 0, the two images back in data/shapes
    err = capsys.readouterr().err.strip()
    assert "2 record(s)" in err and "IMG-E1" in err and not any(i in err for i in erased), err

    # put back by hand: `train` refuses it
    restored = data_store._build_table("shapes", None, None, None, images=source, size=16)
    data_store.save_dataset(restored, data_store.dataset_dir(workspace, "shapes"))
    dvc.add_data(workspace)
    capsys.readouterr()
    assert main(["train", "shapes", "--epochs", "15"]) == 2  # the old code: 0
    err = capsys.readouterr().err.strip()
    assert "2 record(s)" in err and "back in data/shapes" in err and "IMG-E1" in err, err
    assert not any(i in err for i in erased), err

    # a forgotten class's training images back: refused too, the class named
    data_store.save_dataset(cleaned, data_store.dataset_dir(workspace, "shapes"))  # without IMG-E1's two again
    dvc.add_data(workspace)
    assert main(["train", "shapes", "--epochs", "15"]) == 0
    comply_requests(workspace, capsys, {"id": "IMG-E2", "model": "shapes", "forget_class": "vstripes",
                                        "method": "retrain"})
    data_store.save_dataset(cleaned, data_store.dataset_dir(workspace, "shapes"))
    dvc.add_data(workspace)
    capsys.readouterr()
    assert main(["train", "shapes", "--epochs", "15"]) == 2  # the old code: 0
    err = capsys.readouterr().err.strip()
    assert "forgotten class(es) 'vstripes'" in err and "IMG-E2" in err and "IMG-E1" not in err, err


def test_a_revoked_feature_with_values_again_is_not_added_trained_on_nor_audited_as_revoked(
        workspace, people_csv, capsys):
    add_and_train(people_csv, capsys)
    comply_requests(workspace, capsys, {"id": "REV-1", "revoke_features": ["sex"]})
    argv = ["data", "add", "people", "--file", str(people_csv), "--target", "label", "--id", "person", "--replace"]
    capsys.readouterr()
    assert main(argv) == 2  # the old code: 0, the revoked column's values back in data/people
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "revoked feature(s) 'sex'" in err and "REV-1" in err, err

    restore_from_backup(workspace, people_csv)
    capsys.readouterr()
    assert main(["train", "people"]) == 2  # the old code: 0, a production model using `sex` again
    err = capsys.readouterr().err.strip()
    assert "revoked feature(s) 'sex'" in err and "back in data/people" in err, err

    production = tracking.production_alias("people")
    code, out = run_json(capsys, ["audit", "people"])
    assert code == 1, out  # the old code: promoted a retraining that uses `sex`
    back = {c["name"]: c for c in out["checks"]}["erased_records_absent"]
    assert back["value"] == 1 and "'sex'" in back["threshold"] and "REV-1" in back["threshold"], back
    assert out["promoted"] is None and tracking.production_alias("people") == production

    # a source without the column is taken
    import pandas as pd

    cleaned = workspace / "no-sex.csv"
    pd.read_csv(people_csv).drop(columns=["sex"]).to_csv(cleaned, index=False)
    assert main([*argv[:3], "--file", str(cleaned), *argv[5:]]) == 0
