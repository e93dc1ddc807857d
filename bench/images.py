"""Image unlearning on Fashion-MNIST: every method of unlearning.images against retraining.

Three scenarios (issue 4), each on a CNN (small preset) trained on the first `--subset` training
images, evaluated on the first 2,000 test images:
- class:  forget every training image of one class (Trouser, Coat, Sneaker for seeds 1, 2, 3; Bag for 0);
          TA and the MIA non-members use the test images of the other classes.
- random: forget a random 10 % of the training images.
- poison: the original is trained with 10 % of the Pullover↔Coat images' labels flipped; the
          request repairs them (fix_labels). UA is measured on the flipped (recorded) labels.
Rows: methods; columns: the metrics of unlearning.metrics, RTE, speed-up against the retraining
of the same run, and the average gap to retraining over UA/RA/TA/MIA-efficacy, as mean ± std over
the reported seeds 1..N. Seed 0 is the tuning seed and is never reported: alignment's defaults
were tuned on it (class forgetting, class Bag; see AlignmentConfig), and `--search` reruns the
SGD baselines' lr search on it (the lr with the smallest average gap to retraining, as in the
SalUn/ℓ1-sparse papers); without it the lrs of LRS are used (found by that search). The default
`alignment` runs 12 % of the original training's cost (AlignmentConfig; issue 13: ≤ 20 % of
retraining's CPU time); variants: `alignment@1ep`, the previous default (one pass over D'), and
`alignment@8%`, the earlier budget preset. Targets are computed from the means and printed
met/missed.

    python -m bench.images            # 3 seeds × 3 scenarios (~40–60 min on 2 shared cores)
    python -m bench.images --quick    # 1 seed, 800 images, 2 epochs: a smoke run
    python -m bench.images --records 5 [--records-epochs 2,40]
                                      # the default on 1–5 image deletions (bench.stream's requests)

`--records N`: the first N requests of bench.stream's image stream (seed 0: 1–5 random images
each) deleted one at a time from a CNN on `--records-subset` images (800) trained 2 epochs (the
stream's model) and 40 (one that fits its images, bench.checks_images' `:fit`): the default's CPU
share of retraining, the image evidence checks and the reference checks (as the pipeline runs
them), and the deleted images' mean loss before, after and in the retrained model.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from unlearning.images import ImageData, delete_records, fix_labels, forget_class
from unlearning.images import cnn
from unlearning.images.data import build_fashion_mnist
from unlearning.images.registry import IMAGE_METHODS, run_image_method
from unlearning.images.verify import markdown_table
from unlearning.linalg import single_threaded
from unlearning.metrics import compare_to_retrain, evaluate_model

CLASSES = (8, 1, 4, 7)  # seed 0 (tuning): Bag; reported seeds 1, 2, 3: Trouser, Coat, Sneaker
PAIR = (2, 4)  # Pullover ↔ Coat
# The lrs the search on seed 0 chose (3,000 images; `--search` redoes it).
LRS = {"class": {"finetune": 0.05, "gradient_ascent": 0.02, "random_labels": 0.01, "scrub": 0.005, "salun": 0.01,
                 "l1_sparse": 0.05},
       "random": {"finetune": 0.05, "gradient_ascent": 0.005, "random_labels": 0.005, "scrub": 0.005, "salun": 0.005,
                  "l1_sparse": 0.05},
       "poison": {"finetune": 0.05, "gradient_ascent": 0.005, "random_labels": 0.01, "scrub": 0.005, "salun": 0.01,
                  "l1_sparse": 0.05}}
LR_GRID = {"finetune": (0.05, 0.2), "gradient_ascent": (0.005, 0.02), "random_labels": (0.005, 0.01),
           "scrub": (0.005, 0.02), "salun": (0.005, 0.01), "l1_sparse": (0.05, 0.2)}
# Earlier alignment settings (AlignmentConfig docstring), benchmarked beside the default: the
# default before issue 13 (one pass over D', the average gap the default must not exceed), the
# earlier budget preset (8 %, tuned on seeds 0 and 4) and issue 13's first default (12 %, a forget
# step before every recover step).
VARIANTS = {"alignment@1ep": ("alignment", {"epochs": 1.0, "lam_da": 10.0, "clip": 10.0, "refresh": 10,
                                           "sd_without_forgotten_class": False, "forget_until": 1.0}),
            "alignment@8%": ("alignment", {"epochs": None, "budget": 0.08, "lam_da": 100.0, "clip": 20.0, "refresh": 2,
                                          "sd_without_forgotten_class": True, "min_steps": 1, "forget_until": 1.0}),
            "alignment@12%": ("alignment", {"budget": 0.12, "forget_until": 1.0}),
            "alignment@settle": ("alignment", {"settle": 0.08})}
# `auto` as the pipeline runs it (evidence mode, retraining as the fall-back) over each fast update:
# the default, and alignment with the settle rung (issue 13 §3's candidate)
AUTOS = {"auto": "alignment", "auto@settle": "alignment@settle"}
OLD_DEFAULT = "alignment@1ep"
MAX_SHARE = 0.20  # issue 13 §3: the default update costs at most this share of retraining's CPU time
KEYS = ("ua", "ra", "ta", "mia_efficacy", "mia_auc", "da", "lp", "nmi", "f1", "rte_s", "cpu_s", "speedup",
        "avg_gap")
OUT = Path(__file__).parent / "results" / "images.md"


def tensors(images: np.ndarray, labels: np.ndarray):
    return torch.from_numpy(images.astype(np.float32) / 255.0), torch.from_numpy(labels.astype(np.int64))


def train_original(X, y, epochs: float, seed: int):
    schedule = cnn.TrainSchedule.from_preset("small", epochs=epochs, seed=seed, init_seed=seed)
    model = cnn.CNN.from_preset("small", seed=seed)
    with single_threaded():
        cnn.train(model, X, y, schedule)
    return model, ImageData(X, y, schedule)


def scenario_request(kind: str, y: torch.Tensor, seed: int):
    """(request, training labels the original is trained on, test class to exclude)."""
    rng = np.random.default_rng(seed)
    if kind == "class":
        return forget_class(y, CLASSES[seed % 4]), y, CLASSES[seed % 4]
    if kind == "random":
        return delete_records(len(y), rng.choice(len(y), len(y) // 10, replace=False)), y, None
    pair = np.flatnonzero(np.isin(y.numpy(), PAIR))
    flipped = np.sort(rng.choice(pair, len(pair) // 10, replace=False))
    poisoned = y.clone()
    a, b = PAIR
    poisoned[flipped] = torch.where(y[flipped] == a, b, a)
    return fix_labels(poisoned, flipped, y[flipped]), poisoned, None


def evaluate(model, data: ImageData, request, test) -> dict:
    with single_threaded():
        return evaluate_model(model, (data.X[request.forget], data.y[request.forget]),
                              (data.X[request.retain], data.y[request.retain]), test)


def run_once(kind: str, seed: int, fm, args, lrs: dict[str, float], search: bool) -> tuple[list[dict], dict]:
    train = fm.train
    X, y_true = tensors(fm.images[train], fm.labels[train])
    request, y, excluded = scenario_request(kind, y_true, seed)
    model, data = train_original(X, y, args.epochs, seed)
    test_mask = (~fm.train) & (fm.labels != (-1 if excluded is None else excluded))
    test = tensors(fm.images[test_mask], fm.labels[test_mask])
    rows = [{"method": "original", **evaluate(model, data, request, test), "rte_s": 0.0, "cpu_s": 0.0}]
    reference = run_image_method("retrain", model, data, request)
    rows.append({"method": "retrain", **evaluate(reference.model, data, request, test),
                 "rte_s": reference.stats["seconds"], "cpu_s": reference.stats["cpu_seconds"]})
    plan = [(m, m, {}) for m in IMAGE_METHODS if m != "retrain"] + [(n, m, o) for n, (m, o) in VARIANTS.items()]
    plan = [p for p in plan if args.methods is None or p[0] in args.methods]
    models = []  # (name, model) of the rows run without an lr search: `auto` needs alignment's
    for name, method, options in plan:
        if method in LR_GRID and method == name:
            candidates = LR_GRID[method] if search else (lrs[method],)
            tried = []
            for lr in candidates:
                result = run_image_method(method, model, data, request, {**options, "lr": lr})
                row = {"method": name, **evaluate(result.model, data, request, test), "rte_s": result.stats["seconds"],
                       "cpu_s": result.stats["cpu_seconds"], "lr": lr}
                tried.append(compare_to_retrain([rows[1], row])[1])
            best = min(tried, key=lambda r: r["avg_gap"] if r["avg_gap"] == r["avg_gap"] else math.inf)
            lrs[method] = best["lr"]
            rows.append({k: v for k, v in best.items() if not k.startswith("gap_") and k != "avg_gap"})
        else:
            result = run_image_method(method, model, data, request, options)
            models.append((name, result.model))
            rows.append({"method": name, **evaluate(result.model, data, request, test),
                         "rte_s": result.stats["seconds"], "cpu_s": result.stats["cpu_seconds"]})
        print(f"    {kind} seed {seed}: {name} done", flush=True)
    for name, fast in AUTOS.items():
        if fast in dict(models) and request.corrected is None:  # label fixes: not yet
            rows.append(auto_row(name, fast, model, dict(models)[fast], reference, data, request, fm, test, rows))
    rows = compare_to_retrain(rows)
    # Speed-up in CPU time (every method runs single-threaded): wall-clock ratios on the shared
    # machine swung with the other jobs (retraining 17 s quiet, 221 s under load 9).
    retrain_cpu = rows[1]["cpu_s"]
    for row in rows:
        row["speedup"] = retrain_cpu / row["cpu_s"] if row["cpu_s"] > 0 else None
    return rows, lrs


def request_images(data: ImageData, request, fm, excluded: int | None):
    """The evidence's sets as the pipeline builds them (tasks.kinds.images_verify.request_images), with
    the dataset's record ids: Z, D \\ Z, the test split (without a forgotten class, at most
    max_test) and the held-out images of Z's classes."""
    from unlearning.images.evidence import RequestImages, control_positions
    from unlearning.images.verify import ImageVerifyConfig

    cfg = ImageVerifyConfig()
    train_ids = [fm.record_ids[p] for p in np.flatnonzero(fm.train)]
    test = np.flatnonzero(~fm.train & (fm.labels != (-1 if excluded is None else excluded)))
    if len(test) > cfg.max_test:
        test = np.sort(np.random.default_rng(0).choice(test, cfg.max_test, replace=False))
    controls = control_positions(fm.train, fm.labels, set(data.y[request.forget].tolist()), cfg.evidence.max_controls)

    def part(positions):
        return (*tensors(fm.images[positions], fm.labels[positions]), [fm.record_ids[p] for p in positions])

    kept = torch.ones(len(data.y), dtype=torch.bool)
    kept[request.forget] = False
    return RequestImages((data.X[request.forget], data.y[request.forget], [train_ids[i] for i in request.forget.tolist()]),
                         (data.X[request.retain], data.y[request.retain], [train_ids[i] for i in request.retain.tolist()]),
                         part(test), part(controls), frozenset(torch.unique(data.y[kept]).tolist()), False)


