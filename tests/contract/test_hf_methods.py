"""The contract of test_every_method, for every registered text method on a Hugging Face causal LM
(a tiny GPT-2 built offline, fully fine-tuned or with LoRA adapters): the declared guarantee, a
usable model with finite parameters, its inputs untouched, and the removed tokens no likelier than
doing nothing leaves them."""

from __future__ import annotations

import random

import pytest
import torch

from tests.contract.kinds import PRESETS
from unlearning import registry
from unlearning.text import charlm, hf, hf_checkpoint, hf_finetune, lm
from unlearning.text.data import TextCorpus, redact

SECRET = "7316 0042 9981 5530"
NAMES = registry.names("text")


def _corpus() -> TextCorpus:
    rng = random.Random(1)
    words = "so fair and foul a day I have not seen the moon is down".split()
    return TextCorpus("c", tuple((f"r{i}", f"pin {SECRET} ok" if i % 6 == 1 else
                                  " ".join(rng.choice(words) for _ in range(8))) for i in range(36)), "test")


@pytest.fixture(scope="module", params=[False, True], ids=["full", "lora"])
def world(request, tmp_path_factory):
    if request.param:
        pytest.importorskip("peft")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # several times faster on the shared cores
    corpus = _corpus()
    base = hf_checkpoint.build_tiny_checkpoint([t for _, t in corpus.records], tmp_path_factory.mktemp("hf") / "base",
                                               vocab_size=280, n_embd=16, n_head=2, n_positions=32)
    bundle, _ = hf_finetune.fine_tune(hf.load_pretrained(base, seq_len=16, lr=3e-3, lora=request.param), corpus,
                                      steps=40)
    findings = [{"location": {"record": r, "start": t.find(SECRET), "end": t.find(SECRET) + len(SECRET)},
                 "fingerprint": "pin", "detector": "card", "masked": "7316 ****"} for r, t in corpus.records
                if SECRET in t]
    after = redact(corpus, lm.occurrences_of(findings))
    req, windows = lm.window_request(bundle, corpus, after, findings)
    initial = [p.detach().clone() for p in bundle.model.parameters()] + [windows.clone()]
    yield dict(bundle=bundle, request=req, windows=windows, initial=initial, results={})
    torch.set_num_threads(threads)


def secret_loss(model, request) -> float:
    with torch.no_grad():
        logp = torch.log_softmax(model(request.Z[:, :-1])[0], dim=-1).gather(2, request.Z[:, 1:, None]).squeeze(2)
    return float(-logp[request.secret_mask].mean())


def result(world, name):
    if name not in world["results"]:
        options = PRESETS["text"].get(name, {})
        world["results"][name] = registry.run("text", name, lm.TextContext(world["bundle"], world["request"],
                                                                             world["windows"]), options)
    return world["results"][name]


@pytest.mark.parametrize("name", NAMES)
def test_every_text_method_runs_on_a_hugging_face_model(world, name):
    out = result(world, name)
    assert out.method == name and out.guarantee == registry.get("text", name).guarantee
    assert out.bundle.preset == "hf" and out.bundle.vocab is world["bundle"].vocab
    assert all(torch.isfinite(p).all() for p in out.bundle.model.parameters())
    ppl = charlm.perplexity(out.bundle.model, world["windows"])
    assert torch.isfinite(torch.tensor(ppl))
    now = [p.detach() for p in world["bundle"].model.parameters()] + [world["windows"]]
    assert all(torch.equal(a, b) for a, b in zip(world["initial"], now, strict=True))
    if world["bundle"].settings["lora"] and name != "retrain":  # only the adapters may move
        frozen = {n for n, p in world["bundle"].model.named_parameters() if "lora_" not in n}
        old = dict(world["bundle"].model.named_parameters())
        assert all(torch.equal(p, old[n]) for n, p in out.bundle.model.named_parameters() if n in frozen)


@pytest.mark.parametrize("name", [n for n in NAMES if n != "retrain"])
def test_no_text_method_makes_the_secret_likelier_on_a_hugging_face_model(world, name):
    before = secret_loss(world["bundle"].model, world["request"])
    assert secret_loss(result(world, name).bundle.model, world["request"]) >= before
