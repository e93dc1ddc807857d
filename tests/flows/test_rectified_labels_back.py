"""Labels a completed fix_labels rectified, put back wrong: refused by the gates of tasks.erased like
the other erasures (`data add --replace`, `train`, `model import`, the audit's erased_records_absent).

The defect (main edc363b, real CLI): after FIX-1 corrected three labels, `unlearn data add people
--file <the original csv> --replace` exited 0, `train` learned the wrong labels again, and the audit
passed. The rectified labels are those of the data the production model was trained on (its
`data_version`, read from the DVC cache): a first attempt (2a380a1, reverted) read each request's
stored file, and locked the dataset for good once one was gone, and refused the pipeline's own data
after a later relabel by `unlearn forget` outside the ledger."""

from __future__ import annotations

import json

import pandas as pd

from flows.cli import main
from tasks import dvc, ledger, tracking
from tests.flows.test_audit import comply_requests
from tests.flows.test_erased_copies import restore_by_hand, shapes_add, trained_shapes
from tests.flows.test_pipeline import add_and_train, request_file, run_json

FIXED = ["P1012", "P1013", "P1014"]
ADD = ["data", "add", "people", "--target", "label", "--id", "person", "--replace", "--file"]


def rectify(workspace, people_csv, capsys) -> tuple[pd.DataFrame, dict[str, str]]:
    """people trained, then FIX-1 (submitted and complied) flips the labels of FIXED: (the original
    frame, the labels it gave)."""
    add_and_train(people_csv, capsys)
    frame = pd.read_csv(people_csv).set_index("person")
    flipped = {p: "no" if frame.at[p, "label"] == "yes" else "yes" for p in FIXED}
    comply_requests(workspace, capsys, {"id": "FIX-1", "fix_labels": flipped})
    return frame, flipped


def source(workspace, frame: pd.DataFrame, name: str, labels: dict[str, str] | None = None, drop=()) -> str:
    """A csv of `frame` with `labels` set and the records `drop` left out."""
    changed = frame.drop(index=list(drop)).copy()
    for record, label in (labels or {}).items():
        changed.loc[record, "label"] = label
    path = workspace / name
    changed.reset_index().to_csv(path, index=False)
    return str(path)


def data_files(workspace) -> dict:
    return {p: p.read_bytes() for p in [workspace / "data.dvc", *sorted((workspace / "data").rglob("*"))]
            if p.is_file()}


def refused(capsys, argv) -> str:
    """The one line a refused command wrote (exit 2, nothing on stdout)."""
    capsys.readouterr()
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert len(captured.err.strip().splitlines()) == 1 and not captured.out, captured
    return captured.err.strip().removeprefix("error: ")


def test_labels_a_completed_fix_labels_rectified_put_back_are_not_added_trained_on_nor_audited(
        workspace, people_csv, capsys):
    frame, flipped = rectify(workspace, people_csv, capsys)
    entries = json.dumps([e.to_dict() for e in ledger.show(workspace, "FIX-1").entries])
    before = data_files(workspace)

    err = refused(capsys, [*ADD, str(people_csv)])  # the old code: 0, the three wrong labels back
    assert err.startswith("3 wrong label(s) erased from data/people by completed request(s) FIX-1 "), err
    assert "keep the rectified labels" in err and "submit a fix_labels request" in err, err
    assert not any(p in err for p in FIXED), err
    assert data_files(workspace) == before  # nothing written
    assert json.dumps([e.to_dict() for e in ledger.show(workspace, "FIX-1").entries]) == entries

    restore_by_hand(workspace, "people", people_csv, target="label", id_column="person")
    err = refused(capsys, ["train", "people"])  # the old code: 0, production learned them again
    assert "3 wrong label(s) erased by completed request(s) FIX-1 are back in data/people" in err, err
    assert "keeps the rectified labels" in err and not any(p in err for p in FIXED), err

    production = tracking.production_alias("people")
    code, out = run_json(capsys, ["audit", "people"])
    assert code == 1, out  # the old code: 0, PASSED (production and the retraining agree)
    back = {c["name"]: c for c in out["checks"]}["erased_records_absent"]
    assert back["value"] == 3 and "3 wrong label(s)" in back["threshold"] and "FIX-1" in back["threshold"]
    assert out["promoted"] is None and tracking.production_alias("people") == production
    assert not any(p in json.dumps(out) for p in FIXED)
    [entry] = ledger.show(workspace, "FIX-1").audits
    assert entry["event"] == "audit_failed" and "wrong labels" in entry["reason"], entry


def test_a_request_file_gone_locks_nothing_and_the_gate_still_holds(workspace, people_csv, capsys):
    """Requirement (a): 2a380a1 read the rectified labels from the request's stored file; with it gone,
    `train`, `data add --replace` of correct data and the audit exited 2 for good."""
    frame, flipped = rectify(workspace, people_csv, capsys)
    ledger.request_file(workspace, "FIX-1").unlink()

    assert run_json(capsys, ["train", "people"])[0] == 0
    # the old code: 0 (nothing is read from the file here: the undo is refused all the same)
    assert "3 wrong label(s)" in refused(capsys, [*ADD, str(people_csv)])
    other = "P1020"
    assert main([*ADD, source(workspace, frame, "correct.csv", {**flipped, other: flipped[FIXED[0]]})]) == 0
    code, out = run_json(capsys, ["audit", "people"])
    assert code == 0 and out["passed"], out


