"""Records an erasure deleted, brought back into the data: the audit's safety net
(tasks.audit_checks.erased_records_back), the refusal at ingestion (tasks.erased.refuse_erased) and
the refusal to train on them (tasks.erased.refuse_erased_training).

The defect (main, real CLI): after RES-1 deleted P1003–P1005, `unlearn data add people --file <the
original csv> --replace` and `unlearn train people` put them back into production; the audit compared
production with a retraining on that same data, passed (agreement 1.0), wrote `audited` for RES-1, and
its record verified."""

from __future__ import annotations

import json

import pytest

from flows.cli import main
from tasks import audit, dvc, ledger, tracking
from tasks import data as data_store
from tests.flows.test_audit import comply_requests, versions
from tests.flows.test_pipeline import add_and_train, request_file, run_json
from unlearning.errors import UnlearnError

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
    restore_from_backup(workspace, people_csv)  # `train` refuses this data (tested below): audited as it is
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
    # a backup from between the two: RES-7's records back (the first audit covered them), RES-8's not
    import pandas as pd

    between = workspace / "between.csv"
    frame = pd.read_csv(people_csv)
    frame[frame["person"] != "P1010"].to_csv(between, index=False)
    restore_from_backup(workspace, between)

    code, out = run_json(capsys, ["audit", "people"])
    assert out["covered_requests"] == ["RES-8"] and code == 1, out  # the old code: 0, RES-8's record is not back
    back = {c["name"]: c for c in out["checks"]}["erased_records_absent"]
    assert back["value"] == len(ERASED) and "by RES-7 are in" in back["threshold"], back
    assert {"check": "erased_records_absent", "requests": ["RES-7"]} in out["shortfall"]
    assert out["promoted"] is None
    # RES-8's update is not blamed in the append-only ledger: its entry says whose data is back
    [entry] = ledger.show(workspace, "RES-8").audits
    assert entry["event"] == "audit_failed" and "erased_records_absent (RES-7)" in entry["reason"], entry
    assert "own checks passed" in entry["reason"]


def test_image_records_a_completed_request_erased_are_not_added_nor_trained_on_again(workspace, capsys):
    from tasks import data as data_store
    from tests.flows.test_erased_copies import shapes_add, trained_shapes, training_ids
    from unlearning.images.data import load_images

    source, data = trained_shapes(workspace)
    add = shapes_add(source)
    erased = training_ids(data)
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
    assert ledger.show(workspace, "IMG-E2").response["forget_class_name"] == "vstripes"  # as one given by index
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


def test_a_model_is_not_trained_on_a_copy_of_its_data_under_another_name(workspace, people_csv, capsys):
    """The gates read a dataset's erasures: `data add other` with the original source, then `train other
    --model people` made people's production use the revoked feature again, exit 0 (review, session 18)."""
    add_and_train(people_csv, capsys)
    comply_requests(workspace, capsys, {"id": "REV-9", "revoke_features": ["sex"]})
    assert main(["data", "add", "other", "--file", str(people_csv), "--target", "label", "--id", "person"]) == 0
    production = tracking.production_alias("people")
    capsys.readouterr()
    assert main(["train", "other", "--model", "people"]) == 2  # the old code: 0
    err = capsys.readouterr().err.strip()
    assert "model people is the production model of dataset 'people'" in err and "retire" in err, err
    assert tracking.production_alias("people") == production
    assert main(["train", "other"]) == 0  # a model of its own: other's erasures are its own (none)


