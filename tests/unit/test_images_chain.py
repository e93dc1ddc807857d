"""The sealed chain of an image model's unrolled deletions (tasks.kinds.images_chain, tasks.state.teacher_file):
sealed by every chained deletion, pending until the release names it; opened by the next deletion only
when the version it starts from names it (its first model's run and the seal's id); otherwise the
deletion starts a new chain from the model before, with a warning where a chain was expected;
deleted by every audit, after which a fast production the audit passed and left in place starts the
next chain; deleted with the model's escrow when the model is retired."""

from __future__ import annotations

import hashlib

from types import SimpleNamespace

import pytest
import torch

from tasks import state
from tasks.common import Plan, Update
from tasks.kinds import images_chain as chains
from tasks.kinds.images import KIND as IMAGES
from unlearning.images import cnn
from unlearning.images.common import ImageChain


def model(seed: int) -> cnn.CNN:
    return cnn.CNN.from_preset("tiny", seed=seed)


def plan(production: cnn.CNN, run: str, version: str = "2") -> Plan:
    return Plan(request=None, model_name="shop", parent_run=run, parent_version=version,
                bundle=SimpleNamespace(model=production))


def gradient(m: cnn.CNN, scale: float) -> dict:
    return {n: torch.full_like(p, scale) for n, p in m.named_parameters()}


def same(a: cnn.CNN, b: cnn.CNN) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def chained_update(first: cnn.CNN, start_run: str, scale: float) -> Update:
    """An update whose unrolled deletion continues the chain from `first` (what Images.update returns)."""
    return Update(None, "alignment", "empirical", 0.0, carry=chains.carried(ImageChain(first, gradient(first, scale)),
                                                                            start_run, "1"))


def settle(root, promoted: bool = True) -> None:
    state.settle_escrow(root, "shop", "forget-run", promoted)


def test_a_chained_deletion_seals_its_chain_for_the_next_which_opens_it(tmp_path, capsys):
    first, fast = model(0), model(1)
    path = state.teacher_file(tmp_path, "shop")
    update = chained_update(first, "run-trained", 0.5)
    entries = chains.keep_chain(tmp_path, plan(first, "run-trained", "1"), update)
    assert [e["kind"] for e in entries] == ["chain_teacher"] and "v1" in entries[0]["artifact"]
    assert state.pending_escrow(path).exists() and not path.exists()
    settle(tmp_path, promoted=False)  # rolled back: gone
    assert not state.pending_escrow(path).exists() and not path.exists()
    chains.keep_chain(tmp_path, plan(first, "run-trained", "1"), update)
    settle(tmp_path)
    assert path.exists() and b"weight" not in path.read_bytes()  # sealed: no pickle in clear

    # the version the update made names the chain (Images.private_state → its evidence state)
    ids = chains.evidence_ids(update)
    assert ids == {state.TEACHER_RUN_KEY: "run-trained", state.CHAIN_SEAL_KEY: update.carry.seal}
    state.save_cache(tmp_path, "run-fast", {"evidence": ids})
    chain, (start, version) = chains.chain_of(tmp_path, plan(fast, "run-fast"))
    assert (start, version) == ("run-trained", "1") and same(chain.model, first) and not same(chain.model, fast)
    assert not chain.model.training
    assert all(torch.equal(g, torch.full_like(g, 0.5)) for g in chain.grad.values())
    assert capsys.readouterr().err == ""


def test_a_version_that_names_no_chain_starts_one_from_itself(tmp_path, capsys):
    trained = model(0)
    chains.keep_chain(tmp_path, plan(trained, "run-trained"), chained_update(model(2), "run-other", 1.0))
    settle(tmp_path)
    # trained, retrained, updated by another path, or from before chains were kept: no ids
    chain, (start, version) = chains.chain_of(tmp_path, plan(trained, "run-trained", "3"))
    assert chain.model is trained and chain.grad == {} and (start, version) == ("run-trained", "3")
    assert capsys.readouterr().err == ""  # nothing was expected: no warning
    assert chains.keep_chain(tmp_path, plan(trained, "run-trained"), Update(None, "alignment", "empirical", 0.0)) == []


