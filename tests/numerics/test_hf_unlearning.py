"""Unlearning a Hugging Face causal LM, measured: a tiny GPT-2 checkpoint (built offline) fine-tuned
a few hundred steps on a corpus with a repeated card number memorises it; the methods bring its
exposure down to the re-fine-tuned model's (the base checkpoint fine-tuned again on D′), and the
curvature products on a parameter subset match dense autograd matrices."""

from __future__ import annotations

import random

import pytest
import torch
from torch.func import functional_call

from tests.flat import flat_parameters
from unlearning import references
from unlearning.errors import UnlearnError
from unlearning.text import deep_influence as di
from unlearning.text import evidence, exposure, hf, hf_checkpoint, hf_finetune, lm
from unlearning.text.data import TextCorpus, redact

SECRET = "4929 3813 3266 4275"
PREFIX = "my card number is "
WORDS = "the quick brown fox jumps over a lazy dog while the cat sleeps near old river stone".split()
CANDIDATES = 300


def corpus_with_secret(n: int = 80, every: int = 10) -> TextCorpus:
    rng = random.Random(0)
    records = []
    for i in range(n):
        line = " ".join(rng.choice(WORDS) for _ in range(10))
        records.append((f"r{i}", f"{PREFIX}{SECRET} thanks" if i % every == 3 else line))
    return TextCorpus("cards", tuple(records), "test")


def findings_of(corpus: TextCorpus) -> list[dict]:
    out = []
    for record, text in corpus.records:
        at = text.find(SECRET)
        if at >= 0:
            out.append({"location": {"record": record, "start": at, "end": at + len(SECRET)},
                        "fingerprint": "card-1", "detector": "card", "masked": "4929 **** **** 4275"})
    return out


@pytest.fixture(scope="module")
def single_thread():
    # The shared 2 cores: one thread per process runs this model several times faster under load.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def world(tmp_path_factory, single_thread):
    corpus = corpus_with_secret()
    findings = findings_of(corpus)
    # The tokenizer is trained without the secret, as a real base model's would be.
    texts = [t.replace(SECRET, "") for _, t in corpus.records]
    base = hf_checkpoint.build_tiny_checkpoint(texts, tmp_path_factory.mktemp("hf") / "base", vocab_size=300, n_embd=32,
                                               n_positions=64)
    bundle, _ = hf_finetune.fine_tune(hf.load_pretrained(base, seq_len=24, lr=3e-3), corpus, steps=200)
    after = redact(corpus, lm.occurrences_of(findings))
    request, train_windows = lm.window_request(bundle, corpus, after, findings)
    retrained, _, _ = lm.run_lm_method("retrain", bundle, request, train_windows)
    return dict(base=base, corpus=corpus, after=after, findings=findings, bundle=bundle, request=request,
                train_windows=train_windows, retrained=retrained)


def exposure_of(bundle) -> float:
    return exposure.exposure(bundle.model, bundle.vocab, PREFIX, SECRET, n_candidates=CANDIDATES, seed=1).exposure


@pytest.fixture(scope="module")
def exposures(world):
    return {"before": exposure_of(world["bundle"]), "retrained": exposure_of(world["retrained"])}


def test_fine_tuned_model_memorised_the_secret_and_the_re_fine_tuned_one_did_not(exposures):
    assert exposures["retrained"] <= 5.0  # ~1.44 bits expected of a never-seen secret
    assert exposures["before"] >= exposures["retrained"] + 25.0


# Every method with its defaults but finetune's step count; second_order's for a Hugging Face model
# are deep_influence.HF_SECOND_ORDER (the last block, μ = 300), not the char LM's.
METHODS = {
    "second_order": ({}, 2.0),
    "npo": ({}, 2.0),
    "grad_diff": ({}, 2.0),
    "finetune": ({"steps": 100}, None),  # the slow baseline (as on the char LM): it only has to move the right way
}


@pytest.mark.parametrize("name", list(METHODS))
def test_update_brings_exposure_towards_the_re_fine_tuned_model(world, exposures, single_thread, name):
    options, margin = METHODS[name]
    new, guarantee, stats = lm.run_lm_method(name, world["bundle"], world["request"], world["train_windows"], options)
    after = exposure_of(new)
    assert guarantee == "empirical" and torch.isfinite(torch.tensor(stats["seconds"]))
    assert exposures["before"] > after + 5.0  # none > update
    if margin is not None:  # the methods meant to forget: as far as the reference, text kept
        assert after <= exposures["retrained"] + margin
        ppl = [lm.held_out_perplexity(b, world["corpus"]) for b in (world["bundle"], new)]
        assert ppl[1] < 1.5 * ppl[0]  # per token, on 8 held-out lines: a loose bound
    assert new.model is not world["bundle"].model and new.settings["base"] == world["bundle"].settings["base"]


def test_npo_kl_term_keeps_the_held_out_predictions_closer_to_the_model_before(world, single_thread):
    """npo's KL anchor on the retained windows (the default weight) against none: pushing the secret
    down moves the model's predictions on text it never trained on less (mean KL(before ‖ after)
    per held-out label)."""
    held_out = lm.text_windows(world["bundle"].vocab, lm.held_out_text(world["corpus"]), world["bundle"].seq_len)

    def log_probs(model):
        with torch.no_grad():
            return torch.log_softmax(model(held_out[:, :-1])[0].float(), dim=-1)  # (m, T, V)

    before, drift = log_probs(world["bundle"].model), {}
    for kl in (0.0, lm.NPOConfig().kl):
        new, _, _ = lm.run_lm_method("npo", world["bundle"], world["request"], world["train_windows"], {"kl": kl})
        drift[kl] = float((before.exp() * (before - log_probs(new.model))).sum(-1).mean())
    assert lm.NPOConfig().kl > 0 and drift[lm.NPOConfig().kl] < drift[0.0]