def test_a_forgotten_class_named_by_digits_is_looked_for_by_its_name(workspace, capsys):
    """Classes 1/ 2/ 3/: a forget of class "3" kept its index (2) in the escrow, which the audit read as
    the class named "2": FAILED, nothing promoted, and advice to remove class 2's images (review,
    session 18)."""
    from tests.image_folders import write_image_folder

    source = workspace / "incoming" / "digits3"
    write_image_folder(source)
    for position, folder in enumerate(sorted(p for p in source.iterdir() if p.is_dir()), start=1):
        folder.rename(source / str(position))
    assert main(["data", "add", "digits3", "--images", str(source), "--size", "16"]) == 0
    assert main(["train", "digits3", "--epochs", "15"]) == 0
    path = workspace / "F-1.yaml"
    path.write_text("id: F-1\nmodel: digits3\nforget_class: '3'\nmethod: retrain\n")
    assert main(["forget", str(path)]) == 0

    code, out = run_json(capsys, ["audit", "digits3"])
    assert code == 0 and out["passed"], out  # the old code: 1, "forgotten class(es) '2'"
    assert "erased_records_absent" not in {c["name"] for c in out["checks"]}


def test_a_refusal_of_records_with_positional_ids_says_to_give_ids(workspace, people_csv, capsys):
    """Ids assigned by position: a source without the erased rows is numbered again onto their ids, and
    the refusal's own advice (drop the rows) could not get past it (review, session 18)."""
    import pandas as pd

    frame = pd.read_csv(people_csv).drop(columns=["person"])
    source = workspace / "anonymous.csv"
    frame.to_csv(source, index=False)
    assert main(["data", "add", "anon", "--file", str(source), "--target", "label"]) == 0
    assert main(["train", "anon"]) == 0
    comply_requests(workspace, capsys, {"id": "POS-1", "model": "anon", "delete_records": ["2"]})
    frame.drop(index=2).to_csv(source, index=False)  # as the message says: the row dropped
    capsys.readouterr()
    assert main(["data", "add", "anon", "--file", str(source), "--target", "label", "--replace"]) == 2
    err = capsys.readouterr().err.strip()
    assert "1 record(s)" in err and "POS-1" in err and "ids are its rows' positions" in err and "--id" in err, err


def test_a_refusal_of_rectified_labels_with_positional_ids_says_to_give_ids(workspace, people_csv, capsys):
    """Ids assigned by position: a source with a row dropped compares the rectified labels with other
    records' (review, session 21: refused with only 'keep the rectified labels', which the source did)."""
    import pandas as pd

    frame = pd.read_csv(people_csv).drop(columns=["person"])
    source = workspace / "anonymous.csv"
    frame.to_csv(source, index=False)
    assert main(["data", "add", "anon", "--file", str(source), "--target", "label"]) == 0
    assert main(["train", "anon"]) == 0
    flipped = {"5": "no" if frame.at[5, "label"] == "yes" else "yes",
               "6": "no" if frame.at[6, "label"] == "yes" else "yes"}
    comply_requests(workspace, capsys, {"id": "POS-L", "model": "anon", "fix_labels": flipped})
    corrected = frame.assign(label=[flipped.get(str(i), v) for i, v in enumerate(frame["label"])])
    corrected.drop(index=0).to_csv(source, index=False)  # the rectified labels kept, an unrelated row dropped
    capsys.readouterr()
    assert main(["data", "add", "anon", "--file", str(source), "--target", "label", "--replace"]) == 2
    err = capsys.readouterr().err.strip()
    assert "wrong label(s)" in err and "POS-L" in err and "ids are its rows' positions" in err and "--id" in err, err


def test_the_gates_do_not_read_a_ledger_that_does_not_verify(workspace, people_csv, capsys):
    """A completed request's entry deleted from ledger.db switched the data add gate off (review,
    session 18): the ledger is verified first, as comply and the audit do."""
    import sqlite3

    add_and_train(people_csv, capsys)
    comply_requests(workspace, capsys, {"id": "RES-10", "delete_records": ERASED})
    with sqlite3.connect(workspace / "ledger.db") as db:
        for (name,) in db.execute("select name from sqlite_master where type='trigger'").fetchall():
            db.execute(f"drop trigger {name}")  # the append-only triggers: whoever doctors the file drops them
        table = next(t for (t,) in db.execute("select name from sqlite_master where type='table'") if "entr" in t)
        assert db.execute(f"delete from {table} where event = 'completed'").rowcount == 1
    capsys.readouterr()
    argv = ["data", "add", "people", "--file", str(people_csv), "--target", "label", "--id", "person", "--replace"]
    assert main(argv) == 2  # the old code: 0, the erased records back (their request no longer completed)
    err = capsys.readouterr().err.strip()
    assert "the ledger does not verify" in err, err


