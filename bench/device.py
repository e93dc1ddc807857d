"""`python -m bench.device`: the deep models on a chosen device — train, update, retrain, quality.

Three scenarios, each timed on `--device` (default auto: a CUDA GPU when torch sees one, else the
CPU) in `--precision`:
- char LM: the built-in `shakespeare` corpus (300k characters with injected secrets), a char-LSTM
  trained `--text-steps` steps; one card number (its 8 pastes) redacted; the update is what `auto`
  picks for that request (registry.choose), the reference retrains from scratch on the redacted
  corpus with the same schedule. Exposure of the card (bits, `--candidates` same-format
  references) and held-out perplexity, after the update and in the retrained model.
- GPT-style: the same corpus and card on a tiny GPT-2-style checkpoint built here (a byte-level BPE
  tokenizer trained on the corpus + a randomly initialised config; no download), fine-tuned
  `--hf-steps` steps; retraining = fine-tuning the base checkpoint again on the redacted corpus.
  Needs `unlearning.text.hf`; without it the row says "hf: not available".
- images: a CNN on scikit-learn's 8×8 digits (tiny preset) or Fashion-MNIST (`--images fashion`,
  small preset on `--subset` images), class 3 forgotten with `auto` (alignment), retraining on D'.
  Forgotten-class test accuracy (0 is forgotten) and the other classes' test accuracy. The image
  update methods run on the CPU (tasks.devices): only training and retraining use the device.

Wall-clock seconds are measured after the device's queue is drained (devices.synchronize). The
defaults fit a few minutes on 2 CPU cores (measured: ~3 min without the GPT-style row, ~2.5 min
for it); on a GPU, size it up (`--preset small --text-steps 400 --hf-steps 400 --hf-layers 12
--hf-embd 768 --hf-heads 12 --images fashion`) so the fast path has something to do.

    python -m bench.device [--device auto|cpu|cuda[:N]|mps] [--precision fp32|bf16|fp16]
                           [--scenarios text,hf,images] [--preset tiny] [--text-steps 300] [--hf-steps 60]
                           [--hf-layers 2] [--hf-embd 64] [--hf-heads 2]
                           [--candidates 200] [--images digits|fashion] [--subset 3000] [--results PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from tasks.scan import scan_corpus
from unlearning import devices
from unlearning.errors import UnlearnError
from unlearning.text import lm
from unlearning.text.data import TextCorpus, redact
from unlearning.text.shakespeare import build_shakespeare

SALT = b"unlearnflow/bench/device"
COLUMNS = ("scenario", "device", "precision", "train s", "update", "update s", "retrain s",
           "exposure / accuracy (after · retrained)", "perplexity / accuracy (after · retrained)")


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def timed(on: torch.device, fn, *args, **kwargs):
    """(fn's result, wall-clock seconds with the device's queue drained before and after)."""
    devices.synchronize(on)
    started = time.perf_counter()
    out = fn(*args, **kwargs)
    devices.synchronize(on)
    return out, time.perf_counter() - started


# --- text: the request every text row removes ------------------------------------------------------

class CardRequest:
    """One card number of the built-in corpus (all its occurrences) redacted; the value in memory only."""

    def __init__(self, corpus: TextCorpus):
        findings = scan_corpus(corpus, SALT)
        cards = [f for f in findings if f["detector"] == "card"]
        chosen = [f for f in cards if f["fingerprint"] == cards[0]["fingerprint"]]
        self.corpus, self.findings = corpus, chosen
        self.after = redact(corpus, lm.occurrences_of(chosen), policy="token")
        [self.secret] = lm.secrets_of(corpus, chosen)


def text_row(name: str, device: torch.device, precision: str, card: CardRequest, candidates: int,
             trained: lm.LMBundle, train_s: float, retrain) -> list:
    """Update (auto) and retrain `trained`; exposure and perplexity of both. `retrain()` → a bundle."""
    request, windows = lm.window_request(trained, card.corpus, card.after, card.findings)
    method = lm.auto_method(len(request), hf_model=lm.is_hf(trained))  # as the pipeline's `auto` decides
    (updated, _, _), update_s = timed(device, lm.run_lm_method, method, trained, request, windows)
    reference, retrain_s = timed(device, retrain)
    exposure = [lm.secret_exposure(b, card.secret, candidates) for b in (updated, reference)]
    ppl = [lm.held_out_perplexity(b, card.after) for b in (updated, reference)]
    return [name, devices.describe(device), precision, train_s, method, update_s, retrain_s,
            f"{exposure[0]:.1f} · {exposure[1]:.1f} bits (before {lm.secret_exposure(trained, card.secret, candidates):.1f})",
            f"{ppl[0]:.3f} · {ppl[1]:.3f}"]


def char_lm_row(device: torch.device, precision: str, card: CardRequest, preset: str, steps: int,
                candidates: int) -> list:
    say(f"char LM: training {preset} for {steps} steps on {device} ...")
    (trained, _), train_s = timed(device, lm.train_text_model, card.corpus, preset, steps=steps, device=str(device),
                                  precision=precision)
    request, windows = lm.window_request(trained, card.corpus, card.after, card.findings)

    def retrain():
        return lm.run_lm_method("retrain", trained, request, windows)[0]  # the same schedule and precision

    say("char LM: update and retraining ...")
    return text_row(f"char LM ({preset}, {steps} steps)", device, precision, card, candidates, trained, train_s, retrain)


def gpt_row(device: torch.device, precision: str, card: CardRequest, steps: int, candidates: int,
            size: dict) -> list:
    """The GPT-style row through hflib's contract: build_tiny_checkpoint, load_pretrained, fine_tune."""
    import importlib

    hf = importlib.import_module("unlearning.text.hf")  # ImportError: the caller prints "hf: not available"
    from unlearning.text import hf_checkpoint, hf_finetune

    texts = [text for _, text in card.corpus.records]
    with tempfile.TemporaryDirectory(prefix="bench-device-") as folder:
        say("GPT-style: building a tiny GPT-2-style checkpoint (BPE tokenizer trained on the corpus) ...")
        checkpoint = hf_checkpoint.build_tiny_checkpoint(texts, Path(folder) / "tiny-gpt", **size)

        def fine_tuned(corpus: TextCorpus) -> lm.LMBundle:
            base = hf.load_pretrained(checkpoint, seq_len=64, seed=0)
            base.model.to(device)
            return hf_finetune.fine_tune(base, corpus, steps=steps, seed=0, precision=precision)[0]

        say(f"GPT-style: fine-tuning {steps} steps on {device} ...")
        trained, train_s = timed(device, fine_tuned, card.corpus)
        say("GPT-style: update and re-fine-tuning ...")
        n_params = sum(p.numel() for p in trained.model.parameters())
        return text_row(f"GPT-style ({n_params / 1e6:.1f}M params, {steps} steps)", device,
                        precision, card, candidates, trained, train_s,
                        lambda: fine_tuned(card.after))