def evidence_verdict(before, after, images) -> tuple[list[dict], float]:
    """(the evidence checks of `after` against the trained original, as a request on it runs them
    — no earlier exact model to drift from —, their CPU seconds)."""
    from unlearning.images.evidence import judge_request
    from unlearning.images.verify import ImageVerifyConfig

    started = time.process_time()
    with single_threaded():
        judged = judge_request(before, after, images, ImageVerifyConfig().evidence)
    return judged.checks, time.process_time() - started


def auto_row(name: str, fast: str, model, fast_model, reference, data: ImageData, request, fm, test,
             rows: list[dict]) -> dict:
    """What `auto` does in the pipeline (evidence mode): the fast update (row `fast`), judged by the
    evidence checks; where they fail, the CNN retrained on D' (the same job as the reference: the
    same model) is promoted instead. CPU = the update's + the retraining's when it fell back (the
    evidence's own CPU, paid by every request, is `evidence_cpu_s`, not in it)."""
    excluded = request.forget_class
    checks, evidence_cpu = evidence_verdict(model, fast_model, request_images(data, request, fm, excluded))
    failed = [c["name"] for c in checks if not c["passed"]]
    by = {r["method"]: r for r in rows}
    fast_cpu = by[fast]["cpu_s"]
    chosen, cpu = (reference.model, fast_cpu + by["retrain"]["cpu_s"]) if failed else (fast_model, fast_cpu)
    return {"method": name, "fast": fast, **evaluate(chosen, data, request, test), "rte_s": by[fast]["rte_s"] + (
        by["retrain"]["rte_s"] if failed else 0.0), "cpu_s": cpu, "fell_back": bool(failed),
            "evidence": f"{len(checks) - len(failed)}/{len(checks)}" + (f" (failed: {', '.join(failed)})" if failed else ""),
            "evidence_cpu_s": evidence_cpu}


