"""The `audit` flow on tables (real Prefect, MLflow, DVC, SQLite ledger): one retrained reference per
model covers every request completed since the last audit; one signed record; a ledger entry per
request; a failed audit (or --rebase) promotes the retrained model; bad input and faults."""

from __future__ import annotations

import json

import pandas as pd

from flows.cli import main
from tasks import audit, audit_record, ledger, state, tracking
from tests.flows.test_faults import run_killed
from tests.flows.test_pipeline import add_and_train, request_file, run_json
from unlearning.compliance import deadlines, mac_chain
from unlearning.compliance import ledger as lg

TABLE_AUDIT_CHECKS = {"agreement_with_retrain", "accuracy_gap_pts", "feature_map_of_current_data"}


def comply_requests(workspace, capsys, *requests: dict) -> dict:
    for content in requests:
        path = request_file(workspace, **content)
        assert run_json(capsys, ["requests", "submit", str(path)])[0] == 0
    code, out = run_json(capsys, ["comply"])
    assert code == 0, out
    return out


def versions(model: str) -> dict[str, dict]:
    tracking.connect(tracking_root())
    return {str(v.version): dict(v.tags) for v in tracking.model_versions(model)}


def tracking_root():
    import os
    from pathlib import Path

    return Path(os.environ["UNLEARN_ROOT"])


def test_an_audit_covers_every_request_since_the_last_one_with_one_signed_record(workspace, people_csv, capsys):
    add_and_train(people_csv, capsys)
    comply_requests(workspace, capsys, {"id": "AUD-1", "delete_records": ["P1003", "P1004"]},
                    {"id": "AUD-2", "delete_records": ["P1010"]})
    comply_requests(workspace, capsys, {"id": "AUD-3", "delete_records": ["P1020"]})
    escrows = audit.escrow_files(workspace, "people")
    assert len(escrows) == 2  # one per forget run (a comply batch is one run)

    code, out = run_json(capsys, ["audit", "people"])
    assert code == 0, out
    assert out["model"] == "people" and out["passed"] and not out["rebased"] and out["promoted"] is None
    assert sorted(out["covered_requests"]) == ["AUD-1", "AUD-2", "AUD-3"]
    assert {c["name"] for c in out["checks"]} == TABLE_AUDIT_CHECKS
    assert out["timings"]["retrain_s"] > 0
    record = workspace / out["record"]
    body = json.loads(record.read_text())
    assert sorted(r["id"] for r in body["requests"]) == ["AUD-1", "AUD-2", "AUD-3"]
    assert all(r["certificate"] and r["certificate_sha256"] for r in body["requests"])  # names the certificates
    assert main(["certificate", "verify", str(record)]) == 0
    for request_id in ("AUD-1", "AUD-2", "AUD-3"):
        shown = ledger.show(workspace, request_id)
        assert shown.status == "completed" and [a["event"] for a in shown.audits] == ["audited"]
        assert shown.audits[0]["audit"] == body["audit"]["id"]
    assert main(["ledger", "verify"]) == 0
    assert not audit.escrow_files(workspace, "people")  # deleted once the audit covering them completed
    assert tracking.production_alias("people") == "3"  # a passing audit leaves production as it is

    # nothing since the last audit: a clear no-op that writes nothing
    ledger_before = (workspace / "ledger.db").read_bytes()
    records_before = sorted((workspace / audit_record.AUDIT_DIR).iterdir())
    capsys.readouterr()
    assert main(["audit", "people"]) == 0
    assert "no request since its last audit" in capsys.readouterr().out
    assert (workspace / "ledger.db").read_bytes() == ledger_before
    assert sorted((workspace / audit_record.AUDIT_DIR).iterdir()) == records_before

    # a tampered record fails verification
    record.write_text(record.read_text().replace('"passed": true', '"passed": false', 1))
    capsys.readouterr()
    assert main(["certificate", "verify", str(record)]) == 1
    assert "INVALID" in capsys.readouterr().out


