"""bench.stream's images scenario: requests deleting 1–5 Fashion-MNIST images each."""

from __future__ import annotations

import numpy as np

from bench.stream.measured import say


# bench.images --quick's setting: Fashion-MNIST, the first 800 training images, the small CNN
# trained 2 epochs. A model is a CNN; D_k = the images left after requests 1..k, in their order.

class Images:
    name = "images"

    def __init__(self, n_requests: int, seed: int, subset: int = 800, epochs: float = 2.0, verify=None,
                 evidence_cfg=None, compare_audits: bool = False):
        import torch
        from unlearning.images.verify import ImageEvidenceConfig, ImageVerifyConfig
        verify, evidence_cfg = verify or ImageVerifyConfig(), evidence_cfg or ImageEvidenceConfig()
        from bench.images import record_requests, tensors, train_original
        from unlearning.images.data import build_fashion_mnist

        fm = build_fashion_mnist(n_train=subset, n_test=2000, allow_download=False)
        X, y = tensors(fm.images[fm.train], fm.labels[fm.train])
        say(f"  [images] training the original CNN ({subset} images, {epochs:g} epochs; not charged) ...")
        self.original, data = train_original(X, y, epochs, seed)
        self.X, self.y, self.schedule = X, y, data.schedule
        self.test = tensors(fm.images[~fm.train], fm.labels[~fm.train])
        self.requests = record_requests(len(y), n_requests, seed)
        alive = torch.ones(len(y), dtype=torch.bool)
        self.alive = [alive.clone()]
        for deleted in self.requests:
            alive[deleted] = False
            self.alive.append(alive.clone())
        self.subset, self.epochs, self.fm, self.tensors = subset, epochs, fm, tensors
        # record ids: positions in the Fashion-MNIST arrays (training images first, as X holds them)
        self.train_ids = [f"fm{p}" for p in np.flatnonzero(fm.train)]
        self.test_ids = [f"fm{p}" for p in np.flatnonzero(~fm.train)]
        # what each model version's evidence knows of its outputs (tasks/state.py `outputs/`): the
        # original's computed when it was trained, as the train flow does (not charged, as training is not)
        from unlearning.images.outputs import KnownOutputs
        from unlearning.metrics import model_outputs
        self.known = {self.original: KnownOutputs.of(self.train_ids, model_outputs(self.original, X, y)).merged(
            KnownOutputs.of(self.test_ids, model_outputs(self.original, *self.test)))}
        # the fast updates, and what each keeps of the exact model its chain of updates started from
        self.fast, self.anchors = set(), {}
        self.judged = {}  # model → its last evidence checks (what a repair is decided on)
        self._chains = {}  # id(fast update) → (it, (the chain its next deletion continues, its first model))
        self.verify, self.evidence_cfg = verify, evidence_cfg
        self.compare_audits, self.audit_verdicts, self.audit_images_judged = compare_audits, [], []

    def describe(self) -> str:
        return (f"Fashion-MNIST, first {self.subset} training images, small CNN {self.epochs:g} epochs; "
                f"{len(self.requests)} requests deleting {sum(map(len, self.requests))} images (1–5 each)")

    def _data(self, k: int):
        from unlearning.images import ImageData
        keep = self.alive[k]
        return ImageData(self.X[keep], self.y[keep], self.schedule)

    def _context(self, model, k_from: int, k_to: int):
        from unlearning.images import delete_records
        from unlearning.images.registry import ImageContext
        before, after = self.alive[k_from], self.alive[k_to]
        positions = (before & ~after)[before].nonzero().squeeze(1)  # the deleted images among D_{k_from}
        return ImageContext(model, self._data(k_from), delete_records(int(before.sum()), positions))

    def retrain(self, j: int):
        from unlearning import registry
        return registry.run("images", "retrain", self._context(self.original, 0, j)).model

    def update(self, model, k: int):
        """`auto` as the pipeline runs it, by the rules of unlearning.images.chain (tasks/kinds/images.py
        follows them too): an unrolled deletion continues the chain the model before keeps (from the
        chain's first model over every image it deleted); a model trained, retrained, updated otherwise
        or audited and kept starts one. A chain is named by its first model itself here."""
        from unlearning import registry
        from unlearning.images import chain as rules
        context = self._context(model, k - 1, k)
        method = registry.choose("images", "auto")
        taken = (rules.continued(self._chains.get(id(model), (None, None))[1], model, model)
                 if rules.takes_the_chain(method, None, context.data, context.request) else None)
        result = registry.run("images", method, context._replace(chain=None if taken is None else taken[0]))
        updated = result.model
        if taken is not None and (first := rules.first_model(taken, result.chain, model)) is not None:
            self._chains[id(updated)] = (updated, (result.chain, first))  # the model too: its id stays its own
        self.fast.add(updated)  # not trained exactly: its evidence also judges it against its chain's anchor
        return updated

    def _forget(self, ks: list[int]):
        idx = [i for k in ks for i in self.requests[k - 1]]
        return self.X[idx], self.y[idx]

    def _metrics(self, model, ks: list[int]) -> dict:
        from unlearning.metrics import evaluate_model
        keep = self.alive[ks[-1]]
        return evaluate_model(model, self._forget(ks), (self.X[keep], self.y[keep]), self.test)

    def reference_checks(self, model, before, ks: list[int], retrained) -> list[dict]:
        """Today's reference verification (unlearning.images.verify) against the retrained CNN."""
        from unlearning.images.verify import ImageVerifyConfig, image_checks
        return image_checks(self._metrics(model, ks), {}, self._metrics(retrained, ks), "delete_records",
                            ImageVerifyConfig(), n_forget=len(self._forget(ks)[1]))

    def evidence_checks(self, model, before, k: int) -> list[dict]:
        """The evidence mode (unlearning.images.evidence.judge_request), as tasks/kinds/images_verify.py runs
        it: the deleted images against held-out images of their classes (accuracy gap, membership
        AUC) in the updated model, utility (every metric, as the pipeline evaluates it, on fixed
        samples) against the model before, whose outputs its version knows (computed when it was
        trained or by the request that made it), and, when the model before is a fast update,
        against the last exact model of its chain; the update's outputs are kept for the next request."""
        from unlearning.images import evidence
        cfg = self.evidence_cfg
        forget, keep = self.requests[k - 1], self.alive[k].nonzero().squeeze(1).tolist()
        classes = set(self.y[forget].tolist())
        controls = evidence.control_positions(self.fm.train, self.fm.labels, classes, cfg.max_controls)
        images = evidence.RequestImages(
            (self.X[forget], self.y[forget], [self.train_ids[i] for i in forget]),
            (self.X[keep], self.y[keep], [self.train_ids[i] for i in keep]),
            (*self.test, self.test_ids),
            (*self.tensors(self.fm.images[controls], self.fm.labels[controls]), [f"fm{p}" for p in controls]),
            frozenset(self.y[keep].unique().tolist()), relabelled=False)
        anchor = self.anchors.get(before) if before in self.fast else None  # None: `before` is exact
        judged = evidence.judge_request(before, model, images, cfg, self.known.get(before), anchor)
        self.judged[model] = judged.checks
        self.known[model] = judged.known_after
        if model in self.fast:  # as the pipeline keeps it with a fast update's version
            self.anchors[model] = judged.anchor_after
        if judged.known_before is not None:
            self.known[before] = judged.known_before
        return judged.checks

    def repair(self, model, before, k: int):
        """auto's repair (tasks/kinds/images.py `fall_back`): where the update's evidence failed by too
        much change only (unlearning.images.repair.repairable), steps on D' from it distilled from its
        chain's first model (the model before where it continued none); the repaired model keeps no
        chain. None where the failure is not one a repair answers."""
        from unlearning.images.repair import RepairConfig, repair, repairable
        if not repairable(self.judged[model]):
            return None
        context = self._context(model, k - 1, k)
        kept = self._chains.get(id(model))
        teacher = kept[1][0].model if kept else before
        fixed = repair(model, context.data, context.request.retain, teacher, RepairConfig()).model
        self.fast.add(fixed)
        return fixed

    def audit_checks(self, model, ks: list[int], retrained) -> list[dict]:
        """The audit as tasks.audit_checks runs it (unlearning.images.audit): the UA gap on every covered
        request's images, the TA/RA drops against the retrained model on fixed samples, the whole
        sets where a sample is not clear of the threshold. With `compare_audits`, the whole-set
        verdicts too, computed by notes() outside the measured CPU."""
        from unlearning.images.audit import audit_checks
        from unlearning.images.verify import ImageVerifyConfig
        keep = self.alive[ks[-1]].nonzero().squeeze(1).tolist()
        sets = (self._forget(ks), (self.X[keep], self.y[keep], [self.train_ids[i] for i in keep]),
                (*self.test, self.test_ids))
        checks, metrics = audit_checks(model, retrained, *sets, "delete_records", self.verify)
        self._chains.pop(id(model), None)  # the audit deletes the sealed chain: production, if it stays, starts the next
        self.audit_images_judged.append((metrics["ra_images_judged"], metrics["ta_images_judged"]))
        if self.compare_audits:  # judged on whole sets in notes(), outside the measured CPU
            self.audit_verdicts.append((model, retrained, ks, checks))
        return checks

    def whole_set_verdicts(self) -> list[tuple[list[bool], list[bool], list[float], list[float]]]:
        """Per audit: (sampled verdicts, whole-set verdicts, sampled values, whole-set values)."""
        from unlearning.images.audit import audit_checks
        out = []
        for model, retrained, ks, checks in self.audit_verdicts:
            keep = self.alive[ks[-1]].nonzero().squeeze(1).tolist()
            whole, _ = audit_checks(model, retrained, self._forget(ks),
                                    (self.X[keep], self.y[keep], [self.train_ids[i] for i in keep]),
                                    (*self.test, self.test_ids), "delete_records",
                                    self.verify.model_copy(update={"audit_images": None}))
            out.append(([c["passed"] for c in checks], [c["passed"] for c in whole],
                        [round(c["value"], 2) for c in checks], [round(c["value"], 2) for c in whole]))
        return out

    def fidelity(self, model, final) -> dict:
        from unlearning.metrics import compare_to_retrain
        from unlearning.metrics.compare import AVG_GAP_KEYS
        ks = list(range(1, len(self.requests) + 1))
        retrained, kept = self._metrics(final, ks), self._metrics(model, ks)
        rows = compare_to_retrain([{"method": "retrain", **retrained}, {"method": "final", **kept}])
        # signed: a gap is as far on either side, but a model better than the retrained one is not a leak
        return {"avg gap": rows[1]["avg_gap"], "signed": {k: kept[k] - retrained[k] for k in AVG_GAP_KEYS}}

    @staticmethod
    def fidelity_text(f: dict) -> str:
        signed = f.get("signed") or {}
        side = (" (final − retrained: " + ", ".join(f"{k.split('_')[0].upper()} {v:+.1f}" for k, v in signed.items())
                + ")") if signed and f["avg gap"] > 0 else ""
        return f"average gap {f['avg gap']:.2f} points (UA/RA/TA/MIA){side}"

    def notes(self) -> list[str]:
        """How the audits' drops were decided and, with compare_audits, whole sets against samples."""
        if not self.audit_images_judged:
            return []
        judged = ", ".join(f"{ra}/{ta}" for ra, ta in self.audit_images_judged)
        lines = [f"Image audits (D′ {int(self.alive[-1].sum())} images, test {len(self.test[1])}; sample "
                 f"{self.verify.audit_images}, z {self.verify.audit_z:g}): images judged per audit, D′/test: {judged}.",
                 f"Evidence settings: {self.evidence_cfg.model_dump(exclude_defaults=True) or 'defaults'}.", ""]
        if self.compare_audits:
            compared = self.whole_set_verdicts()
            differ = [i for i, (a, b, _, _) in enumerate(compared, start=1) if a != b]
            lines += [f"Sampled audit checks against whole sets (same models, same process): {len(compared)} "
                      f"audits, {len(differ)} with a different verdict{' (audits ' + str(differ) + ')' if differ else ''}; "
                      "values (UA gap, TA drop, RA drop) sampled → whole: "
                      + "; ".join(f"{s} → {w}" for _, _, s, w in compared) + ".", ""]
        return lines