def auto_table(kind: str, runs: list[list[dict]], first_seed: int, name: str = "auto") -> list[str]:
    """Per seed: what `auto` (`name`) did, its CPU share of the retraining (the fall-back's included), its
    gap, the fast update's own share and gap and the evidence verdict on it; then the means."""
    if any(name not in {r["method"] for r in run} for run in runs):
        return []
    fast = next(r["fast"] for r in runs[0] if r["method"] == name)
    lines = [f"`{name}` ({kind}): {fast} judged by the evidence checks (as a request runs them), retrained on "
             "D' where they fail. Shares are of the same run's retraining CPU time; the evidence's CPU is "
             "beside, not in them.", "",
             f"| seed | retrain CPU s | {fast} share | {fast} gap | evidence on {fast} | {name} | {name} share "
             f"| {name} gap | evidence CPU s |", "|---|---:|---:|---:|---|---|---:|---:|---:|"]
    shares, gaps, alone_shares, alone_gaps = [], [], [], []
    for seed, run in enumerate(runs, first_seed):
        by = {r["method"]: r for r in run}
        r, a, au = by["retrain"], by[fast], by[name]
        share, alone = au["cpu_s"] / r["cpu_s"], a["cpu_s"] / r["cpu_s"]
        shares.append(share), gaps.append(au["avg_gap"]), alone_shares.append(alone), alone_gaps.append(a["avg_gap"])
        lines.append(f"| {seed} | {r['cpu_s']:.2f} | {100 * alone:.1f} % | {a['avg_gap']:.2f} | {au['evidence']} "
                     f"| {'fell back (retrained)' if au['fell_back'] else fast} | {100 * share:.1f} % "
                     f"| {au['avg_gap']:.2f} | {au['evidence_cpu_s']:.2f} |")
    mean, passed = statistics.fmean, sum(not r["fell_back"] for run in runs for r in run if r["method"] == name)
    lines.append(f"| **mean** | | {100 * mean(alone_shares):.1f} % | {mean(alone_gaps):.2f} | {passed}/{len(runs)} passed "
                 f"| | {100 * mean(shares):.1f} % | {mean(gaps):.2f} | |")
    return lines + [""]