def test_a_retired_model_name_trained_again_on_other_data_does_not_carry_its_erasures_over(
        workspace, people_csv, capsys):
    """The gates took a request's erasures to every dataset any version of its model was trained on:
    a model name retired and trained again on other data refused that data's own records (review,
    session 18). They go with the dataset of the version the request completed with."""
    add_and_train(people_csv, capsys)
    comply_requests(workspace, capsys, {"id": "RES-11", "delete_records": ERASED})
    assert main(["model", "retire", "people"]) == 0
    from tests.flows.conftest import synthetic_people

    others = workspace / "others.csv"  # other people's records under the same ids P1000…
    synthetic_people(seed=1).to_csv(others, index=False)
    argv = ["data", "add", "other", "--file", str(others), "--target", "label", "--id", "person"]
    assert main(argv) == 0  # another dataset: its own records, which happen to share the ids
    assert main(["train", "other", "--model", "people"]) == 0
    assert main([*argv, "--replace"]) == 0  # the old code: 2, RES-11's erasure from data/people applied here
    # and on the erasure's own dataset the records are still kept out
    capsys.readouterr()
    assert main(["data", "add", "people", "--file", str(people_csv), "--target", "label", "--id", "person",
                 "--replace"]) == 2
    assert "RES-11" in capsys.readouterr().err


def test_a_forgotten_class_written_as_an_index_is_kept_out_by_the_name_it_resolved_to(workspace, capsys):
    """A forget_class given as an index ("2") was looked for by the audit alone (the model's class
    list): `data add --replace` with the original folders and `train` took the class's training images
    back, exit 0 (brief gates3). Its completed entry records the name it resolved to, as the entry of
    a request naming the class holds it."""
    from tasks.erased import back_in
    from tests.image_folders import CLASSES, write_image_folder
    from unlearning.images.data import load_images

    source = workspace / "incoming" / "shapes"
    write_image_folder(source)
    add = ["data", "add", "shapes", "--images", str(source), "--size", "16"]
    assert main(add) == 0 and main(["train", "shapes", "--epochs", "15"]) == 0
    comply_requests(workspace, capsys, {"id": "IDX-1", "model": "shapes", "forget_class": "2", "method": "retrain"})
    before = {p: p.read_bytes() for p in [workspace / "data.dvc", *sorted((workspace / "data").rglob("*"))]
              if p.is_file()}

    capsys.readouterr()
    assert main([*add, "--replace"]) == 2  # the old code: 0, vstripes' training images back in data/shapes
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"forgotten class(es) '{CLASSES[2]}'" in err and "IDX-1" in err, err
    assert {p: p.read_bytes() for p in before} == before

    restored = data_store._build_table("shapes", None, None, None, images=source, size=16)  # put back by hand
    data_store.save_dataset(restored, data_store.dataset_dir(workspace, "shapes"))
    dvc.add_data(workspace)
    capsys.readouterr()
    assert main(["train", "shapes", "--epochs", "15"]) == 2  # the old code: 0
    err = capsys.readouterr().err.strip()
    assert f"forgotten class(es) '{CLASSES[2]}'" in err and "back in data/shapes" in err and "IDX-1" in err, err

    record = ledger.show(workspace, "IDX-1")
    assert record.request["forget_class"] == "2" and record.response["forget_class_name"] == CLASSES[2]
    # an entry completed before the name was recorded: its index is looked for as before, through the
    # model's class list (the audit's) only
    data = load_images(workspace / "data" / "shapes")
    assert not back_in(data, {"OLD": {"forget_class": "2"}})
    assert back_in(data, {"OLD": {"forget_class": "2"}}, list(CLASSES)).classes == {CLASSES[2]}



