"""The project's signed word that a model version is a retraining on its own schedule
(tasks.state.attest_exact): what an audit needs, beside the version's MLflow tags, to take it as
exact without retraining."""

from __future__ import annotations

import json

from tasks import state


def facts(**changed) -> dict:
    return {**state.exact_facts("people", "3", "run-3", "data-v2", "digest-2", "files-2"), **changed}


def test_the_word_holds_only_for_the_facts_it_was_signed_for(tmp_path):
    state.attest_exact(tmp_path, facts())
    assert state.attested_exact(tmp_path, facts())
    for other in ({"version": "4"}, {"data_version": "data-v3"}, {"dataset_digest": "digest-3"}, {"model": "other"},
                  {"model_sha256": "files-swapped"}):
        assert not state.attested_exact(tmp_path, facts(**other)), other
    assert not state.attested_exact(tmp_path, facts(run_id="run-4"))  # another version: no word at all


def test_an_altered_or_foreign_word_does_not_hold(tmp_path, monkeypatch):
    state.attest_exact(tmp_path, facts())
    path = tmp_path / ".unlearn" / "exact" / "run-3.json"
    document = json.loads(path.read_text())
    path.write_text(json.dumps({**document, "data_version": "data-v9"}))  # edited to fit newer data
    assert not state.attested_exact(tmp_path, facts(data_version="data-v9"))
    path.write_text("{not json")
    assert not state.attested_exact(tmp_path, facts())
    for not_an_object in ("[]", "null", "1"):  # valid JSON, not a signed document: no word, no crash
        path.write_text(not_an_object)
        assert not state.attested_exact(tmp_path, facts())
    state.attest_exact(tmp_path, facts())
    monkeypatch.setenv("UNLEARN_SIGNING_KEY", "ab" * 32)  # another project's key
    assert not state.attested_exact(tmp_path, facts())


def test_the_word_and_a_write_of_it_cut_short_go_with_the_versions_private_state(tmp_path):
    state.attest_exact(tmp_path, facts())
    folder = tmp_path / ".unlearn" / "exact"
    (folder / ".run-3.json.4242.tmp").write_text("{")  # a write killed before its rename (signing.write_signed)
    assert set(state.drop_model_state(tmp_path, "run-3")) == {"exact/run-3.json", "exact/.run-3.json.4242.tmp"}
    assert list(folder.iterdir()) == []