def test_a_table_audit_builds_its_problem_on_the_current_data_once(workspace, people_csv, capsys, monkeypatch):
    """The plan's reference job and the checks each built it (the stale-map test of an exact production
    a third time), a pandas pass over the table apiece: ~1 s each on Adult."""
    from unlearning.tabular import erasure

    add_and_train(people_csv, capsys)
    comply_requests(workspace, capsys, {"id": "ONE-1", "delete_records": ["P1003"]})
    built, build_problem = [], erasure.build_problem

    def counted(*args, **kwargs):  # the real build, counted
        built.append(args[2].name)
        return build_problem(*args, **kwargs)

    monkeypatch.setattr(erasure, "build_problem", counted)
    code, out = run_json(capsys, ["audit", "people"])
    assert code == 0 and out["passed"] and {c["name"] for c in out["checks"]} == TABLE_AUDIT_CHECKS, out
    assert len(built) == 1, built


def test_a_table_audit_keeps_its_problem_only_while_it_reads_it(workspace, people_csv, capsys, monkeypatch):
    """The plan kept the Problem (D and D' encoded, n×d float64 apiece) for the whole audit: every
    model's plan lives until the last model's audit ends. It is dropped once the checks have read it,
    and where production is exact and nothing is retrained, once the stale-map test has."""
    import flows.audit

    add_and_train(people_csv, capsys)
    comply_requests(workspace, capsys, {"id": "KEEP-1", "delete_records": ["P1003"]})  # a fast update
    judged, judge = [], flows.audit.judge

    def judged_then_seen(root, plan):  # the real judge; what the plan holds once it is done
        judgement = judge(root, plan)
        judged.append(plan.table)
        return judgement

    monkeypatch.setattr(flows.audit, "judge", judged_then_seen)
    code, out = run_json(capsys, ["audit", "people"])
    assert code == 0 and out["passed"] and out["timings"]["retrain_s"] > 0, out
    assert judged == [None]  # the old code: the Problem, kept until the audit's end

    comply_requests(workspace, capsys, {"id": "KEEP-2", "delete_records": ["P1010"], "method": "retrain"})
    plan = audit.plan_audit(workspace, "people")
    assert plan.exact and plan.job is None
    assert plan.table is None  # the old code: built for the stale-map test, kept for nothing


def test_rebase_promotes_the_retrained_model_with_guarantee_exact_and_purges_the_superseded(
        workspace, people_csv, capsys):
    add_and_train(people_csv, capsys, "--certified")
    comply_requests(workspace, capsys, {"id": "REB-1", "delete_records": ["P1003"], "method": "certified"})
    assert versions("people")["2"]["guarantee"] == "certified"

    code, out = run_json(capsys, ["audit", "--rebase"])  # no MODEL: every model due
    assert code == 0, out
    [done] = out["audits"]
    assert set(out) == {"audits", "recovered", "message"} and out["recovered"] == []
    assert done["passed"] and done["rebased"] and done["promoted"] == "3"
    assert tracking.production_alias("people") == "3"
    tags = versions("people")
    assert tags["3"]["guarantee"] == "exact" and tags["3"]["budget_used"] == "0.0"
    assert tags["3"]["audit_id"] == done["audit"]
    assert "purged" in tags["2"] and "purged" in tags["1"]  # superseded versions purged as a forget does
    assert main(["certificate", "verify", str(workspace / done["record"])]) == 0
    # the record names the promoted version's run, and the project signed that it is exact (an audit of it
    # retrains nothing: test_an_audit_of_a_model_retrained_on_the_current_data_retrains_nothing)
    [promoted] = [v for v in tracking.model_versions("people") if str(v.version) == "3"]
    assert json.loads((workspace / done["record"]).read_text())["promoted"]["run_id"] == promoted.run_id
    assert state.attested_exact(workspace, state.exact_facts("people", "3", promoted.run_id, tags["3"]["data_after"],
                                                             tags["3"]["dataset_digest"],
                                                             tracking.load_version("people", "3")[1]))