@pytest.mark.parametrize("gone", ["moved", "url elsewhere"])
def test_the_gates_refuse_a_ledger_that_is_gone_while_its_signed_head_names_entries(
        workspace, people_csv, capsys, tmp_path_factory, monkeypatch, gone):
    """ledger.db moved away (red team, session 21) switched every gate off: `data add --replace` and
    `train` exit 0 and took an erased record back, as in a project that never had a ledger. The
    signed head still names its entries: the ledger is missing, and the gates refuse."""
    from tasks.erased import refuse_erased_training

    add_and_train(people_csv, capsys)
    comply_requests(workspace, capsys, {"id": "RES-20", "delete_records": ERASED})
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    if gone == "moved":
        (workspace / "ledger.db").rename(elsewhere / "ledger.db")
    else:
        monkeypatch.setenv("UNLEARN_LEDGER_URL", f"sqlite:///{elsewhere / 'ledger.db'}")
    written = lambda: {p: p.read_bytes() for p in [workspace / "data.dvc", *(workspace / "data").rglob("*")]
                       if p.is_file()}
    before, production = written(), tracking.production_alias("people")

    argv = ["data", "add", "people", "--file", str(people_csv), "--target", "label", "--id", "person", "--replace"]
    for command in (argv, ["train", "people"]):
        capsys.readouterr()
        assert main(command) == 2, command  # the old code: 0, the erased records back
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "the ledger is missing" in err and "restore it from a backup" in err, err
        assert not any(r in err for r in ERASED)
    assert written() == before and tracking.production_alias("people") == production
    with pytest.raises(UnlearnError, match="the ledger is missing"):  # `model import --dataset`'s gate
        refuse_erased_training(workspace, data_store.load_dataset(workspace, "people"), imported=True)
    assert (elsewhere / "ledger.db").exists() == (gone == "moved")  # looking created no database
    capsys.readouterr()
    assert main(["ledger", "verify"]) == 1
    captured = capsys.readouterr()
    assert "the ledger is missing" in captured.out + captured.err, captured


def data_files(workspace) -> dict:
    """Every file of data/ and data.dvc, by content: what a refused command must leave as it was."""
    return {p: p.read_bytes() for p in [workspace / "data.dvc", *sorted((workspace / "data").rglob("*"))]
            if p.is_file()}


def refused(capsys, argv, *said: str, erased=ERASED) -> str:
    """`argv` exits 2 with one line that says each of `said` and names no erased record."""
    capsys.readouterr()
    assert main(argv) == 2, argv
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and all(s in err for s in said), err
    assert not any(r in err for r in erased), err
    return err


def test_records_deleted_by_unlearn_forget_outside_the_ledger_are_not_added_nor_trained_on_again(
        workspace, people_csv, capsys):
    """Red team MODERATE 4 (session 21): records a request made with `unlearn forget` (no `requests
    submit`) deleted were taken back by `data add --replace` with the original source, and `train`
    learned them: the gates knew ledger requests only. They read the forget run's certificate."""
    add_and_train(people_csv, capsys)
    assert main(["forget", str(request_file(workspace, id="OUT-2", delete_records=ERASED))]) == 0
    before, production = data_files(workspace), tracking.production_alias("people")
    argv = ["data", "add", "people", "--file", str(people_csv), "--target", "label", "--id", "person", "--replace"]
    refused(capsys, argv, "3 record(s) erased from data/people by completed request(s) OUT-2",
            "drop them from the source")  # the old code: 0, the three records back in data/people
    assert data_files(workspace) == before

    restore_from_backup(workspace, people_csv)
    refused(capsys, ["train", "people"], "3 record(s) erased by completed request(s) OUT-2 are back in data/people")
    assert tracking.production_alias("people") == production  # the old code: a model that learned them again

    import pandas as pd

    cleaned = workspace / "cleaned.csv"
    pd.read_csv(people_csv).query("person not in @ERASED").to_csv(cleaned, index=False)
    assert main([*argv[:3], "--file", str(cleaned), *argv[5:]]) == 0
    assert main(["train", "people"]) == 0


