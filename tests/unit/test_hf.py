"""Hugging Face causal LMs behind the text stack's interfaces (unlearning.text.hf): a tiny GPT-2
checkpoint built offline, its save/load round trip, bad checkpoints, LoRA without peft, token
windows of a redaction, and prefix+candidate scoring against a plain full-sequence computation."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch

from unlearning.errors import UnlearnError
from unlearning.text import charlm, exposure, hf, hf_checkpoint, hf_finetune, hf_tokens, lm

SECRET = "4929 3813 3266 4275"
TEXTS = [f"line {i}: the quick brown fox jumps over the lazy dog" for i in range(20)] + [
    f"my card number is {SECRET} thanks"] * 3


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return hf_checkpoint.build_tiny_checkpoint(TEXTS, tmp_path_factory.mktemp("ckpt") / "base", vocab_size=300,
                                               n_layer=2, n_embd=32, n_head=2, n_positions=64)


@pytest.fixture(scope="module")
def bundle(checkpoint):
    return hf.load_pretrained(checkpoint, seq_len=16)


def test_tiny_checkpoint_loads_with_the_charlstm_calling_convention(checkpoint, bundle):
    hf_checkpoint.check_checkpoint(checkpoint)
    x = bundle.vocab.encode(TEXTS[0])[None]  # (1, n)
    logits, state = bundle.model(x)
    assert logits.shape == (1, x.shape[1], bundle.model.config["vocab_size"])
    step, _ = bundle.model(x[:, :1] * 0 + 5, state)  # one more token on the cache
    full, _ = bundle.model(torch.cat([x, x[:, :1] * 0 + 5], dim=1))
    torch.testing.assert_close(step[0, -1], full[0, -1], atol=1e-5, rtol=1e-5)
    assert bundle.vocab.decode(bundle.vocab.encode(TEXTS[-1])) == TEXTS[-1]
    groups = bundle.model.parameter_groups()
    assert set(groups) >= {"all", "last", "head"}
    assert all(n.startswith("hf.transformer.h.1.") for n in groups["last"] if n not in groups["head"])
    assert set(groups["head"]) < set(groups["last"]) < set(groups["all"])
    assert bundle.settings["base"] == hf_checkpoint.checkpoint_identity(checkpoint)
    assert bundle.preset == "hf" and bundle.settings["lora"] is False


def test_digits_are_single_tokens_so_a_repeated_number_is_not_one(bundle):
    ids, offsets = bundle.vocab.encode_with_offsets(SECRET)
    widths = [int(e - s) for s, e in offsets if SECRET[int(s):int(e)].strip().isdigit()]
    assert widths and max(widths) == 1


def test_identity_changes_with_any_byte(checkpoint, tmp_path):
    copy = shutil.copytree(checkpoint, tmp_path / "copy")
    before = hf_checkpoint.checkpoint_identity(copy)
    assert before["sha256"] == hf_checkpoint.checkpoint_identity(checkpoint)["sha256"]
    (copy / "config.json").write_text((copy / "config.json").read_text() + " ")
    assert hf_checkpoint.checkpoint_identity(copy)["sha256"] != before["sha256"]


def test_save_load_round_trip_gives_identical_logits(bundle, tmp_path):
    x = torch.randint(0, len(bundle.vocab), (2, 12))
    lm.save_lm(bundle, tmp_path / "m")
    assert lm.is_lm_bundle(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "lm.json").read_text())["format"] == "unlearnflow.hf/1"
    back = lm.load_lm(tmp_path / "m")
    assert back.preset == "hf" and back.settings == bundle.settings
    assert torch.equal(back.model(x)[0], bundle.model(x)[0])
    hf_checkpoint.check_checkpoint(tmp_path / "m")  # a bundle is itself a loadable checkpoint


def test_lora_bundle_round_trips_and_updates_only_adapters(checkpoint, tmp_path):
    pytest.importorskip("peft")
    b = hf.load_pretrained(checkpoint, seq_len=16, lora=True, seed=3)
    groups = b.model.parameter_groups()
    assert groups["lora"] and groups["all"] == groups["lora"] and set(groups["last"]) < set(groups["lora"])
    with torch.no_grad():  # LoRA's B starts at zero: give the adapters an effect to round-trip
        for name, p in b.model.named_parameters():
            if "lora_B" in name:
                p.add_(0.01)
    x = torch.randint(0, len(b.vocab), (2, 12))
    lm.save_lm(b, tmp_path / "m")
    back = lm.load_lm(tmp_path / "m")
    assert torch.equal(back.model(x)[0], b.model(x)[0])
    again = hf.load_pretrained(checkpoint, seq_len=16, lora=True, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(again.model.parameters(), hf.load_pretrained(
        checkpoint, seq_len=16, lora=True, seed=3).model.parameters()))  # seeded adapter initialisation


@pytest.mark.parametrize("damage, words", [
    ("missing", "does not exist"),
    ("file", "is not a directory"),
    ("no_config", "no config.json"),
    ("not_causal", "is not a causal language model"),
    ("no_tokenizer", "has no tokenizer"),
    ("no_weights", "has no model weights"),
    ("deep_config", "config.json is not valid JSON (RecursionError)"),  # both were RecursionError tracebacks
    ("deep_tokenizer", "cannot load the tokenizer"),
])
def test_bad_checkpoints_are_one_line_errors(checkpoint, tmp_path, damage, words):
    target = tmp_path / "ck"
    if damage == "file":
        target.write_text("x")
    elif damage != "missing":
        shutil.copytree(checkpoint, target)
        if damage == "no_config":
            (target / "config.json").unlink()
        elif damage == "not_causal":
            config = json.loads((target / "config.json").read_text())
            (target / "config.json").write_text(json.dumps({**config, "architectures": ["BertModel"]}))
        elif damage == "no_tokenizer":
            for f in ("tokenizer.json", "tokenizer_config.json"):
                (target / f).unlink()
        elif damage == "no_weights":
            (target / "model.safetensors").unlink()
        elif damage.startswith("deep_"):  # a field of arrays nested deeper than json.loads recurses
            name = "config.json" if damage == "deep_config" else "tokenizer.json"
            content, depth = json.loads((target / name).read_text()), 10 * sys.getrecursionlimit()
            (target / name).write_text(json.dumps(content)[:-1] + ', "x": ' + "[" * depth + "]" * depth + "}")
    with pytest.raises(UnlearnError) as err:
        hf.load_pretrained(target, seq_len=16)
    assert words in str(err.value) and "\n" not in str(err.value)


def with_custom_code(checkpoint, target, marker):
    """A copy of `checkpoint` whose architecture is defined by a Python file it carries (config.json's
    auto_map, as a checkpoint with `trust_remote_code` models is saved); importing it writes `marker`."""
    shutil.copytree(checkpoint, target)
    (target / "custom.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import GPT2Config, GPT2LMHeadModel\n"
        "class CustomConfig(GPT2Config):\n    model_type = 'customgpt'\n"
        "class CustomForCausalLM(GPT2LMHeadModel):\n    config_class = CustomConfig\n")
    config = json.loads((target / "config.json").read_text())
    config.update(model_type="customgpt", architectures=["CustomForCausalLM"],
                  auto_map={"AutoConfig": "custom.CustomConfig", "AutoModelForCausalLM": "custom.CustomForCausalLM"})
    (target / "config.json").write_text(json.dumps(config))
    return target


def test_a_checkpoints_own_code_is_never_run_even_when_the_user_answers_yes(checkpoint, tmp_path, monkeypatch):
    """transformers asked on a terminal whether to run a checkpoint's Python files and ran them on a
    "y" (the prompt also went to stdout): a checkpoint is data. Refused in one line before loading,
    and the loader itself never runs them either."""
    marker = tmp_path / "ran"
    custom = with_custom_code(checkpoint, tmp_path / "custom", marker)
    monkeypatch.setattr("builtins.input", lambda prompt="": "y")  # a user who says yes to any question
    with pytest.raises(UnlearnError, match="never runs a checkpoint's code") as err:
        hf.load_pretrained(custom, seq_len=16)
    assert "\n" not in str(err.value)
    with pytest.raises(UnlearnError, match="cannot load the model"):
        hf._load_model(custom)
    assert not marker.exists()


def test_a_checkpoint_missing_weights_its_config_declares_is_refused(checkpoint, tmp_path):
    """config.json declaring a layer more than the weights hold: transformers initialised it at random
    (unseeded: the base loaded again for the exact reference was another model) and the fine-tune ran
    on it, exit 0. One line now, naming a missing parameter."""
    target = shutil.copytree(checkpoint, tmp_path / "ck")
    config = json.loads((target / "config.json").read_text())
    (target / "config.json").write_text(json.dumps({**config, "n_layer": config["n_layer"] + 1}))
    with pytest.raises(UnlearnError, match=rf"has no weights for \d+ parameter\(s\).*transformer\.h\.{config['n_layer']}\.") \
            as err:
        hf.load_pretrained(target, seq_len=16)
    assert "\n" not in str(err.value)


def test_lora_without_peft_names_the_install(checkpoint, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(UnlearnError, match=r"pip install peft \(or `pip install unlearnflow\[lora\]`\)"):
        hf.load_pretrained(checkpoint, lora=True)


def test_changed_or_missing_base_is_refused(checkpoint, tmp_path):
    copy = shutil.copytree(checkpoint, tmp_path / "base")
    identity = hf_checkpoint.checkpoint_identity(copy)
    (copy / "generation_config.json").write_text("{}")
    with pytest.raises(UnlearnError, match="changed since"):
        hf_checkpoint.check_base(identity)
    shutil.rmtree(copy)
    with pytest.raises(UnlearnError, match="is gone"):
        hf_checkpoint.check_base(identity)


def test_a_model_without_a_fine_tuning_schedule_has_no_reference(bundle):
    """An imported model (settings["steps"] = 0) re-fine-tuned 0 steps would be its own base, not D′'s model."""
    windows = charlm.windows(bundle.vocab.encode(" ".join(TEXTS)), bundle.seq_len)
    with pytest.raises(UnlearnError, match="no exact reference"):
        hf_finetune.refine_tune(bundle.settings, windows)


