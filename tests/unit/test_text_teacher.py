"""The sealed teacher of a text chain (tasks.kinds.text_teacher, tasks.state.teacher_file): sealed by
the first fast update on an exact model, pending until the release names it; opened by the chain's
next fast updates only when it is the model their version is anchored to; deleted by an audit, after
which a production it passed and left in place is its own teacher; deleted with the model's escrow
when the model is retired; the rules (unlearning.text.chain.teacher_of, teacher_after_audit)."""

from __future__ import annotations

import hashlib

from types import SimpleNamespace

import pytest
import torch

from tasks import state, tracking
from tasks.kinds.tabular import KIND as TABLE
from tasks.kinds.text import KIND as TEXT
from tasks.common import Plan
from tasks.kinds import text_chain as chains
from tasks.kinds import text_teacher as teachers
from tasks.kinds.text_chain import reference_state
from unlearning.text import chain as rules
from unlearning.text.bundle import LMBundle
from unlearning.text.charlm import CharLSTM, Vocab


def bundle(seed: int) -> LMBundle:
    vocab = Vocab.from_text("abc 0123456789")
    return LMBundle(CharLSTM.from_preset("tiny", len(vocab), seed=seed), vocab, "tiny", {"seq_len": 8, "lr": 1e-2})


def plan(production: LMBundle, run: str) -> Plan:
    """The versions' `guarantee` tags (MLflow, read when planning): run-exact and run-trained were trained exactly."""
    guarantee = "exact" if run in ("run-exact", "run-trained") else "empirical"
    return Plan(request=None, model_name="notes", parent_run=run, parent_guarantee=guarantee, bundle=production)


def chain_teacher(root, request_plan: Plan):
    """text_teacher.chain_teacher as a request calls it: with the chain's teacher read once (Text.update)."""
    return teachers.chain_teacher(root, request_plan, teachers.parent_teacher_run(root, request_plan))


def keep_teacher(root, request_plan: Plan, guarantee: str) -> list[dict]:
    """text_teacher.keep_teacher as a request calls it: with the teacher its update read (Update.carry)."""
    return teachers.keep_teacher(root, request_plan, guarantee, teachers.parent_teacher_run(root, request_plan))


def same_weights(a: LMBundle, b: LMBundle) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))


def test_the_first_fast_update_on_an_exact_model_seals_it_pending_until_the_release_names_it(tmp_path):
    exact = bundle(0)
    path = state.teacher_file(tmp_path, "notes")
    keep_teacher(tmp_path, plan(exact, "run-exact"), "exact")  # a retraining starts no chain
    assert not path.exists() and not state.pending_escrow(path).exists()
    keep_teacher(tmp_path, plan(exact, "run-exact"), "empirical")
    assert state.pending_escrow(path).exists() and not path.exists()
    state.settle_escrow(tmp_path, "notes", "forget-run", promoted=False)  # rolled back: gone
    assert not state.pending_escrow(path).exists() and not path.exists()
    keep_teacher(tmp_path, plan(exact, "run-exact"), "empirical")
    state.settle_escrow(tmp_path, "notes", "forget-run", promoted=True)
    assert path.exists() and not state.pending_escrow(path).exists()
    assert b"weight" not in path.read_bytes()  # sealed: not the state dict's pickle in clear

    # the next fast update, on the fast-updated version anchored to it, is anchored to it too
    fast = bundle(1)
    state.save_evidence(tmp_path, "run-fast", {"anchor_perplexity": 9.0, state.TEACHER_RUN_KEY: "run-exact"})
    teacher, taught_by = chain_teacher(tmp_path, plan(fast, "run-fast"))
    assert taught_by == "run-exact" and teacher is not None and same_weights(teacher, exact) and not same_weights(teacher, fast)
    assert not teacher.model.training
    # a fast update of a fast-updated version seals nothing: the chain keeps its teacher
    keep_teacher(tmp_path, plan(fast, "run-fast"), "empirical")
    assert not state.pending_escrow(path).exists()