def test_images_deleted_by_unlearn_forget_outside_the_ledger_are_not_added_nor_trained_on_again(workspace, capsys):
    from tests.flows.test_erased_copies import shapes_add, trained_shapes, training_ids

    source, data = trained_shapes(workspace)
    erased = training_ids(data)
    assert main(["forget", str(request_file(workspace, id="OUT-I", model="shapes", delete_records=erased))]) == 0
    before = data_files(workspace)
    refused(capsys, [*shapes_add(source), "--replace"], "2 record(s)", "OUT-I", erased=erased)  # the old code: 0
    assert data_files(workspace) == before

    restored = data_store._build_table("shapes", None, None, None, images=source, size=16)  # put back by hand
    data_store.save_dataset(restored, data_store.dataset_dir(workspace, "shapes"))
    dvc.add_data(workspace)
    refused(capsys, ["train", "shapes", "--epochs", "15"], "2 record(s)", "back in data/shapes", "OUT-I",
            erased=erased)  # the old code: 0


def test_a_lost_record_of_a_forget_outside_the_ledger_refuses_until_its_request_file_records_it_again(
        workspace, people_csv, capsys):
    """The forget run's records deleted (or made to name another request) must neither switch the
    gate off nor lock the dataset for good: the gates refuse, naming the request and the run, and the
    request file given to `unlearn forget` again (vouched for by the version's salted request hash)
    records what it erased again."""
    add_and_train(people_csv, capsys)
    path = request_file(workspace, id="OUT-3", delete_records=ERASED)
    code, out = run_json(capsys, ["forget", str(path)])
    assert code == 0, out
    artifacts = workspace / "mlflow" / "artifacts" / out["run_id"] / "artifacts"
    (artifacts / "erasure.json").unlink()  # the run's three records of the request: lost, or altered
    (workspace / ".unlearn" / "run_certificates" / f"{out['run_id']}.json").unlink()
    certificate = artifacts / "certificate.json"
    body = json.loads(certificate.read_text())
    certificate.write_text(json.dumps({**body, "request": {**body["request"], "id": "OTHER"}}))
    argv = ["data", "add", "people", "--file", str(people_csv), "--target", "label", "--id", "person", "--replace"]
    before = data_files(workspace)
    for command in (argv, ["train", "people"]):  # the old code: 0 both, as with no record at all
        refused(capsys, command, "the record of request OUT-3", "is missing or names another request",
                out["run_id"], "give its request file to `unlearn forget` again")
    certificate.unlink()
    refused(capsys, argv, "the record of request OUT-3", "is missing")
    assert data_files(workspace) == before
    refused(capsys, ["audit", "people"], "the record of request OUT-3", "is missing")  # nor does the audit pass
    assert not list((workspace / ".unlearn").glob("audits/*"))  # stopped before its run: no record, no marker

    # another request under the same id does not vouch for it
    forged = workspace / "forged.yaml"
    forged.write_text(path.read_text().replace(f"- {ERASED[2]}\n", ""))
    assert forged.read_text() != path.read_text()
    refused(capsys, ["forget", str(forged)], "already used for a different request")
    refused(capsys, argv, "the record of request OUT-3", "is missing")
    # its own file does: the gates read what it erased again
    assert main(["forget", str(path)]) == 0
    refused(capsys, argv, "3 record(s) erased from data/people by completed request(s) OUT-3")
    assert data_files(workspace) == before


def rewritten_certificate_warning(run: str) -> str:
    return (f"warning: certificate.json of forget run {run} in MLflow is not the certificate this project kept for "
            f"it (.unlearn/run_certificates/{run}.json): the kept one is used")