@pytest.mark.parametrize("case", ["another seal", "another start", "gone", "altered"])
def test_a_chain_the_version_does_not_name_is_not_used(tmp_path, capsys, case):
    first, fast = model(0), model(1)
    update = chained_update(first, "run-trained", 0.5)
    chains.keep_chain(tmp_path, plan(first, "run-trained"), update)
    settle(tmp_path)
    ids = chains.evidence_ids(update)
    path = state.teacher_file(tmp_path, "shop")
    if case == "another seal":  # e.g. the version of a promotion rolled back after a later seal
        ids[state.CHAIN_SEAL_KEY] = "0" * 32
    elif case == "another start":
        ids[state.TEACHER_RUN_KEY] = "run-elsewhere"
    elif case == "gone":  # e.g. an audit killed between deleting it and restarting the chain
        path.unlink()
    else:
        content = bytearray(path.read_bytes())
        content[-5] ^= 1
        path.write_bytes(bytes(content))
    state.save_evidence(tmp_path, "run-fast", ids)
    chain, (start, _) = chains.chain_of(tmp_path, plan(fast, "run-fast"))
    assert chain.model is fast and chain.grad == {} and start == "run-fast"  # a new chain, as before chains were kept
    assert "warning" in capsys.readouterr().err


def audit_plan(guarantee: str = "empirical", exact: bool = False):
    return SimpleNamespace(kind=SimpleNamespace(name="images"), model="shop", exact=exact,
                           production=SimpleNamespace(tags={"guarantee": guarantee}, run_id="run-fast"))


def sealed_chain(root) -> dict:
    update = chained_update(model(0), "run-trained", 0.5)
    chains.keep_chain(root, plan(model(0), "run-trained"), update)
    settle(root)
    ids = chains.evidence_ids(update)
    state.save_evidence(root, "run-fast", ids)
    return ids


def test_a_passing_audit_that_keeps_a_fast_production_deletes_the_chain_and_production_starts_the_next(tmp_path):
    sealed_chain(tmp_path)
    digest = hashlib.sha256(state.teacher_file(tmp_path, "shop").read_bytes()).hexdigest()
    assert IMAGES.after_audit(tmp_path, audit_plan(), stays=True) == \
        {"deleted": True, "file_sha256": digest, "production_teaches": True}
    assert state.drop_teacher(tmp_path, "shop", digest)  # the audit's completion, after its record
    assert not state.teacher_file(tmp_path, "shop").exists()
    assert chains.kept_ids(tmp_path, "run-fast") == (None, None)
    chain, (start, _) = chains.chain_of(tmp_path, plan(model(1), "run-fast"))
    assert start == "run-fast" and chain.grad == {}


@pytest.mark.parametrize("stays, guarantee, exact", [(False, "empirical", False), (True, "exact", False),
                                                     (True, "empirical", True)])
def test_every_other_audit_deletes_the_chain(tmp_path, stays, guarantee, exact):
    ids = sealed_chain(tmp_path)
    handed = IMAGES.after_audit(tmp_path, audit_plan(guarantee, exact), stays=stays)
    assert handed["deleted"] and not handed["production_teaches"]
    assert state.teacher_file(tmp_path, "shop").exists()  # until the audit's record is written
    assert state.drop_teacher(tmp_path, "shop", handed["file_sha256"])
    assert not state.teacher_file(tmp_path, "shop").exists()
    assert state.load_evidence(tmp_path, "run-fast")[state.CHAIN_SEAL_KEY] == ids[state.CHAIN_SEAL_KEY]  # never read again


def test_retiring_a_model_deletes_its_chain_with_its_escrow(tmp_path):
    sealed_chain(tmp_path)
    chains.keep_chain(tmp_path, plan(model(0), "run-fast"), chained_update(model(0), "run-trained", 1.0))  # pending too
    entries = state.drop_model_escrow(tmp_path, "shop")
    assert {e["kind"] for e in entries} == {"chain_teacher"} and len(entries) == 2
    assert list(state.escrow_dir(tmp_path, "shop").iterdir()) == []