def test_a_teacher_is_used_only_for_the_version_anchored_to_it(tmp_path, capsys):
    exact, fast = bundle(0), bundle(1)
    teachers.seal(tmp_path, "notes", "run-exact", exact)
    # production trained exactly: anchored to itself, nothing opened
    assert teachers.teacher_run(tmp_path, "run-trained", "exact") == "run-trained"
    assert chain_teacher(tmp_path, plan(fast, "run-trained")) == (None, None)
    # another chain's anchor, and a fast version from before teachers were kept (no anchor id)
    state.save_evidence(tmp_path, "run-other", {"anchor_perplexity": 9.0, state.TEACHER_RUN_KEY: "run-elsewhere"})
    state.save_evidence(tmp_path, "run-old", {"anchor_perplexity": 9.0})
    assert chain_teacher(tmp_path, plan(fast, "run-other")) == (None, None)
    assert teachers.teacher_run(tmp_path, "run-old", "empirical") is None
    assert chain_teacher(tmp_path, plan(fast, "run-old")) == (None, None)
    # an altered file: not used, one warning line, the update anchored to the model before it
    state.save_evidence(tmp_path, "run-fast", {"anchor_perplexity": 9.0, state.TEACHER_RUN_KEY: "run-exact"})
    path = state.teacher_file(tmp_path, "notes")
    body = bytearray(path.read_bytes())
    body[-1] ^= 1
    path.write_bytes(bytes(body))
    assert chain_teacher(tmp_path, plan(fast, "run-fast")) == (None, None)
    assert "sealed teacher was not used" in capsys.readouterr().err
    # unreadable (here a folder in its place): the same, not a traceback (the image chain's rule too)
    path.unlink()
    path.mkdir()
    assert chain_teacher(tmp_path, plan(fast, "run-fast")) == (None, None)
    assert "sealed teacher was not used" in capsys.readouterr().err


def test_an_audit_that_passes_production_and_leaves_it_makes_it_the_teacher_of_the_updates_after_it(tmp_path):
    exact, audited = bundle(0), bundle(1)
    teachers.seal(tmp_path, "notes", "run-exact", exact)
    state.save_evidence(tmp_path, "run-fast", {"held_out_perplexity": 10.0, "anchor_perplexity": 9.0,
                                               state.TEACHER_RUN_KEY: "run-exact"})
    handed = TEXT.after_audit(tmp_path, audit_plan(), stays=True)
    assert state.teacher_file(tmp_path, "notes").exists()  # until the audit's record is written
    assert state.drop_teacher(tmp_path, "notes", handed["file_sha256"])  # the audit's completion
    assert not state.teacher_file(tmp_path, "notes").exists()  # it memorised the covered requests
    kept = state.load_evidence(tmp_path, "run-fast")
    assert kept == {"held_out_perplexity": 10.0, "anchor_perplexity": 9.0, state.TEACHER_RUN_KEY: "run-fast"}
    assert chain_teacher(tmp_path, plan(audited, "run-fast")) == (None, None)  # the next update: itself
    keep_teacher(tmp_path, plan(audited, "run-fast"), "empirical")  # ... which it seals
    state.settle_escrow(tmp_path, "notes", "forget-run", promoted=True)
    state.save_evidence(tmp_path, "run-next", {"anchor_perplexity": 9.0, state.TEACHER_RUN_KEY: "run-fast"})
    assert same_weights(chain_teacher(tmp_path, plan(bundle(2), "run-next"))[0], audited)
    # the rules bench.stream mirrors
    assert rules.teacher_of("parent") == "parent" and rules.teacher_of("parent", "exact") == "exact"
    assert rules.teacher_after_audit("exact") is None


def test_retiring_a_model_deletes_its_teacher_with_its_escrow(tmp_path):
    teachers.seal(tmp_path, "notes", "run-exact", bundle(0))
    keep_teacher(tmp_path, plan(bundle(0), "run-exact"), "empirical")  # one pending too
    entries = state.drop_model_escrow(tmp_path, "notes")
    assert {(e["artifact"], e["kind"]) for e in entries} == {("chain teacher notes/teacher.sealed", "chain_teacher"),
                                                             ("chain teacher notes/teacher.sealed.pending", "chain_teacher")}
    assert list(state.escrow_dir(tmp_path, "notes").iterdir()) == []


def audit_plan(kind: str = "text", guarantee: str = "empirical", exact: bool = False):
    return SimpleNamespace(kind=SimpleNamespace(name=kind), model="notes", exact=exact,
                           production=SimpleNamespace(tags={"guarantee": guarantee}, run_id="run-fast"))


@pytest.mark.parametrize("verdict", ["failed or undecided", "passed, --rebase"])
def test_every_audit_that_replaces_production_deletes_the_teacher(tmp_path, verdict):
    teachers.seal(tmp_path, "notes", "run-exact", bundle(0))
    state.save_evidence(tmp_path, "run-fast", {"anchor_perplexity": 9.0, state.TEACHER_RUN_KEY: "run-exact"})
    handed = TEXT.after_audit(tmp_path, audit_plan(), stays=False)
    assert handed == {"deleted": True, "file_sha256": sealed_digest(tmp_path), "production_teaches": False}
    assert state.drop_teacher(tmp_path, "notes", handed["file_sha256"])
    assert not state.teacher_file(tmp_path, "notes").exists()
    assert state.load_evidence(tmp_path, "run-fast")[state.TEACHER_RUN_KEY] == "run-exact"  # replaced, never read again