def aggregate(runs: list[list[dict]]) -> list[dict]:
    """mean ± std per method and key over seeds, as display strings (and the means)."""
    out, named = [], [{r["method"]: r for r in run} for run in runs]  # by name: runs may list rows in other orders
    for first in runs[0]:
        row = {"method": first["method"]}
        same = [n[first["method"]] for n in named if first["method"] in n]
        for key in KEYS:
            values = [r[key] for r in same if r.get(key) is not None and r[key] == r[key]]
            if not values:
                row[key] = None
                continue
            mean = statistics.fmean(values)
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            row[f"{key}_mean"] = mean
            digits = 3 if key in ("mia_auc", "da", "nmi", "f1") else 1 if key != "avg_gap" else 2
            row[key] = f"{mean:.{digits}f} ± {sd:.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"
        if first.get("lr") is not None:
            row["method"] = f"{first['method']} (lr {first['lr']:g})"
        out.append(row)
    return out


def targets(rows: list[dict]) -> list[str]:
    by = {r["method"].split(" (")[0]: r for r in rows}
    a, r = by["alignment"], by["retrain"]
    baselines = [m for m in by if m not in ("original", "retrain", "alignment", *AUTOS, *VARIANTS)]
    lines = [f"- DA within 0.05 of retrain's: {a['da_mean']:.3f} vs {r['da_mean']:.3f} — "
             f"{'met' if abs(a['da_mean'] - r['da_mean']) <= 0.05 else 'MISSED'}"]
    if baselines:  # --methods may leave them out
        best = min(baselines, key=lambda m: by[m]["avg_gap_mean"])
        lines.insert(0, f"- average gap to retrain smaller than every baseline's: alignment {a['avg_gap_mean']:.2f}, "
                        f"best baseline {best} {by[best]['avg_gap_mean']:.2f} — "
                        f"{'met' if a['avg_gap_mean'] < by[best]['avg_gap_mean'] else 'MISSED'}")
    if OLD_DEFAULT in by:
        old = by[OLD_DEFAULT]["avg_gap_mean"]
        lines.append(f"- alignment's average gap no worse than the previous default's ({OLD_DEFAULT}): "
                     f"{a['avg_gap_mean']:.2f} vs {old:.2f} — {'met' if a['avg_gap_mean'] <= old else 'MISSED'}")
    for name in ("alignment", *(v for v in VARIANTS if v in by)):
        key = "cpu_s_mean" if "cpu_s_mean" in r else "rte_s_mean"  # runs saved before cpu_s existed: wall-clock
        share = by[name][key] / r[key]
        lines.append(f"- {name} time ≤ {100 * MAX_SHARE:.0f} % of retraining ({key.split('_')[0]} time): "
                     f"{100 * share:.0f} % — {'met' if share <= MAX_SHARE else 'MISSED'}"
                     + (f" (its average gap {by[name]['avg_gap_mean']:.2f})" if name != "alignment" else ""))
    return lines


