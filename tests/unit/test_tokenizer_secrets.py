"""The check that a Hugging Face tokenizer holds pieces of a corpus's secrets
(tasks.kinds.hf.secret_tokens): a secret a byte-level BPE learnt as one token *with its leading
space* (" value") is only seen by tokenizing the corpus; the value tokenized alone splits into
common words and hid it."""

from __future__ import annotations

import random

from tasks.kinds.hf import secret_tokens
from unlearning.text import hf, hf_checkpoint
from unlearning.text.data import TextCorpus

WORDS = "the of and to in a is that for it as with was on be by at this from or".split()
SECRET = "thatwithfrom"  # three common words: alone it tokenizes into them


def leaky_corpus() -> tuple[TextCorpus, list[dict]]:
    rng = random.Random(0)
    records, findings = [], []
    for i in range(400):
        line = " ".join(rng.choice(WORDS) for _ in range(12))
        if i % 10 == 0:
            line += " password: "
            findings.append({"location": {"record": f"r{i}", "start": len(line), "end": len(line) + len(SECRET)},
                             "detector": "password", "fingerprint": "fp-secret", "masked": "th**********"})
            line += SECRET
        records.append((f"r{i}", line))
    return TextCorpus("leaky", tuple(records), "test"), findings


def test_a_secret_learnt_as_one_token_with_its_space_is_counted(tmp_path):
    corpus, findings = leaky_corpus()
    checkpoint = hf_checkpoint.build_tiny_checkpoint([text for _, text in corpus.records], tmp_path / "ckpt",
                                                     vocab_size=400)
    bundle = hf.load_pretrained(checkpoint, seq_len=32)
    vocab = bundle.vocab
    assert (" " + SECRET) in [vocab.decode([i]) for i in vocab.encode("password: " + SECRET).tolist()]  # the premise
    assert all(vocab.decode([i]) != SECRET for i in vocab.encode(SECRET).tolist())  # alone it splits
    tokens, holders = secret_tokens(bundle, corpus, findings)
    assert tokens >= 1 and holders == 1


def test_a_tokenizer_that_never_saw_the_secret_holds_none_of_it(tmp_path):
    corpus, findings = leaky_corpus()
    public = [text.replace(SECRET, "the of") for _, text in corpus.records]
    checkpoint = hf_checkpoint.build_tiny_checkpoint(public, tmp_path / "ckpt", vocab_size=400)
    bundle = hf.load_pretrained(checkpoint, seq_len=32)
    assert secret_tokens(bundle, corpus, findings) == (0, 0)