def test_an_audit_of_a_model_retrained_on_the_current_data_retrains_nothing(workspace, people_csv, capsys):
    add_and_train(people_csv, capsys)
    comply_requests(workspace, capsys, {"id": "EXA-1", "delete_records": ["P1003"]})  # a fast update
    comply_requests(workspace, capsys, {"id": "EXA-2", "delete_records": ["P1010"], "method": "retrain"})
    assert versions("people")["3"]["guarantee"] == "exact"
    certificates = {i: json.loads((workspace / ".unlearn" / "certificates" / f"{i}.json").read_text())
                    for i in ("EXA-1", "EXA-2")}  # what the signed certificates say of the two versions
    assert [certificates[i]["config"]["retrained_as_trained"] for i in ("EXA-1", "EXA-2")] == [False, True]

    code, out = run_json(capsys, ["audit", "people", "--rebase"])
    assert code == 0, out
    assert sorted(out["covered_requests"]) == ["EXA-1", "EXA-2"]
    assert out["passed"] and out["decided"] and out["promoted"] is None and not out["rebased"]
    assert [c["name"] for c in out["checks"]] == ["fast_updates_since_exact_model"]
    assert out["timings"]["retrain_s"] == 0  # the old code retrained the same model again
    assert tracking.production_alias("people") == "3" and len(versions("people")) == 3  # nothing registered
    for request_id in ("EXA-1", "EXA-2"):
        assert [a["event"] for a in ledger.show(workspace, request_id).audits] == ["audited"]
    assert main(["certificate", "verify", str(workspace / out["record"])]) == 0
    assert not audit.escrow_files(workspace, "people")

    # a fast update since: the production model is no longer exact, and the next audit retrains
    comply_requests(workspace, capsys, {"id": "EXA-3", "delete_records": ["P1020"]})
    code, out = run_json(capsys, ["audit", "people"])
    assert code == 0, out
    assert out["covered_requests"] == ["EXA-3"] and out["timings"]["retrain_s"] > 0
    assert {c["name"] for c in out["checks"]} == TABLE_AUDIT_CHECKS

    # a training on the current data is exact too, but not a retraining the pipeline made from the
    # request's corrected data (it may have been fed the removed data again): the audit retrains
    comply_requests(workspace, capsys, {"id": "EXA-4", "delete_records": ["P1030"]})
    assert run_json(capsys, ["train", "people"])[0] == 0
    code, out = run_json(capsys, ["audit", "people"])
    assert code == 0, out
    assert out["covered_requests"] == ["EXA-4"] and out["timings"]["retrain_s"] > 0


def forge_exact_tags(workspace, model: str) -> None:
    """Tag the model's production version as the retraining on the current data, as anyone who can
    write to the tracking server could."""
    import mlflow

    from tasks.common import RETRAINED_AS_TRAINED, dataset_digest
    from tasks.dvc import data_version

    production = tracking.production_alias(model)
    for key, value in {"guarantee": "exact", RETRAINED_AS_TRAINED: "true", "data_after": data_version(workspace),
                       "dataset_digest": dataset_digest(workspace, model)}.items():
        mlflow.MlflowClient().set_model_version_tag(model, production, key, value)


def test_tags_set_on_the_tracking_server_do_not_make_a_fast_update_exact_for_the_audit(workspace, people_csv, capsys):
    """Whoever can write to MLflow can tag a fast-updated production as a retraining on the current
    data; the audit then took it as exact, retrained nothing and signed a passing record. It now
    needs the project's signed word, kept beside the signing key (tasks.state.attest_exact)."""
    add_and_train(people_csv, capsys)
    comply_requests(workspace, capsys, {"id": "TAG-1", "delete_records": ["P1003"]})  # a fast update
    assert versions("people")[tracking.production_alias("people")]["guarantee"] != "exact"
    forge_exact_tags(workspace, "people")

    capsys.readouterr()
    code = main(["audit", "people", "--json"])
    console = capsys.readouterr()
    out = json.loads(console.out)
    assert code == 0 and out["covered_requests"] == ["TAG-1"], out
    assert out["timings"]["retrain_s"] > 0  # the old code: 0, its one check `fast_updates_since_exact_model`
    assert {c["name"] for c in out["checks"]} == TABLE_AUDIT_CHECKS
    assert "MLflow tags say it was retrained on the current data, but no word signed with this project's key" \
        in console.err


def bundle_folder(model: str, version: str):
    """Where the local tracking store keeps a version's bundle files (artifacts/bundle of its logged model)."""
    import mlflow
    from urllib.parse import urlparse
    from pathlib import Path

    client = mlflow.MlflowClient()
    logged = client.get_logged_model(client.get_model_version(model, version).source.removeprefix("models:/"))
    return Path(urlparse(logged.artifact_location).path) / "artifacts" / "bundle"  # its MLmodel beside it