def record_requests(n_images: int, count: int, seed: int = 0) -> list[list[int]]:
    """bench.stream's image requests: `count` deletions of 1–5 distinct random images."""
    rng = np.random.default_rng([seed, 3])
    order = list(rng.permutation(n_images))
    return [sorted(int(order.pop()) for _ in range(int(rng.integers(1, 6)))) for _ in range(count)]


def mean_loss(model, X, y) -> float:
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(model(X), y))


def record_checks(model, before, retrained, data: ImageData, request, fm, test) -> tuple[list[dict], list[dict]]:
    """(evidence checks, reference checks) of `model` for a deletion, as the pipeline runs them."""
    from unlearning.images import evidence
    from unlearning.images.verify import ImageVerifyConfig, image_checks
    cfg = ImageVerifyConfig()
    classes = set(data.y[request.forget].tolist())
    controls = evidence.control_positions(fm.train, fm.labels, classes, cfg.evidence.max_controls)
    sets = evidence.evidence_sets(data, request, tensors(fm.images[controls], fm.labels[controls]))
    rows = {name: evaluate(m, data, request, test) for name, m in (("before", before), ("after", model),
                                                                    ("retrain", retrained))}
    found = evidence.evidence_of(model, sets, cfg.evidence)
    return (evidence.evidence_checks(found, rows["after"], rows["before"], cfg.evidence),
            image_checks(rows["after"], rows["before"], rows["retrain"], request.kind, cfg,
                         n_forget=len(request.forget)))