def test_a_later_relabel_by_unlearn_forget_outside_the_ledger_is_the_rectified_label(
        workspace, people_csv, capsys):
    """Requirement (b): 2a380a1 refused `train` on the pipeline's own output, and failed every audit,
    once `unlearn forget` relabelled a record FIX-1 had rectified."""
    frame, flipped = rectify(workspace, people_csv, capsys)
    again = {FIXED[0]: frame.at[FIXED[0], "label"]}  # the record's first label, given back
    assert main(["forget", str(request_file(workspace, id="OUT-FIX", fix_labels=again))]) == 0

    assert run_json(capsys, ["train", "people"])[0] == 0
    code, out = run_json(capsys, ["audit", "people"])
    assert code == 0 and out["passed"], out
    # FIX-1's other two stay rectified: the original source is refused for them alone
    err = refused(capsys, [*ADD, str(people_csv)])  # the old code: 0
    assert err.startswith("2 wrong label(s) erased from data/people by completed request(s) FIX-1 "), err


def test_a_replace_changing_other_labels_or_dropping_a_rectified_record_is_taken(workspace, people_csv, capsys):
    frame, flipped = rectify(workspace, people_csv, capsys)
    others = {"P1020": "yes", "P1021": "no", "P1022": "yes"}
    assert main([*ADD, source(workspace, frame, "others.csv", {**flipped, **others})]) == 0
    assert main([*ADD, source(workspace, frame, "dropped.csv", {**flipped, **others}, drop=FIXED[:1])]) == 0
    assert run_json(capsys, ["train", "people"])[0] == 0


def test_nothing_is_refused_when_the_rectified_labels_cannot_be_read(workspace, people_csv, capsys):
    """No production model of the dataset, or its data version in neither the DVC cache nor the
    remote: nothing tells the rectified labels, and refusing would lock the dataset for good."""
    from tasks.erased import rectified_labels

    frame, flipped = rectify(workspace, people_csv, capsys)
    assert rectified_labels(workspace, "people", set(FIXED)) == flipped
    assert rectified_labels(workspace, "nobody", set(FIXED)) == {}  # no production model trained on it

    version = tracking.version_tags("people", tracking.production_alias("people"))["data_version"]
    for store in (workspace / ".dvc" / "cache" / "files" / "md5", workspace / dvc.STORAGE_DIR / "files" / "md5"):
        (store / version[:2] / version[2:]).unlink()  # the manifest: the version cannot be read
    assert rectified_labels(workspace, "people", set(FIXED)) == {}
    assert main([*ADD, str(people_csv)]) == 0


def recorded(workspace) -> tuple[dict, list, int]:
    """What a refused command must leave as it was: the data's files, the registry's versions and
    MLflow's runs."""
    client = tracking.client()
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return data_files(workspace), tracking.model_versions("people"), len(runs)


def test_a_rectification_outlives_the_retirement_of_the_model_it_was_made_on(workspace, people_csv, capsys):
    """Review (session 21): the rectified labels were read from the data of the dataset's production
    model alone, and `unlearn model retire` leaves none: the original source was added again,
    `train` learned the wrong labels, and that model became the reference (the audit passed, the
    rectification lost for good). A retired version was in production until then, and its data is
    kept: it still tells the rectified labels."""
    frame, flipped = rectify(workspace, people_csv, capsys)
    assert main(["model", "retire", "people"]) == 0
    assert tracking.production_version("people") is None

    before = recorded(workspace)
    err = refused(capsys, [*ADD, str(people_csv)])  # the old code: 0, the three wrong labels back
    assert err.startswith("3 wrong label(s) erased from data/people by completed request(s) FIX-1 "), err
    assert not any(p in err for p in FIXED), err
    assert recorded(workspace) == before  # nothing written

    restore_by_hand(workspace, "people", people_csv, target="label", id_column="person")
    before = recorded(workspace)
    err = refused(capsys, ["train", "people"])  # the old code: 0, a new production that learned them
    assert "3 wrong label(s) erased by completed request(s) FIX-1 are back in data/people" in err, err
    assert recorded(workspace) == before and tracking.production_version("people") is None

    # data keeping the rectified labels is taken and trained on, and is the reference from then on
    assert main([*ADD, source(workspace, frame, "correct.csv", flipped)]) == 0
    assert run_json(capsys, ["train", "people"])[0] == 0
    assert refused(capsys, [*ADD, str(people_csv)]).startswith("3 wrong label(s) erased from data/people ")


def test_an_image_relabelled_by_a_completed_request_is_not_added_back_with_its_old_class(workspace, capsys):
    from tests.image_folders import CLASSES

    images, data = trained_shapes(workspace)
    add = shapes_add(images)
    record = data.record_ids[0]
    other = next(c for c in CLASSES if c != data.classes[int(data.labels[0])])
    comply_requests(workspace, capsys, {"id": "IMG-F1", "model": "shapes", "fix_labels": {record: other}})

    err = refused(capsys, [*add, "--replace"])  # the old code: 0, the image's old class back
    assert err.startswith("1 wrong label(s) erased from data/shapes by completed request(s) IMG-F1 "), err
    assert record not in err and "keep the rectified labels" in err, err