# --- images -------------------------------------------------------------------------------------

def image_data(which: str, subset: int):
    """(X_train, y_train, X_test, y_test, preset)."""
    if which == "fashion":
        from unlearning.images.data import build_fashion_mnist

        data = build_fashion_mnist(n_train=subset, n_test=2000, allow_download=False)
        X = torch.from_numpy(data.images.astype("float32") / 255.0)
        y = torch.from_numpy(data.labels.astype("int64"))
        train = torch.from_numpy(data.train)
        return X[train], y[train], X[~train], y[~train], "small"
    from sklearn.datasets import load_digits

    digits = load_digits()
    X = torch.tensor(digits.images[:, None] / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target, dtype=torch.long)
    return X[:1400], y[:1400], X[1400:], y[1400:], "tiny"


def image_row(device: torch.device, precision: str, which: str, subset: int, forget: int = 3) -> list:
    from unlearning.images import ImageData, baselines, cnn, forget_class
    from unlearning.images.registry import run_image_method
    from unlearning.linalg import single_threaded

    X, y, X_test, y_test, preset = image_data(which, subset)
    schedule = cnn.TrainSchedule.from_preset(preset, precision=precision)
    model = cnn.CNN.from_preset(preset, n_classes=10, seed=0).to(device)
    say(f"images: training the {preset} CNN on {len(X)} images on {device} ...")
    # one CPU thread, as the pipeline trains and retrains a CNN (bundle.train_image_model, references.train)
    threads = single_threaded if device.type == "cpu" else contextlib.nullcontext
    with threads():
        _, train_s = timed(device, cnn.train, model, X, y, schedule)
        where = devices.describe(device)
    model.cpu()  # the image update methods run on the CPU (tasks.devices)
    data, request = ImageData(X, y, schedule), forget_class(y, forget)
    say("images: update (auto) on the CPU and retraining on the device ...")
    updated = run_image_method("auto", model, data, request)
    with threads():
        retrained, retrain_s = timed(device, baselines.retrain_on, model.config, *request.d_prime(data), schedule,
                                     None, device)
    gone, kept = y_test == forget, y_test != forget
    models = (updated.model, retrained.model.cpu())
    forgotten = [cnn.accuracy(m, X_test[gone], y_test[gone]) for m in models]
    others = [cnn.accuracy(m, X_test[kept], y_test[kept]) for m in models]
    return [f"images ({which}, {preset} CNN, {len(X)} images)", where, precision, train_s,
            f"{updated.method} (cpu)", updated.stats["seconds"], retrain_s,
            f"class {forget}: {forgotten[0]:.3f} · {forgotten[1]:.3f} acc", f"others {others[0]:.3f} · {others[1]:.3f} acc"]


