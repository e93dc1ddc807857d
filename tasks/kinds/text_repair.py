"""`auto`'s repair of a fast text update whose evidence failed (unlearning.text.repair), tried before
the fall-back to retraining: suppress steps that guard against relearning, from the failed update,
on the same request and chain, anchored to the same teacher, then the same evidence. The secrets
stay in memory inside this step, as in the update's."""

from __future__ import annotations

import dataclasses
import time

from tasks import tracking
from tasks.common import step, Lineage, Plan, Update
from tasks.kinds.text_chain import chain_secrets, window_request
from tasks.kinds.text_teacher import chain_teacher
from tasks.kinds.text_verify import failed_attempt, judge_evidence, log_evidence
from unlearning.text import evidence
from unlearning.text.data import TextCorpus
from unlearning.text.repair import RepairConfig, repair


@step("repair the update")
def repair_after_failed_checks(lineage: Lineage, plan: Plan, after: TextCorpus, update: Update, metrics: dict,
                               checks: list[dict], cfg: evidence.EvidenceConfig,
                               repair_cfg: RepairConfig = RepairConfig()):
    """Returns (the repaired bundle, its seconds, metrics, checks, rows, the attempt with its
    `repair` block). The repaired model is judged as the update was: held to its chain."""
    with lineage.child("repair the update") as run_id:
        attempt = failed_attempt(update, metrics, checks)
        chain = chain_secrets(lineage.root, plan)
        teacher, _ = chain_teacher(lineage.root, plan, update.carry)
        request, train_windows = window_request(plan, after, chain)
        del chain
        started = time.perf_counter()
        repaired = repair(update.bundle, request, train_windows, teacher or plan.bundle, repair_cfg)
        seconds = time.perf_counter() - started
        del teacher, request
        bundle = dataclasses.replace(update.bundle, model=repaired.model)
        metrics, checks, rows = judge_evidence(lineage, plan, after, bundle, cfg, exact=False)
        passed = all(c["passed"] for c in checks)
        attempt["repair"] = {"seconds": seconds, "steps": repaired.stats["steps"], "passed": passed,
                             "failed_checks": [c["name"] for c in checks if not c["passed"]]}
        tracking.log_params(run_id, {"failed_method": update.method, "failed_checks": ",".join(attempt["failed_checks"]),
                                     **{f"repair_{k}": v for k, v in repair_cfg.model_dump().items()}})
        tracking.log_metrics(run_id, {"repair_seconds": seconds, "repair_steps": repaired.stats["steps"]})
        log_evidence(run_id, metrics, checks, rows, cfg, "repair.json")
    return bundle, seconds, metrics, checks, rows, attempt

