"""Two fast text updates in a row (real Prefect, MLflow, DVC; a tiny char-LSTM): the second keeps
the first request's secret down and measures it again from the sealed escrow (stacked fast updates
otherwise bring earlier secrets back, bench.stream), names both in its evidence record by masked
form and fingerprint only, and writes no raw secret anywhere or prints one."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import yaml

from flows.detect import detect_flow
from tasks import audit, state
from tests.flows.test_pipeline import run_json
from tests.flows.test_text_pipeline import files_containing
from tests.flows.test_user_text import notes_corpus


def fast_request(workspace: Path, detected: dict, request_id: str, fingerprint: str) -> Path:
    path = workspace / f"{request_id}.yaml"
    path.write_text(yaml.safe_dump({**detected, "id": request_id, "method": "suppress",
                                    "redact": {**detected["redact"], "findings": [fingerprint]}}))
    return path


def verification_record(request_id: str) -> dict:
    [run] = mlflow.search_runs(search_all_experiments=True, output_format="list",
                               filter_string=f"tags.step = 'verify' and tags.request_id = '{request_id}'")
    return json.loads(Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id,
                                                               artifact_path="verification.json")).read_text())


def test_a_second_fast_update_keeps_the_first_secret_down_and_measures_it(workspace, tmp_path_factory, capsys):
    source = tmp_path_factory.mktemp("user-files") / "notes.txt"
    text, secrets = notes_corpus()
    source.write_text(text, encoding="utf-8")
    raw = set(secrets.values()) | {secrets["card"].replace(" ", "")}
    assert run_json(capsys, ["data", "add", "notes", "--file", str(source)])[0] == 0
    assert run_json(capsys, ["train", "notes", "--preset", "tiny", "--seconds", "2"])[0] == 0
    detected = detect_flow(root=str(workspace), dataset="notes")
    prints = {r["detector"]: r["fingerprint"] for r in detected["secrets"]}
    request = yaml.safe_load(Path(detected["request"]).read_text())

    code, first = run_json(capsys, ["forget", str(fast_request(workspace, request, "TXT-1", prints["card"]))])
    assert code == 0 and first["verified"] and first["guarantee"] == "empirical", first
    assert first["metrics"]["earlier_secrets"] == 0  # a trained model: no chain yet
    code, second = run_json(capsys, ["forget", str(fast_request(workspace, request, "TXT-2", prints["secret"]))])
    assert code == 0 and second["guarantee"] == "empirical", second

    rows = {r["fingerprint"]: r for r in second["secrets"]}
    assert set(rows) == {prints["card"], prints["secret"]}  # the earlier secret is measured again
    card = rows[prints["card"]]
    assert card["earlier_requests"] == ["TXT-1"] and card["before"] is None
    assert card["masked"].endswith(secrets["card"][-4:]) and card["masked"] != secrets["card"]
    assert "earlier_requests" not in rows[prints["secret"]]
    # kept down: the check every row is judged by holds for the first secret after the second update
    assert card["excess_bits"] <= 2.0 and card["relearned_excess_bits"] <= 2.0 and card["regenerated"] == 0
    assert second["metrics"]["earlier_secrets"] == 1 and second["metrics"]["secrets"] == 1
    logged = verification_record("TXT-2")  # the evidence record in MLflow names both, masked
    assert {r["fingerprint"]: r["masked"] for r in logged["secrets"]} == {f: r["masked"] for f, r in rows.items()}
    [update_run] = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                      filter_string="tags.request_id = 'TXT-2' and params.earlier_secrets = '1'")
    assert update_run.data.params["method"] == "suppress"  # its hinge took the earlier secret too

    # the new version keeps its chain (run ids, no value): both forget runs, each escrow still held
    production = mlflow.MlflowClient().get_model_version_by_alias("notes", "production")
    chain = state.load_evidence(workspace, production.run_id)[state.CHAIN_KEY]
    assert chain == [first["run_id"], second["run_id"]]
    assert [p.stem for p in audit.escrow_files(workspace, "notes")] == sorted(chain)

    assert files_containing(workspace, raw) == []  # MLflow, ledger, private state: no raw value
    console = capsys.readouterr()
    assert not any(s in console.out or s in console.err for s in raw)