def test_an_audit_of_an_exact_production_deletes_a_stale_teacher_and_tables_have_none(tmp_path):
    teachers.seal(tmp_path, "notes", "run-exact", bundle(0))  # a chain's, before a fall-back retrained production
    digest = sealed_digest(tmp_path)
    assert TEXT.after_audit(tmp_path, audit_plan(guarantee="exact"), stays=True) == \
        {"deleted": True, "file_sha256": digest, "production_teaches": False}
    state.drop_teacher(tmp_path, "notes", digest)
    assert TEXT.after_audit(tmp_path, audit_plan(exact=True), stays=True) == \
        {"deleted": False, "file_sha256": None, "production_teaches": False}
    assert TABLE.after_audit(tmp_path, audit_plan(kind="table"), stays=True) is None  # images: test_images_chain


def test_a_passing_audit_that_keeps_a_fast_production_hands_it_the_chain(tmp_path):
    teachers.seal(tmp_path, "notes", "run-exact", bundle(0))
    state.save_evidence(tmp_path, "run-fast", {"anchor_perplexity": 9.0, state.TEACHER_RUN_KEY: "run-exact"})
    assert TEXT.after_audit(tmp_path, audit_plan(), stays=True) == \
        {"deleted": True, "file_sha256": sealed_digest(tmp_path), "production_teaches": True}
    assert state.load_evidence(tmp_path, "run-fast")[state.TEACHER_RUN_KEY] == "run-fast"


def test_an_audit_deletes_only_the_teacher_its_record_names(tmp_path):
    """The deletion follows the signed record (tasks.audit_record.finish_audit, also a killed audit's
    recovery): a teacher sealed by a forget run in between is the next chain's, and stays."""
    teachers.seal(tmp_path, "notes", "run-exact", bundle(0))
    named = TEXT.after_audit(tmp_path, audit_plan(), stays=False)["file_sha256"]
    teachers.seal(tmp_path, "notes", "run-next", bundle(1))  # a forget run before the recovery
    pending = state.pending_escrow(state.teacher_file(tmp_path, "notes"))
    pending.write_bytes(b"cut short")
    assert not state.drop_teacher(tmp_path, "notes", named)
    assert state.teacher_file(tmp_path, "notes").exists() and not pending.exists()
    assert not state.drop_teacher(tmp_path, "notes", None)  # a record from before digests: nothing more
    assert state.drop_teacher(tmp_path, "notes", sealed_digest(tmp_path))
    assert not state.teacher_file(tmp_path, "notes").exists()


def sealed_digest(root) -> str:
    return hashlib.sha256(state.teacher_file(root, "notes").read_bytes()).hexdigest()


def test_a_fast_update_verified_by_reference_keeps_its_teacher_too():
    kept = reference_state({"perplexity_after": 10.0, "perplexity_retrain": 9.5}, ["forget-1"], "run-exact")
    assert kept[state.TEACHER_RUN_KEY] == "run-exact" and kept["anchor_perplexity"] == 9.5
    assert state.TEACHER_RUN_KEY not in reference_state({"perplexity_after": 10.0, "perplexity_retrain": 9.5}, None)


def test_a_request_reads_its_versions_guarantee_from_the_plan_not_from_mlflow(tmp_path, monkeypatch):
    """The teacher's and the chain's steps of one text request (update, verify, keep for the next)
    asked MLflow for the guarantee tag of the version it starts from up to five times; the plan
    read it once, with the version (tasks.steps.plan_for)."""
    reads = []
    monkeypatch.setattr(tracking, "version_tags", lambda *version: reads.append(version) or {"guarantee": "exact"})
    exact = Plan(request=None, model_name="notes", parent_version="1", parent_run="run-exact",
                 parent_guarantee="exact", bundle=bundle(0))
    assert teachers.parent_teacher_run(tmp_path, exact) == "run-exact"  # an exact model teaches its chain
    assert chain_teacher(tmp_path, exact) == (None, None)  # ... as itself, no sealed file
    assert chains.known_chain(tmp_path, exact) == [] and chains.chain_after(tmp_path, exact, "forget-1") == ["forget-1"]
    keep_teacher(tmp_path, exact, "empirical")
    assert state.pending_escrow(state.teacher_file(tmp_path, "notes")).exists()
    assert reads == []
