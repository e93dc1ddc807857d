"""A method added from one file is a method of the pipeline: named in UNLEARNFLOW_PLUGINS, the
example plugin (tests/contract/plugin_example.py) is chosen with `--method` in a real forget
(real Prefect, MLflow and DVC), recorded under its name and guarantee; a plugin file that cannot
be loaded is one line, exit 2, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from flows.cli import main
from unlearning import registry

PLUGIN = Path(__file__).resolve().parents[1] / "contract" / "plugin_example.py"


def forget_json(capsys, *argv: str) -> tuple[int, dict | str]:
    capsys.readouterr()
    code = main(["forget", *argv, "--json"])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if code == 0 else captured.err)


def test_a_plugin_method_is_chosen_with_method_in_a_real_forget(workspace, people_csv, capsys, monkeypatch):
    assert main(["data", "add", "people", "--file", str(people_csv), "--target", "label", "--id", "person"]) == 0
    assert main(["train", "people"]) == 0
    request = workspace / "PLUG-1.yaml"
    request.write_text(yaml.safe_dump({"id": "PLUG-1", "model": "people", "delete_records": ["P1010"]}))

    monkeypatch.setenv(registry.PLUGINS_ENV, str(workspace / "missing_plugin.py"))
    before = sorted(p.relative_to(workspace) for p in workspace.rglob("*") if ".dvc" not in p.parts)
    code, err = forget_json(capsys, str(request), "--method", "damped_newton")
    assert code == 2 and "missing_plugin.py" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.relative_to(workspace) for p in workspace.rglob("*") if ".dvc" not in p.parts) == before

    monkeypatch.setenv(registry.PLUGINS_ENV, str(PLUGIN))
    # half a Newton step leaves half of the request's pull on the optimum: the default evidence
    # checks (no model trained) refuse it, while agreement with a retrained model does not tell
    capsys.readouterr()
    code = main(["forget", str(request), "--method", "damped_newton"])
    assert code == 1 and "FAILED check distance_to_retrain_bound" in capsys.readouterr().out
    code, summary = forget_json(capsys, str(request), "--method", "damped_newton", "--verify", "reference")
    assert code == 0, summary
    assert summary["method"] == "damped_newton" and summary["guarantee"] == "empirical"
    assert summary["verified"] is True
