"""What completed erasures removed, brought back under a new dataset name: the gates of tasks.erased
look in every dataset of the project for the images a deletion removed (by salted hash of id and
pixels, tasks.erased_rows) and the secrets a redaction removed (by salted fingerprint). A table's
deleted rows are not hashed into the ledger: such a hash gives the record back (the first test).

The defect (main d052d1d, real CLI, /tmp/gates2): after RED-1 redacted both secrets of `notes`,
`unlearn data add notes2 --file original.txt` and `unlearn train notes2` exited 0, and the same for
images. The gates read a dataset's own erasures only (ids are per dataset: ae94b49)."""

from __future__ import annotations

import pandas as pd

from flows.cli import main
from tasks import data as data_store
from tasks import dvc, ledger, tracking
from tests.flows.conftest import synthetic_people
from tests.flows.test_audit import comply_requests
from tests.flows.test_pipeline import add_and_train, request_file, run_json
from tests.flows.test_redacted_secrets_back import notes, raw_values, redact, without_secrets  # noqa: F401 (fixture)

ERASED = ["P1003", "P1004", "P1005"]
ADD_OTHER = ["data", "add", "other", "--target", "label", "--id", "person", "--file"]


def restore_by_hand(workspace, name: str, source, **options) -> None:
    """data/NAME written from `source` and `dvc add`ed, as a backup restored by hand: `data add` never sees it."""
    dataset = data_store._build_table(name, source, options.get("target"), options.get("id_column"),
                                      images=options.get("images"), size=options.get("size"))
    data_store.save_dataset(dataset, data_store.dataset_dir(workspace, name))
    dvc.add_data(workspace)


def test_a_table_deletion_keeps_nothing_in_the_ledger_that_gives_the_rows_back(workspace, people_csv, capsys):
    """A review reversed the row hashes a table deletion's entry used to keep (HMAC of the id, which
    the entry names in clear, and the cells): with the project's salt, every combination of the
    values the remaining data shows gave the three deleted people's rows back in 1.4 s. The entry
    keeps the ids and nothing of the content; the record is not found by trying every row the
    remaining data allows, under any hashing of the entry's own fields."""
    add_and_train(people_csv, capsys)
    comply_requests(workspace, capsys, {"id": "RES-1", "delete_records": ERASED})
    assert "erased_rows" not in (ledger.show(workspace, "RES-1").response or {})
    kept = (workspace / "ledger.db").read_bytes()  # everything the ledger holds, as stored
    assert b"erased_rows" not in kept
    deleted = pd.read_csv(people_csv).set_index("person").loc[ERASED]
    words = {v for v in deleted.select_dtypes("object").to_numpy().ravel() if len(str(v)) >= 4}
    assert words and not any(str(w).encode() in kept for w in words)  # no text cell of theirs, as written
    # the copy under another name is not recognised (the documented limit), its own dataset still is
    assert main([*ADD_OTHER, str(people_csv)]) == 0
    capsys.readouterr()
    assert main(["data", "add", "people", "--file", str(people_csv), "--target", "label", "--id", "person",
                 "--replace"]) == 2


def test_rows_equal_but_for_their_ids_and_other_records_sharing_the_ids_are_not_refused(
        workspace, people_csv, capsys):
    """UCI Adult holds rows identical but for their ids: an erased person's duplicate is another
    person's record. And another dataset's own records may carry the erased ids (ae94b49)."""
    add_and_train(people_csv, capsys)
    comply_requests(workspace, capsys, {"id": "RES-2", "delete_records": ERASED})
    frame = pd.read_csv(people_csv)
    duplicates = frame[frame["person"].isin(ERASED)].assign(person=[f"Q{i}" for i in range(len(ERASED))])
    with_duplicates = workspace / "with-duplicates.csv"
    pd.concat([frame[~frame["person"].isin(ERASED)], duplicates]).to_csv(with_duplicates, index=False)
    assert main([*ADD_OTHER, str(with_duplicates)]) == 0
    assert main(["data", "add", "people", "--file", str(with_duplicates), "--target", "label", "--id", "person",
                 "--replace"]) == 0  # the erasure's own dataset too: the ids are not the erased ones

    shared_ids = workspace / "shared-ids.csv"
    synthetic_people(seed=1).to_csv(shared_ids, index=False)  # P1000… again: other people
    assert main(["data", "add", "third", "--file", str(shared_ids), "--target", "label", "--id", "person"]) == 0
    assert run_json(capsys, ["train", "third"])[0] == 0


def shapes_add(source) -> list[str]:
    return ["data", "add", "shapes", "--images", str(source), "--size", "16"]


def trained_shapes(workspace):
    """data/shapes added from an image folder and trained on: (the folder, the dataset as stored)."""
    from tests.image_folders import write_image_folder
    from unlearning.images.data import load_images

    source = workspace / "incoming" / "shapes"
    write_image_folder(source)
    assert main(shapes_add(source)) == 0 and main(["train", "shapes", "--epochs", "15"]) == 0
    return source, load_images(workspace / "data" / "shapes")


def training_ids(data, count: int = 2) -> list[str]:
    return [i for i, train in zip(data.record_ids, data.train) if train][:count]


def test_an_erased_image_copied_under_a_new_dataset_name_is_refused(workspace, capsys):
    source, data = trained_shapes(workspace)
    erased = training_ids(data)
    comply_requests(workspace, capsys, {"id": "IMG-C1", "model": "shapes", "delete_records": erased})

    capsys.readouterr()
    assert main(["data", "add", "shapes2", "--images", str(source), "--size", "16"]) == 2  # the old code: 0
    err = capsys.readouterr().err.strip()
    assert "2 record(s) erased from data/shapes by completed request(s) IMG-C1" in err, err
    assert not any(i in err for i in erased), err
    # the same pictures at another size are other pixels: not told apart from new data, and taken
    assert main(["data", "add", "shapes3", "--images", str(source), "--size", "12"]) == 0