def test_files_swapped_on_the_tracking_server_do_not_pass_as_the_exact_retraining(workspace, people_csv, capsys,
                                                                                    tmp_path_factory):
    """The signed word that a version is exact binds its files as logged: the trained model's weights
    copied over the exact retraining's (what a writer of the tracking server could do) make the audit
    retrain and judge them, where a word on ids and data alone let it sign a pass unchecked."""
    import shutil

    add_and_train(people_csv, capsys)
    trained = tmp_path_factory.mktemp("kept") / "bundle"
    shutil.copytree(bundle_folder("people", "1"), trained)  # the trained model, which saw P1003 (purged below)
    comply_requests(workspace, capsys, {"id": "SWAP-1", "delete_records": ["P1003"], "method": "retrain"})
    assert tracking.production_alias("people") == "2" and versions("people")["2"]["guarantee"] == "exact"
    swapped = bundle_folder("people", "2")
    shutil.rmtree(swapped)
    shutil.copytree(trained, swapped)

    capsys.readouterr()
    code = main(["audit", "people", "--json"])
    console = capsys.readouterr()
    out = json.loads(console.out)
    # the trained model's map holds P1003's statistics: the audit fails it (it passed on agreement
    # before the map was checked) and promotes its retrained model
    assert code == 1 and out["covered_requests"] == ["SWAP-1"], out
    assert out["timings"]["retrain_s"] > 0  # with the word on ids and data alone: 0, and a pass unchecked
    assert {c["name"] for c in out["checks"]} == TABLE_AUDIT_CHECKS
    assert [c["name"] for c in out["checks"] if not c["passed"]] == ["feature_map_of_current_data"]
    assert "no word signed with this project's key vouches for it and its files as logged" in console.err


def test_a_failed_audit_promotes_the_retrained_model_and_names_the_request_that_fell_short(
        workspace, people_csv, capsys):
    add_and_train(people_csv, capsys)
    people = pd.read_csv(people_csv)
    deleted = people.loc[people["label"] == "yes", "person"].head(150).tolist()  # a quarter of the rows, one class
    path = request_file(workspace, id="SHORT-1", delete_records=deleted)
    assert run_json(capsys, ["requests", "submit", str(path)])[0] == 0
    assert run_json(capsys, ["comply", "--keep-superseded", "30"])[0] == 0
    # An update that fell short, simulated at its extreme: production served the model from before
    # the request (kept beyond use), which still holds the deleted records.
    tracking.connect(workspace)
    tracking.promote("people", "1")

    code, out = run_json(capsys, ["audit", "people"])
    assert code == 1, out
    assert not out["passed"] and out["promoted"] == "3" and not out["rebased"]
    assert tracking.production_alias("people") == "3"
    assert versions("people")["3"]["guarantee"] == "exact"
    assert out["shortfall"] and all(s["requests"] == ["SHORT-1"] for s in out["shortfall"])
    [entry] = ledger.show(workspace, "SHORT-1").audits
    assert entry["event"] == "audit_failed" and "fell short" in entry["reason"]
    body = json.loads((workspace / out["record"]).read_text())
    assert body["promoted"]["version"] == "3" and body["shortfall"] == out["shortfall"]
    assert main(["certificate", "verify", str(workspace / out["record"])]) == 0
    assert main(["ledger", "verify"]) == 0


