"""bench.stream's tables scenario: record deletions and one attribute revocation on UCI Adult."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.stream.measured import say


# Adult (bench.tabular's table), the plain model (λ = 1e-3 per row). A model version carries the
# Hessian cache the pipeline computes for every registered version (charged to the operation that
# produced it), and the problem it came from (its θ before and D', for the evidence).

@dataclass(frozen=True, eq=False)
class TableModel:
    bundle: object  # unlearning.tabular.bundle.ModelBundle
    cache: dict
    problem: object = None  # the Problem the version was computed on (None: the original)
    residual: float | None = None  # ‖∇L(θ; D')‖, exact (methods.run_method computes it)


class Tables:
    name = "tables"
    REVOKED = ("sex",)

    def __init__(self, n_requests: int, seed: int):
        from unlearning.builtin import BUILTIN
        from unlearning.tabular import erasure
        from unlearning.tabular.data import correct_table
        from unlearning.tabular.training import TrainConfig, train_bundle

        self.erasure = erasure
        table = BUILTIN["adult"]()
        say("  [tables] training the plain Adult model and its Hessian cache (not charged) ...")
        bundle, b, _ = train_bundle(table, TrainConfig(lam=1e-3))
        self.original = TableModel(bundle, erasure.model_cache(bundle, table, b))
        rng = np.random.default_rng([seed, 1])
        ids = list(rng.permutation(np.asarray(table.frame.index[table.train_mask()]).astype(str)))
        revoke_at = int(rng.integers(1, n_requests + 1))
        self.data, self.requests = [table], []
        for k in range(1, n_requests + 1):
            if k == revoke_at:
                self.requests.append({"revoke": self.REVOKED, "delete": []})
            else:
                self.requests.append({"revoke": (), "delete": [ids.pop() for _ in range(int(rng.integers(1, 6)))]})
            r = self.requests[-1]
            self.data.append(correct_table(self.data[-1], r["delete"], list(r["revoke"]), {}))

    def describe(self) -> str:
        deleted = sum(len(r["delete"]) for r in self.requests)
        return (f"Adult, plain logistic model (λ = 1e-3), {len(self.requests)} requests: {deleted} record(s) deleted "
                f"in {sum(1 for r in self.requests if r['delete'])} request(s), one revocation of `sex`")

    def _run(self, method: str, model: TableModel, k_from: int, k_to: int) -> TableModel:
        """The method on the request(s) k_from+1..k_to through the registry, as `forget` runs it:
        the Problem built from the version's kept encoding and the requests' own records, and the
        new version registered with what the pipeline keeps for the next request (D' encoded and a
        bound on ‖X‖₂, its Newton matrix and gradient: erasure.version_cache)."""
        from unlearning import registry
        erasure = self.erasure
        deleted = [r for request in self.requests[k_from:k_to] for r in request["delete"]]
        changes = erasure.requested_changes(self.data[k_from], deleted, {})
        cache = {k: v for k, v in model.cache.items() if k != "encoded"}
        problem, bundle_after, encoded = erasure.build_problem(
            model.bundle, self.data[k_from], self.data[k_to], None, cache,
            erasure.Encoded.from_state(model.cache["encoded"]), changes)
        result = registry.run("tabular", method, problem)
        bundle = erasure.unlearned_bundle(bundle_after, result.theta)
        return TableModel(bundle, erasure.version_cache(encoded, problem, result), problem, result.residual)

    def retrain(self, j: int) -> TableModel:
        return self._run("retrain", self.original, 0, j)

    def update(self, model: TableModel, k: int) -> TableModel:
        return self._run("auto", model, k - 1, k)

    def _test(self, model: TableModel):
        """The held-out rows as the version keeps them encoded (what `forget`'s checks read)."""
        return self.erasure.Encoded.from_state(model.cache["encoded"]).test

    def reference_checks(self, model: TableModel, before: TableModel, ks: list[int], retrained: TableModel) -> list[dict]:
        """Today's reference verification (unlearning.tabular.verify) on the held-out rows."""
        from unlearning.tabular import verify
        test = self._test(model)
        metrics = verify.fidelity(model.bundle.theta, retrained.bundle.theta, before.bundle.theta, test.X, test.y)
        return verify.checks(metrics, verify.VerifyConfig())

    def evidence_checks(self, model: TableModel, before: TableModel, k: int) -> list[dict]:
        """The evidence mode of unlearning.tabular.verify: strong convexity turns the exact residual
        on D' into ‖θ − θ_retrain‖ ≤ ‖∇L(θ; D')‖ / Λ and a guaranteed agreement; no model trained."""
        from unlearning.tabular import influence, verify
        problem = model.problem
        test = self._test(model)
        metrics = verify.convexity_evidence(model.bundle.theta, before.bundle.theta, model.residual,
                                            influence.gradient_residual(problem, problem.theta), model.bundle.l2,
                                            problem.n_new, test.X, test.y)
        return verify.convexity_checks(metrics, verify.VerifyConfig())

    def repair(self, model: TableModel, before: TableModel, k: int) -> None:
        """None: a table's failed update is not repaired (the pipeline retrains it; only text and images
        repair, tasks/kinds)."""
        return None

    def audit_checks(self, model: TableModel, ks: list[int], retrained: TableModel) -> list[dict]:
        return self.reference_checks(model, model, ks, retrained)

    def fidelity(self, model: TableModel, final: TableModel) -> dict:
        from unlearning.tabular import verify
        test = self._test(model)
        return {"agreement %": 100 * verify.agreement(model.bundle.theta, final.bundle.theta, test.X),
                "‖θ − θ_r‖": float((model.bundle.theta - final.bundle.theta).norm())}

    @staticmethod
    def fidelity_text(f: dict) -> str:
        return f"agreement {f['agreement %']:.2f} %, ‖θ − θ_r‖ {f['‖θ − θ_r‖']:.2e}"