def test_images_deleted_by_a_batch_finished_after_a_kill_are_refused_under_a_new_name(workspace, capsys):
    """A comply run killed between the promotion and the ledger entries: the next run completes the
    members from the batch's manifest, which now keeps the images' hashes taken before the run (the
    data no longer holds them to hash). The old code completed them without `erased_rows`, and a
    copy of the images under another name was taken (exit 0)."""
    from tests.flows.test_faults import KILLED_AFTER_PROMOTION, run_killed

    source, data = trained_shapes(workspace)
    erased = training_ids(data)
    path = request_file(workspace, id="IMG-K1", model="shapes", delete_records=erased)
    assert run_json(capsys, ["requests", "submit", str(path)])[0] == 0
    run_killed(workspace, KILLED_AFTER_PROMOTION)
    assert ledger.show(workspace, "IMG-K1").status == "processing"

    code, out = run_json(capsys, ["comply"])
    assert code == 0 and out["recovered"][0]["outcome"] == "completed after an interrupted run", out
    assert len(ledger.show(workspace, "IMG-K1").response["erased_rows"]["rows"]) == 2
    capsys.readouterr()
    assert main(["data", "add", "shapes2", "--images", str(source), "--size", "16"]) == 2  # the old code: 0
    err = capsys.readouterr().err.strip()
    assert "2 record(s) erased from data/shapes by completed request(s) IMG-K1" in err, err


def test_entries_without_row_hashes_keep_the_check_by_id_on_their_own_dataset(workspace, people_csv):
    """A table deletion (and an image one completed before `erased_rows` was recorded) names its
    records by id alone: looked for on the dataset it was made on,
    not on another one."""
    from tasks.erased import back_in

    table = data_store._build_table("people", people_csv, "label", "person")
    older = {"RES-0": {"delete_records": ERASED, "made_on": "people"}}
    back = back_in(table, older, root=workspace)
    assert back.records == set(ERASED) and back.requests == {"RES-0"} and back.erased_from("people") == ""


def count_ledger_reads(monkeypatch) -> list:
    """Every read of the ledger's rows (tasks.ledger_db._rows_in_order, where each reader gets them),
    counted; the real reader still reads them."""
    from tasks import ledger_db, ledger_verify

    reads, real = [], ledger_db._rows_in_order

    def counted(root):
        reads.append(root)
        return real(root)

    monkeypatch.setattr(ledger_db, "_rows_in_order", counted)
    monkeypatch.setattr(ledger_verify, "_rows_in_order", counted)
    return reads


def test_a_corpus_holding_a_redacted_secret_under_a_new_dataset_name_is_not_added_nor_trained_on(
        workspace, notes, capsys, monkeypatch):
    from tests.flows.test_user_text import NOTES_STEPS

    source, secrets, fingerprint = notes
    redact(workspace, capsys, {"id": "RED-C1", "redact": {"findings": "all"}})
    reads = count_ledger_reads(monkeypatch)
    assert main(["data", "add", "notes", "--file", str(source), "--replace"]) == 2
    assert len(reads) == 1, reads  # the old code: 3 (to verify it, for the requests, for their runs)

    reads.clear()
    capsys.readouterr()
    assert main(["data", "add", "notes2", "--file", str(source)]) == 2  # the old code: 0
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and not captured.out, captured
    assert "2 secret(s) erased from data/notes by completed request(s) RED-C1" in err, err
    assert not any(v in err for v in [*raw_values(secrets), *fingerprint.values()]), err
    assert not (workspace / "data" / "notes2").exists()
    assert len(reads) == 1, reads

    restore_by_hand_text(workspace, "notes2", source)
    reads.clear()
    capsys.readouterr()
    assert main(["train", "notes2", "--preset", "tiny", "--steps", NOTES_STEPS]) == 2  # the old code: 0
    err = capsys.readouterr().err.strip()
    assert "2 secret(s) erased from data/notes by completed request(s) RED-C1 are back in data/notes2" in err, err
    assert "or submit the same erasure for a model of this dataset" in err, err  # a copy made before it: the other way out
    assert not any(v in err for v in raw_values(secrets)), err
    assert tracking.model_versions("notes2") == [] and len(reads) == 1, reads

    # a corpus without the secrets is taken under any name
    assert main(["data", "add", "notes3", "--file", str(without_secrets(workspace, source, secrets))]) == 0


def test_a_redaction_made_with_unlearn_forget_is_looked_for_under_a_new_dataset_name(workspace, notes, capsys):
    import yaml

    source, secrets, fingerprint = notes
    path = workspace / "OUT-RED-2.yaml"
    path.write_text(yaml.safe_dump({"id": "OUT-RED-2", "model": "notes", "method": "retrain",
                                    "redact": {"findings": [fingerprint["secret"]]}}))
    assert run_json(capsys, ["forget", str(path)])[0] == 0
    capsys.readouterr()
    assert main(["data", "add", "notes2", "--file", str(source)]) == 2  # the old code: 0
    err = capsys.readouterr().err.strip()
    assert "1 secret(s) erased from data/notes by completed request(s) OUT-RED-2" in err, err
    assert not any(v in err for v in [*raw_values(secrets), *fingerprint.values()]), err


def restore_by_hand_text(workspace, name: str, source) -> None:
    corpus = data_store._build_table(name, source, None, None)
    data_store.save_dataset(corpus, data_store.dataset_dir(workspace, name))
    dvc.add_data(workspace)