def records_scenario(args, fm) -> list[str]:
    """The default on a few deleted records (module doc, `--records`), as markdown lines."""
    X, y = tensors(fm.images[fm.train], fm.labels[fm.train])
    test = tensors(fm.images[~fm.train], fm.labels[~fm.train])
    lines = ["## records", "", f"The first {args.records} requests of bench.stream's image stream, each deleted alone "
             f"from the original ({len(y)} images). Share = the default's CPU time / retraining's in the same run; "
             "loss = the deleted images' mean cross-entropy (original → default; retrained).", "",
             "| epochs | request | images | retrain CPU s | default CPU s (share) | path | loss original → default "
             "| loss retrained | evidence checks | reference checks |", "|---|---|---:|---:|---:|---|---|---:|---|---|"]
    for epochs in args.records_epochs:
        model, data = train_original(X, y, epochs, 0)
        for k, idx in enumerate(record_requests(len(y), args.records), 1):
            request = delete_records(len(y), idx)
            reference = run_image_method("retrain", model, data, request)
            result = run_image_method("alignment", model, data, request)
            evidence_checks, reference_checks = record_checks(result.model, model, reference.model, data, request,
                                                              fm, test)
            Xf, yf = data.X[request.forget], data.y[request.forget]

            def verdict(checks):
                failed = [c["name"] for c in checks if not c["passed"]]
                unsure = [c["name"] for c in checks if c.get("decided") is False]  # could not have failed
                passed = f"{len(checks) - len(failed) - len(unsure)}/{len(checks)}"
                return passed + (f" (failed: {', '.join(failed)})" if failed else "") + (
                    f" (undecided: {', '.join(unsure)})" if unsure else "")

            cpu, retrain_cpu = result.stats["cpu_seconds"], reference.stats["cpu_seconds"]
            lines.append(f"| {epochs:g} | {k} | {len(idx)} | {retrain_cpu:.2f} "
                         f"| {cpu:.3f} ({100 * cpu / retrain_cpu:.1f} %) "
                         f"| {result.stats.get('path', '-')} | {mean_loss(model, Xf, yf):.3f} → "
                         f"{mean_loss(result.model, Xf, yf):.3f} | {mean_loss(reference.model, Xf, yf):.3f} "
                         f"| {verdict(evidence_checks)} | {verdict(reference_checks)} |")
            print(lines[-1], flush=True)
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 800 images, 2 epochs (smoke run)")
    parser.add_argument("--seeds", type=int, default=3, help="reported seeds 1..N (seed 0 is the tuning seed)")
    parser.add_argument("--first-seed", type=int, default=1, help="report seeds first..first+N−1 (to split a run "
                        "over processes; keep it ≥ 1)")
    parser.add_argument("--search", action="store_true", help="redo the baselines' lr search on tuning seed 0")
    parser.add_argument("--subset", type=int, default=3000, help="training images (first N of the train file)")
    parser.add_argument("--epochs", type=float, default=4.0, help="epochs of the original and retrained CNN")
    parser.add_argument("--scenarios", default="class,random,poison")
    parser.add_argument("--methods", default=None, help="only these methods and variants, comma-separated "
                        "(retraining and the original always run; default: all)")
    parser.add_argument("--records", type=int, default=0, help="run only the record-deletion scenario on the "
                        "first N of bench.stream's image requests (module doc)")
    parser.add_argument("--records-subset", type=int, default=800, help="--records: training images")
    parser.add_argument("--records-epochs", default="2,40", help="--records: epochs of the originals, comma-separated")
    parser.add_argument("--out", type=Path, default=None, help="default: bench/results/images[-<scenarios>].md")
    args = parser.parse_args()
    kinds = args.scenarios.split(",")
    unknown = [k for k in kinds if k not in LRS]
    if args.methods is not None:
        args.methods = set(args.methods.split(","))
        unknown += sorted(args.methods - set(IMAGE_METHODS) - set(VARIANTS))
    if unknown or args.seeds < 1 or args.first_seed < 1:
        print(f"bench.images: unknown scenario(s) or method(s) {unknown} (scenarios: {', '.join(LRS)}; methods: "
              f"{', '.join([*IMAGE_METHODS, *VARIANTS])}) or --seeds/--first-seed < 1",
              file=sys.stderr)
        raise SystemExit(2)
    if args.records:
        args.records_epochs = [float(e) for e in args.records_epochs.split(",")]
        fm = build_fashion_mnist(n_train=args.records_subset, n_test=2000, allow_download=False)
        out = args.out or OUT.with_name("images-records.md")
        doc = [f"# The default on deletions of a few images (Fashion-MNIST, {args.records_subset} training images)", "",
               f"Generated by `python -m bench.images {' '.join(sys.argv[1:])}`.", "", *records_scenario(args, fm)]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n".join(doc) + "\n")
        print(f"written {out}")
        return
    if args.out is None:
        args.out = OUT if kinds == list(LRS) else OUT.with_name(f"images-{'-'.join(kinds)}.md")
        if args.first_seed != 1:
            args.out = args.out.with_name(f"{args.out.stem}-from{args.first_seed}.md")
    if args.quick:
        args.seeds, args.subset, args.epochs = 1, 800, 2.0
    started = time.perf_counter()
    fm = build_fashion_mnist(n_train=args.subset, n_test=2000, allow_download=False)
    doc = [f"# Image unlearning on Fashion-MNIST ({args.subset} training images, small CNN, {args.epochs:g} epochs, "
           f"{args.seeds} seed(s))", "", f"Generated by `python -m bench.images {' '.join(sys.argv[1:])}`. "
           "Accuracies and MIA efficacy in %, DA/NMI/F1/MIA-AUC in [0, 1], RTE in wall-clock seconds, CPU s in "
           "CPU seconds (single-threaded), speed-up = retraining CPU time of the same run / the method's, "
           "avg gap = mean |UA, RA, TA, MIA-eff − "
           "retrain| (points). mean ± std over seeds 1.."
           f"{args.seeds} (seed 0 is the tuning seed, not reported).", ""]
    for kind in kinds:
        print(f"[{kind}]", flush=True)
        lrs = dict(LRS[kind])
        if args.search:
            _, lrs = run_once(kind, 0, fm, args, lrs, search=True)  # tuning seed: not reported
            print(f"    {kind}: lrs from the search on seed 0: {lrs}", flush=True)
        runs = []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            rows, lrs = run_once(kind, seed, fm, args, lrs, search=False)
            runs.append(rows)
            raw = args.out.with_name(f"{args.out.stem}-{kind}-runs.json")  # per-seed rows, kept as they come
            raw.parent.mkdir(parents=True, exist_ok=True)
            raw.write_text(json.dumps(runs, indent=1, default=float))
        table = aggregate(runs)
        text = markdown_table(table)
        doc += [f"## {kind}", "", f"lrs of the SGD baselines: {lrs}", "", text]
        if kind == "class":
            doc += ["Targets (class forgetting):", "", *targets(table), ""]
        for name in AUTOS:
            doc += auto_table(kind, runs, args.first_seed, name)
        print(text, flush=True)
    doc.append(f"Total benchmark time {time.perf_counter() - started:.0f} s.")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(doc) + "\n")
    print("\n".join(doc[-1:]) + f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