def test_char_lm_import_does_not_import_transformers():
    code = ("import sys, unlearning.text.lm, unlearning.text.evidence, unlearning.references; "
            "print('transformers' in sys.modules, 'peft' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_affected_token_windows_hold_every_secret_token(bundle):
    text = "\n".join(TEXTS)
    spans = [(i, i + len(SECRET)) for i in range(len(text)) if text.startswith(SECRET, i)]
    tilde = text
    for s, e in spans:
        tilde = tilde[:s] + "<REDACTED>*********" + tilde[e:]
    request = hf_tokens.affected_token_windows(bundle.vocab, text, tilde, spans, bundle.seq_len)
    ids, offsets = bundle.vocab.encode_with_offsets(text)
    windows = charlm.windows(ids, bundle.seq_len)
    assert torch.equal(request.Z, windows[request.index])
    starts = charlm.window_starts(len(ids), bundle.seq_len)
    secret_tokens = hf_tokens.token_spans(offsets, spans).nonzero().squeeze(1)
    covered = {int(t) for i in request.index for t in range(int(starts[i]), int(starts[i]) + bundle.seq_len + 1)}
    in_some_window = {int(t) for t in secret_tokens if t < int(starts[-1]) + bundle.seq_len + 1}
    assert in_some_window and in_some_window <= covered
    untouched = torch.ones(len(windows), dtype=torch.bool)
    untouched[request.index] = False
    assert not any(set(range(int(starts[i]), int(starts[i]) + bundle.seq_len + 1)) & in_some_window
                   for i in untouched.nonzero().squeeze(1))
    assert torch.equal(request.apply(windows), charlm.windows(bundle.vocab.encode(tilde), bundle.seq_len))
    assert len(request.Z_tilde) and all({"<", "*"} & set(bundle.vocab.decode(w)) for w in request.Z_tilde)


def test_log_perplexities_match_scoring_the_whole_sequence(bundle):
    prefix, candidates = "my card number is ", [SECRET, "1234 5678 9012 3456", "0000 0000 0000 0001"]
    got = exposure.log_perplexities(bundle.model, bundle.vocab, prefix, candidates)
    for value, bits in zip(candidates, got):
        ids, offsets = bundle.vocab.encode_with_offsets(prefix + value)
        first = int((offsets[:, 1] > len(prefix)).nonzero()[0])
        logits, _ = bundle.model(ids[None, :-1])
        logp = torch.log_softmax(logits[0].double(), -1)[torch.arange(len(ids) - 1), ids[1:]]
        assert float(bits) == pytest.approx(float(-logp[first - 1:].sum()) / 0.6931471805599453, rel=1e-9)


def test_generation_continues_the_prefix_with_the_cache(bundle):
    greedy = hf_tokens.generate(bundle.model, bundle.vocab, "my card", 6)
    ids = bundle.vocab.encode("my card")[None]
    for _ in range(6):
        logits, _ = bundle.model(ids)
        ids = torch.cat([ids, logits[:, -1, :len(bundle.vocab)].argmax(-1, keepdim=True)], dim=1)
    assert greedy == bundle.vocab.decode(ids[0, len(bundle.vocab.encode("my card")):])


def test_auto_for_a_hugging_face_model_is_npo_up_to_the_window_limit():
    assert lm.auto_method(1, hf_model=True) == lm.auto_method(lm.AUTO_MAX_WINDOWS, hf_model=True) == "npo"
    assert lm.auto_method(lm.AUTO_MAX_WINDOWS + 1, hf_model=True) == "retrain"
    assert lm.auto_method(1) == "suppress"  # the char LM's choice is unchanged


def test_generation_longer_than_the_context_stays_within_the_positions(bundle):
    """64 positions: a long prefix is cut from the left and the continuation capped, never an index error."""
    out = hf_tokens.continuations(bundle.model, bundle.vocab, [" ".join(TEXTS)], 200, samples=1, seed=0)
    assert len(out[0]) == 2 and all(isinstance(t, str) and t for t in out[0])