# --- the table ----------------------------------------------------------------------------------

def markdown(rows: list[list]) -> str:
    def cell(v):
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def machine(device: torch.device) -> str:
    load = ""
    with contextlib.suppress(OSError, AttributeError):
        import os

        load = f", load {os.getloadavg()[0]:.1f}"
    return (f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node() or 'host'}, torch {torch.__version__}, "
            f"{devices.describe(device)}{load}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.device", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    parser.add_argument("--precision", default="fp32", help="fp32 (default), bf16 or fp16 (a GPU only)")
    parser.add_argument("--scenarios", default="text,hf,images", help="comma-separated: text, hf, images")
    parser.add_argument("--preset", default="tiny", choices=["tiny", "small"], help="char LM size (default tiny)")
    parser.add_argument("--text-steps", type=int, default=300, help="char LM training steps (default 300)")
    parser.add_argument("--hf-steps", type=int, default=60, help="GPT-style fine-tuning steps (default 60)")
    parser.add_argument("--hf-layers", type=int, default=2, help="GPT-style blocks (default 2)")
    parser.add_argument("--hf-embd", type=int, default=64, help="GPT-style width (default 64; GPT-2 small: 768)")
    parser.add_argument("--hf-heads", type=int, default=2, help="GPT-style attention heads (default 2)")
    parser.add_argument("--candidates", type=int, default=200, help="same-format references per exposure (default 200)")
    parser.add_argument("--images", default="digits", choices=["digits", "fashion"], help="image data (default digits)")
    parser.add_argument("--subset", type=int, default=3000, help="Fashion-MNIST training images (default 3000)")
    parser.add_argument("--results", type=Path, help="also write the table (markdown) to this file")
    args = parser.parse_args(argv)
    try:
        compute = devices.Compute.of(args.device, args.precision)
    except UnlearnError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    device, precision = compute.torch_device, compute.precision
    wanted = {s.strip() for s in args.scenarios.split(",") if s.strip()}
    rows, notes = [], []
    card = CardRequest(build_shakespeare()) if wanted & {"text", "hf"} else None
    if "text" in wanted:
        rows.append(char_lm_row(device, precision, card, args.preset, args.text_steps, args.candidates))
    if "hf" in wanted:
        try:
            size = {"n_layer": args.hf_layers, "n_embd": args.hf_embd, "n_head": args.hf_heads}
            rows.append(gpt_row(device, precision, card, args.hf_steps, args.candidates, size))
        except ImportError as err:
            notes.append(f"hf: not available ({err})")
    if "images" in wanted:
        rows.append(image_row(device, precision, args.images, args.subset))
    table = "\n".join([f"Measured {machine(device)}.", "", markdown(rows), *([""] + notes if notes else [])])
    print(table)
    if args.results:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