def refused_after_warning(capsys, argv, run: str, *said: str) -> None:
    """`argv` exits 2 with the warning that the run's MLflow certificate was rewritten, then one line
    that says each of `said` and names no erased record."""
    capsys.readouterr()
    assert main(argv) == 2, argv
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == rewritten_certificate_warning(run) and len(lines) == 2, lines
    assert all(s in lines[1] for s in said) and not any(r in lines[1] for r in ERASED), lines


def test_records_deleted_outside_the_ledger_are_read_from_the_projects_signed_copy_not_from_mlflow(
        workspace, people_csv, capsys):
    """The gates read what a request made outside the ledger deleted from its forget run's MLflow
    artifacts: whoever can write to the tracking server (not `.unlearn/`) rewrote its certificate to
    name no record, and `data add --replace` took the three back. They read the project's signed copy
    of that certificate (.unlearn/run_certificates/); a copy that does not verify is refused. An
    artifact that differs from the copy was passed over in silence: each gate names its run in one
    warning line (data add, train, the audit; the old code: no warning)."""
    add_and_train(people_csv, capsys)
    code, out = run_json(capsys, ["forget", str(request_file(workspace, id="OUT-5", delete_records=ERASED))])
    assert code == 0, out
    run = out["run_id"]
    artifacts = workspace / "mlflow" / "artifacts" / run / "artifacts"
    for name in ("certificate.json", "erasure.json"):
        body = json.loads((artifacts / name).read_text())
        (artifacts / name).write_text(json.dumps({**body, "request": {**body["request"], "delete_records": []}}))
    argv = ["data", "add", "people", "--file", str(people_csv), "--target", "label", "--id", "person", "--replace"]
    before = data_files(workspace)
    # the old code: 0, the three back; then refused in silence
    refused_after_warning(capsys, argv, run, "3 record(s) erased from data/people by completed request(s) OUT-5")
    kept = workspace / ".unlearn" / "run_certificates" / f"{run}.json"
    signed = kept.read_text()
    kept.write_text(signed.replace(f'"{ERASED[0]}",', ""))
    assert kept.read_text() != signed
    for command in (argv, ["train", "people"]):
        refused(capsys, command, f"run_certificates/{run}.json does not verify")
    kept.write_text(signed)
    refused_after_warning(capsys, argv, run, "3 record(s) erased from data/people by completed request(s) OUT-5")
    assert data_files(workspace) == before

    restore_from_backup(workspace, people_csv)
    refused_after_warning(capsys, ["train", "people"], run, "3 record(s) erased by completed request(s) OUT-5",
                          "back in data/people")
    capsys.readouterr()
    code = main(["audit", "people", "--json"])
    captured = capsys.readouterr()
    audited = json.loads(captured.out)
    assert code == 1 and {c["name"]: c for c in audited["checks"]}["erased_records_absent"]["value"] == 3, audited
    assert captured.err.count(rewritten_certificate_warning(run)) == 1, captured.err


def test_records_deleted_outside_the_ledger_are_kept_out_of_the_dataset_of_the_model_they_were_deleted_from(
        workspace, people_csv, capsys):
    """The versions requests outside the ledger promoted are found by one filtered search of the
    registry (their `request_id` tag) instead of a listing of every model's versions: each is read
    with its own model and dataset, among several."""
    from tests.flows.conftest import synthetic_people

    add_and_train(people_csv, capsys)
    others = workspace / "others.csv"  # other people's records under the same ids P1000…
    synthetic_people(seed=1).to_csv(others, index=False)
    argv = ["data", "add", "other", "--file", str(others), "--target", "label", "--id", "person"]
    assert main(argv) == 0 and main(["train", "other"]) == 0
    assert main(["forget", str(request_file(workspace, id="OUT-5", model="other", delete_records=ERASED))]) == 0

    refused(capsys, [*argv, "--replace"], "3 record(s) erased from data/other by completed request(s) OUT-5")
    assert main(["train", "people"]) == 0  # data/people's own records under those ids are not OUT-5's