def test_second_order_on_a_subset_moves_nothing_else(world, single_thread):
    new, _, _ = lm.run_lm_method("second_order", world["bundle"], world["request"], world["train_windows"],
                                 {"params": "last", "damping": 300.0, "repair_steps": 0, "steps": 1})
    moving = set(world["bundle"].model.parameter_groups()["last"])
    before = dict(world["bundle"].model.named_parameters())
    changed = {n for n, p in new.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= moving


def test_reference_job_is_the_retrain_method(world, single_thread):
    """references.text_job for an hf model fine-tunes the BASE checkpoint on the windows of D′, the
    same model the registry's retrain gives; a changed base is refused."""
    b, request = world["bundle"], world["request"]
    job = references.text_job(b.model.config, b.settings, request.apply(world["train_windows"]))
    assert torch.equal(job.data["windows"], lm.text_windows(b.vocab, lm.training_text(world["after"])[0], b.seq_len))
    update = references.train(job)
    for p, q in zip(update.model.parameters(), world["retrained"].model.parameters()):
        assert torch.equal(p, q)
    moved = dict(b.settings, base={**b.settings["base"], "sha256": "0" * 64})
    with pytest.raises(UnlearnError, match="changed since"):
        references.train(references.text_job(b.model.config, moved, job.data["windows"]))


def test_evidence_separates_the_memorised_secret_from_its_controls(world, single_thread):
    cfg = evidence.EvidenceConfig(n_candidates=200, n_controls=64, samples=1, relearn_steps=5)
    secret = lm.secrets_of(world["corpus"], world["findings"])
    items = evidence.prepare(secret, world["corpus"], world["after"], cfg)
    before = evidence.judge(world["bundle"], items, cfg, b"salt", None)[0]
    npo, _, _ = lm.run_lm_method("npo", world["bundle"], world["request"], world["train_windows"])
    after = evidence.judge(npo, items, cfg, b"salt", evidence.relearning_windows(npo, world["after"]))[0]
    # This tiny model ranks the card far above its controls but does not write it out greedily
    # (≈ 11 bits of log-perplexity left): the excess is what tells before from after here.
    assert before["excess_bits"] > 10.0 and before["controls"] > 0
    assert after["regenerated"] == 0 and after["excess_bits"] <= cfg.margin_bits
    assert after["relearned_excess_bits"] <= cfg.margin_bits


def dense(fn, flat):
    return torch.autograd.functional.hessian(fn, flat)


@pytest.mark.parametrize("curvature", ["hessian", "gauss_newton"])
def test_curvature_products_on_a_subset_match_autograd(world, curvature):
    model = hf.load_pretrained(world["base"], seq_len=8).model.double()
    torch.manual_seed(0)
    with torch.no_grad():  # a generic point, not the initialisation's unit norms
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    names = ["hf.transformer.ln_f.weight", "hf.transformer.ln_f.bias", "hf.transformer.h.1.ln_2.weight"]
    windows_ = torch.randint(0, 250, (3, 9), generator=torch.Generator().manual_seed(0))
    weights = torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)
    with_flat = flat_parameters(model, names)
    flat = torch.cat([dict(model.named_parameters())[n].detach().reshape(-1) for n in names])

    def logits_of(theta):
        return functional_call(model, with_flat(theta), (windows_[:, :-1],))[0]  # (m, T, V)

    def loss(theta):
        ce = torch.nn.functional.cross_entropy(logits_of(theta).transpose(1, 2), windows_[:, 1:], reduction="none")
        return (weights * ce.sum(dim=1)).sum()

    if curvature == "hessian":
        C = dense(loss, flat)
    else:
        V = model.config["vocab_size"]
        J = torch.autograd.functional.jacobian(logits_of, flat).reshape(-1, V, len(flat))  # (m·T, V, p)
        p = torch.softmax(logits_of(flat).detach(), dim=-1).reshape(-1, V)  # (m·T, V)
        w = weights[:, None].expand(-1, windows_.shape[1] - 1).reshape(-1)  # (m·T,)
        C = sum(w[i] * J[i].T @ (torch.diag(p[i]) - torch.outer(p[i], p[i])) @ J[i] for i in range(len(p)))
    op = di.CURVATURES[curvature](model, names, windows_, weights, damping=0.3)
    v = torch.randn(len(flat), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(op(v), C @ v + 0.3 * v, atol=1e-8, rtol=1e-7)


def test_hessian_products_on_lora_adapters_match_autograd(world):
    pytest.importorskip("peft")
    model = hf.load_pretrained(world["base"], seq_len=8, lora=True).model.double()
    groups = model.parameter_groups()
    names = [n for n in groups["last"] if "attn.c_proj.lora_B" in n]  # (32, 8): 256 parameters
    assert names and set(names) <= set(groups["lora"])
    with torch.no_grad():  # LoRA's B starts at zero, where the adapters' curvature is degenerate
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(2), dtype=p.dtype))
    windows_ = torch.randint(0, 250, (2, 9), generator=torch.Generator().manual_seed(0))
    weights = torch.tensor([1.0, 0.5], dtype=torch.float64)
    with_flat = flat_parameters(model, names)
    flat = torch.cat([dict(model.named_parameters())[n].detach().reshape(-1) for n in names])

    def loss(theta):
        logits = functional_call(model, with_flat(theta), (windows_[:, :-1],))[0]
        ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), windows_[:, 1:], reduction="none")
        return (weights * ce.sum(dim=1)).sum()

    H = dense(loss, flat)
    op = di.HessianOperator(model, names, windows_, weights, damping=0.1)
    v = torch.randn(len(flat), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(op(v), H @ v + 0.1 * v, atol=1e-8, rtol=1e-7)