def test_audit_of_an_unknown_model_is_refused_in_one_line_and_writes_nothing(workspace, people_csv, capsys):
    add_and_train(people_csv, capsys)
    snapshot = lambda: {p.relative_to(workspace): p.read_bytes() for p in workspace.rglob("*")  # noqa: E731
                        if p.is_file() and ".prefect" not in p.parts and "tmp" not in p.parts}
    before = snapshot()
    capsys.readouterr()
    assert main(["audit", "nosuchmodel"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "unknown model 'nosuchmodel'" in err
    assert snapshot() == before


def test_ledger_audit_entries_only_follow_a_completed_request():
    entry = mac_chain.chain_entry(None, "R", "received", "received", "2026-01-01T00:00:00+00:00",
                                  {"received": "2026-01-01T00:00:00+00:00", "channel": "email",
                                   "policy": deadlines.DeadlinePolicy.gdpr().to_dict(), "deadline": "2026-02-01",
                                   "request": {"model": "m", "kinds": ["delete_records"]}, "request_hash": "h"},
                                  key=b"k")
    record = lg.start_record(entry)
    try:
        lg.event_data(record, "audited", {"audit": "A", "record": "r", "record_sha256": "s"}, deadlines.utc_now())
    except Exception as exc:  # noqa: BLE001
        assert "only a completed request can be audited" in str(exc)
    else:
        raise AssertionError("an open request was audited")


KILLED_BEFORE_PROMOTION = """
import os, sys
import tasks.common
def killed(*args, **kwargs):
    os._exit(137)
tasks.common.promote = killed  # killed after the retrained model was registered and the record written
from flows.cli import main
sys.exit(main(["audit", "people", "--rebase"]))
"""

KILLED_AFTER_PROMOTION = """
import os, sys
import tasks.audit_record
def killed(*args, **kwargs):
    os._exit(137)
tasks.audit_record.record_verdicts = killed  # killed after the promotion, before any ledger entry
from flows.cli import main
sys.exit(main(["audit", "people", "--rebase"]))
"""


# `unlearn audit MODEL --json`: one object, these keys, whether it audited, recovered a killed run or did nothing
MODEL_JSON_KEYS = {"model", "audit", "covered_requests", "passed", "decided", "undecided_reason", "checks", "rebased",
                   "promoted", "why_promoted", "shortfall",
                   "record", "metrics", "timings", "superseded", "ledger_entries", "escrow_deleted",
                   "escrow_unreadable", "production_version", "teacher", "not_promoted", "recovered", "message"}


def test_an_audit_killed_before_its_promotion_is_rolled_back_and_redone_by_the_next_run(
        workspace, people_csv, capsys):
    add_and_train(people_csv, capsys)
    comply_requests(workspace, capsys, {"id": "KILL-1", "delete_records": ["P1003"]})
    run_killed(workspace, KILLED_BEFORE_PROMOTION)
    # what the kill left: a registered candidate, a written record, the open marker; production unmoved
    assert tracking.production_alias("people") == "2" and "3" in versions("people")
    [killed_record] = list((workspace / audit_record.AUDIT_DIR).glob("*.json"))
    assert ledger.show(workspace, "KILL-1").audits == []

    code, out = run_json(capsys, ["audit", "people", "--rebase"])
    assert code == 0, out
    assert set(out) == MODEL_JSON_KEYS  # was the bare audit, without `recovered`
    assert {"id": killed_record.stem, "model": "people", "outcome": "rolled back"} in out["recovered"]
    assert out["message"] == "model people: audit passed"
    assert out["promoted"] == "4" and tracking.production_alias("people") == "4"
    assert "rolled_back" in versions("people")["3"]  # the half-done audit's candidate, never promoted
    records = list((workspace / audit_record.AUDIT_DIR).glob("*.json"))
    assert [p.name for p in records] == [f"{out['audit']}.json"]  # the killed run's record was withdrawn
    assert not list((workspace / audit_record.AUDIT_DIR).glob("*.open"))
    assert [a["audit"] for a in ledger.show(workspace, "KILL-1").audits] == [out["audit"]]

    code, idle = run_json(capsys, ["audit", "people"])  # nothing to do, nothing to recover: the same keys
    assert code == 0 and set(idle) == MODEL_JSON_KEYS, idle
    assert idle["recovered"] == [] and idle["audit"] is None and idle["covered_requests"] == []
    assert idle["message"] == "model people: no request since its last audit; nothing to audit"


def test_an_audit_killed_after_its_promotion_is_finished_by_the_next_run(workspace, people_csv, capsys):
    add_and_train(people_csv, capsys)
    comply_requests(workspace, capsys, {"id": "KILL-2", "delete_records": ["P1003"]})
    run_killed(workspace, KILLED_AFTER_PROMOTION)
    assert tracking.production_alias("people") == "3"
    assert ledger.show(workspace, "KILL-2").audits == [] and audit.escrow_files(workspace, "people")
    [record] = list((workspace / audit_record.AUDIT_DIR).glob("*.json"))

    code, out = run_json(capsys, ["audit", "people"])  # the recovery finishes the audit: nothing left to audit
    assert code == 0 and set(out) == MODEL_JSON_KEYS, out  # was {"audits": [], "recovered": [...]}
    assert out["recovered"] == [{"id": record.stem, "model": "people", "outcome": "completed"}]
    assert out["audit"] is None and out["message"] == "model people: no request since its last audit; nothing to audit"
    assert [a["audit"] for a in ledger.show(workspace, "KILL-2").audits] == [record.stem]
    assert not audit.escrow_files(workspace, "people") and not list((workspace / audit_record.AUDIT_DIR).glob("*.open"))
    assert tracking.production_alias("people") == "3" and "purged" in versions("people")["2"]
    assert main(["certificate", "verify", str(record)]) == 0
    code, every = run_json(capsys, ["audit"])  # without MODEL: `audits`, `recovered`, `message`, always
    assert code == 0 and every == {"audits": [], "recovered": [],
                                   "message": "no model has a request since its last audit; nothing to audit"}


def test_the_weekly_audit_deployment_runs_the_audit_flow():
    import importlib
    from pathlib import Path

    import yaml

    spec = yaml.safe_load((Path(__file__).resolve().parents[2] / "prefect.yaml").read_text())
    [weekly] = [d for d in spec["deployments"] if d["name"] == "weekly"]
    module, _, name = weekly["entrypoint"].partition(":")
    flow = getattr(importlib.import_module(module), name)
    # --rebase: the fast updates after a passing audit start from its retrained model (docs/text.md)
    assert flow.name == "audit" and weekly["parameters"] == {"root": "{{ $UNLEARN_ROOT }}", "rebase": True}
    assert [s["cron"] for s in weekly["schedules"]] == ["0 3 * * 0"]


def test_with_a_dask_task_runner_every_models_audit_reference_is_retrained_ahead(workspace, capsys):
    import pytest

    pytest.importorskip("prefect_dask")
    from tests.flows.conftest import synthetic_people

    for name, seed in (("people", 0), ("staff", 1)):
        csv = workspace / f"{name}.csv"
        synthetic_people(seed=seed).to_csv(csv, index=False)
        assert main(["data", "add", name, "--file", str(csv), "--target", "label", "--id", "person"]) == 0
        assert main(["train", name]) == 0
    comply_requests(workspace, capsys, {"id": "DSK-1", "delete_records": ["P1003"]},
                    {"id": "DSK-2", "model": "staff", "delete_records": ["P1004"]})
    forge_exact_tags(workspace, "people")  # planned twice (the prefetch plans again): warned once

    capsys.readouterr()
    code = main(["audit", "--task-runner", "dask", "--workers", "2", "--json"])
    console = capsys.readouterr()
    out = json.loads(console.out)
    assert code == 0, out
    assert console.err.count("no word signed with this project's key vouches for it") == 1
    by_model = {a["model"]: a for a in out["audits"]}
    assert set(by_model) == {"people", "staff"}
    assert {m: a["metrics"]["reference"] for m, a in by_model.items()} == {"people": "prefetched",
                                                                            "staff": "prefetched"}
    assert by_model["people"]["covered_requests"] == ["DSK-1"] and by_model["staff"]["covered_requests"] == ["DSK-2"]


def test_retiring_a_model_deletes_the_escrow_no_audit_will_read(workspace, people_csv, capsys):
    add_and_train(people_csv, capsys)
    path = request_file(workspace, id="RET-1", delete_records=["P1003"])
    assert run_json(capsys, ["forget", str(path)])[0] == 0  # outside the ledger: its escrow marks it for audit
    assert len(audit.escrow_files(workspace, "people")) == 1
    code, out = run_json(capsys, ["model", "retire", "people"])
    assert code == 0, out
    assert not audit.escrow_files(workspace, "people")
    folder = state.escrow_dir(workspace, "people")
    assert not folder.exists() or list(folder.iterdir()) == []  # hidden and pending files included
    assert any(e["kind"] == "audit_escrow" and e["action"] == "purged" for e in out["purge"])


def test_a_cadence_audits_a_model_once_enough_requests_wait_or_the_oldest_is_old_enough(
        workspace, people_csv, capsys):
    add_and_train(people_csv, capsys)
    comply_requests(workspace, capsys, {"id": "CAD-1", "delete_records": ["P1003"]})
    ledger_before = (workspace / "ledger.db").read_bytes()

    capsys.readouterr()
    assert main(["audit", "people", "--min-requests", "2"]) == 0  # one request waits: not due yet
    assert ("model people: 1 request(s) since its last audit, fewer than 2 requests waiting, none older than 30 days"
            "; nothing to audit" in capsys.readouterr().out)  # --max-age defaults to 30 days with --min-requests
    assert main(["audit", "--min-requests", "2", "--max-age", "30"]) == 0  # every model: none due
    assert "no model is due: fewer than 2 requests waiting, none older than 30 days" in capsys.readouterr().out
    assert (workspace / "ledger.db").read_bytes() == ledger_before and audit.escrow_files(workspace, "people")
    assert not (workspace / audit_record.AUDIT_DIR).exists() or not list((workspace / audit_record.AUDIT_DIR).glob("*.json"))

    # the oldest waiting request is older than --max-age (a second here): due although fewer wait
    code, out = run_json(capsys, ["audit", "--min-requests", "50", "--max-age", "0.00001"])
    assert code == 0 and [a["covered_requests"] for a in out["audits"]] == [["CAD-1"]], out
    capsys.readouterr()
    assert main(["audit", "--min-requests", "2", "--max-age", "30"]) == 0  # nothing waits at all: says so
    assert "no model has a request since its last audit; nothing to audit" in capsys.readouterr().out

    # one comply batch of two (one escrow) and one forget outside the ledger: three requests wait
    comply_requests(workspace, capsys, {"id": "CAD-2", "delete_records": ["P1004"]},
                    {"id": "CAD-3", "delete_records": ["P1005"]})
    path = request_file(workspace, id="CAD-4", delete_records=["P1006"])
    assert run_json(capsys, ["forget", str(path)])[0] == 0
    assert audit.pending_requests(workspace, "people")[0] == 3
    assert main(["audit", "people", "--min-requests", "4"]) == 0  # not yet
    code, out = run_json(capsys, ["audit", "people", "--min-requests", "3"])  # three wait: due
    assert code == 0 and sorted(out["covered_requests"]) == ["CAD-2", "CAD-3", "CAD-4"], out


def test_max_age_alone_audits_a_model_once_its_oldest_request_is_that_old(workspace, people_csv, capsys):
    """`--max-age DAYS` alone was accepted and did nothing: beside the default --min-requests 1 every
    model with a request was due at once. Alone it is now an age-only cadence; beside an explicit
    --min-requests 1, where no age could matter, it is refused."""
    add_and_train(people_csv, capsys)
    comply_requests(workspace, capsys, {"id": "AGE-1", "delete_records": ["P1003"]})
    ledger_before = (workspace / "ledger.db").read_bytes()

    code, out = run_json(capsys, ["audit", "people", "--max-age", "30"])  # one request, seconds old: not due
    assert code == 0 and out["audit"] is None, out  # was: audited at once
    assert out["message"] == ("model people: 1 request(s) since its last audit, none older than 30 days; "
                              "nothing to audit")
    assert (workspace / "ledger.db").read_bytes() == ledger_before
    capsys.readouterr()
    assert main(["audit", "people", "--min-requests", "1", "--max-age", "30"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--max-age has no effect with --min-requests 1" in err, err
    assert (workspace / "ledger.db").read_bytes() == ledger_before

    code, out = run_json(capsys, ["audit", "people", "--max-age", "0.00001"])  # older than that: due
    assert code == 0 and out["covered_requests"] == ["AGE-1"], out


def test_a_bad_cadence_is_refused_in_one_line_and_writes_nothing(workspace, people_csv, capsys):
    add_and_train(people_csv, capsys)
    comply_requests(workspace, capsys, {"id": "CAD-B", "delete_records": ["P1003"]})
    ledger_before = (workspace / "ledger.db").read_bytes()
    for args, wrong in ((["--min-requests", "0"], "--min-requests must be a whole number ≥ 1, got '0'"),
                        (["--min-requests", "2.5"], "--min-requests must be a whole number ≥ 1, got '2.5'"),
                        (["--max-age", "-1"], "--max-age must be a positive number of days, got '-1'"),
                        (["--max-age", "nan"], "--max-age must be a positive number of days, got 'nan'")):
        capsys.readouterr()
        assert main(["audit", "people", *args]) == 2, args
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and wrong in err, err
    assert (workspace / "ledger.db").read_bytes() == ledger_before and audit.escrow_files(workspace, "people")
