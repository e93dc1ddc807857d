"""The project's signed word that a model version is a retraining on its own schedule
(tasks.state.attest_exact): what an audit needs, beside the version's MLflow tags, to take it as
exact without retraining."""

from __future__ import annotations

import json

import pytest

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
    (tmp_path / ".unlearn" / "signing.key").unlink(missing_ok=True)  # the file there refuses another key outright
    monkeypatch.setenv("UNLEARN_SIGNING_KEY", "ab" * 32)  # another project's key
    assert not state.attested_exact(tmp_path, facts())


def test_the_word_and_a_write_of_it_cut_short_go_with_the_versions_private_state(tmp_path):
    state.attest_exact(tmp_path, facts())
    folder = tmp_path / ".unlearn" / "exact"
    (folder / ".run-3.json.4242.tmp").write_text("{")  # a write killed before its rename (signing.write_signed)
    assert set(state.drop_model_state(tmp_path, "run-3")) == {"exact/run-3.json", "exact/.run-3.json.4242.tmp"}
    assert list(folder.iterdir()) == []


BLOCK = {"method": "second_order", "guarantee": "empirical", "epsilon": None, "delta": None, "residual": 0.0031,
         "residual_bound": None, "budget_used": None, "budget_left": None, "budget": None}


def test_a_versions_signed_guarantee_reads_back_only_as_signed_and_for_that_version(tmp_path, monkeypatch):
    """What a certificate rebuilt after a stop past the promotion signs (state.keep_guarantee), not the
    version's MLflow tag: an edited or foreign copy is refused, none is None (a version before it)."""
    assert state.kept_guarantee(tmp_path, "people", "2", "run-2") is None
    state.keep_guarantee(tmp_path, "people", "2", "run-2", BLOCK)
    assert state.kept_guarantee(tmp_path, "people", "2", "run-2") == BLOCK
    with pytest.raises(state.AlteredState, match="another version"):
        state.kept_guarantee(tmp_path, "people", "3", "run-2")
    path = tmp_path / ".unlearn" / "guarantee" / "run-2.json"
    document = json.loads(path.read_text())
    path.write_text(json.dumps({**document, "guarantee": {**BLOCK, "method": "retrain", "guarantee": "exact"}}))
    with pytest.raises(state.AlteredState, match=r"\.unlearn/guarantee/run-2\.json does not verify"):
        state.kept_guarantee(tmp_path, "people", "2", "run-2")
    state.keep_guarantee(tmp_path, "people", "2", "run-2", BLOCK)
    (tmp_path / ".unlearn" / "signing.key").unlink(missing_ok=True)  # the file there refuses another key outright
    monkeypatch.setenv("UNLEARN_SIGNING_KEY", "ab" * 32)  # another project's key
    with pytest.raises(state.AlteredState):
        state.kept_guarantee(tmp_path, "people", "2", "run-2")
    assert state.drop_model_state(tmp_path, "run-2") == ["guarantee/run-2.json"]
