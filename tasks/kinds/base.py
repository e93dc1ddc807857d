"""The steps every kind of model implements (tables, text, images): the train and forget flows
call these and nothing kind-specific. A new kind is one module in tasks/kinds/ with a subclass
of `Kind`, listed in tasks/kinds/__init__.py (the one place a dataset is mapped to its kind), and
its `Format` in tasks/formats.py (how its dataset and model are stored, loaded and described)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from tasks.common import Lineage, Plan, Trained, Update, Verification
from tasks.formats import Format
from unlearning.compliance.requests import UnlearningRequest
from unlearning.errors import UnlearnError
from unlearning.references import ReferenceJob
from unlearning.tabular.methods import Result


# How an update is verified in the request path (issue 13): `certificate` — the certificate is the
# proof (certified convex models); `evidence` — reference-free tests, no model trained per request;
# `reference` — against a model retrained on D' (the audit's check, opt-in per request).
VERIFY_MODES = ("certificate", "evidence", "reference")


def check_verify_mode_name(mode: str | None) -> None:
    """Refuse (UnlearnError) a mode that no kind implements, before anything is written."""
    if mode is not None and mode not in VERIFY_MODES:
        raise UnlearnError(f"unknown verification mode {mode!r}: choose one of {', '.join(VERIFY_MODES)} (--verify)")


class Kind(ABC):
    """One kind of model: its dataset type and its steps. Subclasses override the steps; the
    defaults are what a kind without budgets, fallback or extra tags does."""

    format: Format  # its dataset and model as files (tasks.formats): its name and dataset type too
    verify_modes: tuple[str, ...] = ("evidence", "reference")  # the VERIFY_MODES it implements, the default first

    @property
    def name(self) -> str:
        """The key of its settings in the flows' parameters: "table", "text", "images"."""
        return self.format.name

    @property
    def dataset_type(self) -> type:
        return self.format.dataset_type

    def holds(self, dataset) -> bool:
        return isinstance(dataset, self.dataset_type)

    # --- train ---------------------------------------------------------------------------------
    def check_trainable(self, dataset, config) -> None:
        """Refuse (UnlearnError) a dataset/config that cannot be trained, before any run is recorded."""

    @abstractmethod
    def train_params(self, dataset: str, config) -> dict:
        """The train flow's parent-run params."""

    def prepare(self, dataset, config) -> Any:
        """What training loads from outside the project before any run is recorded (a checkpoint
        that does not load is then one line with nothing in MLflow), handed to `train`; None here."""
        return None

    @abstractmethod
    def train(self, lineage: Lineage, dataset, config, data_version: str, prepared: Any = None) -> Trained:
        """Fit and evaluate a model on `dataset` (child runs `fit`, `evaluate`), from `prepared`."""

    def train_quality(self, summary: dict) -> str:
        """How good the trained model is, in the console line of `unlearn train`."""
        m = summary["metrics"]
        return (f"test accuracy {100 * m['test_accuracy']:.2f} %, "
                f"{'certified' if summary['certified'] else 'not certified'}")

    # --- forget: plan ------------------------------------------------------------------------
    def check_request(self, root: Path, request: UnlearningRequest, dataset, method: str) -> Any:
        """Validate the request against the dataset before the model is loaded; what it returns is
        handed to `plan`."""

    @abstractmethod
    def plan(self, root: Path, request: UnlearningRequest, dataset, bundle, production, method: str,
             checked: Any) -> tuple[str, Any]:
        """(the method, `auto` decided; the kind's part of the plan) — UnlearnError if the request
        cannot be carried out on this model."""

    # --- forget: the recipe's steps (flows.forget) -------------------------------------------
    @abstractmethod
    def correct_data(self, lineage: Lineage, plan: Plan) -> tuple[Any, str]:
        """D' saved over data/NAME and versioned with DVC: (D', the new data version)."""

    @abstractmethod
    def update(self, lineage: Lineage, plan: Plan, after, method: str, options: dict | None) -> Update:
        """Run the unlearning method on the corrected data (child run `update model`)."""

    def respect_budget(self, lineage: Lineage, plan: Plan, after, update: Update) -> Update:
        """The update to verify: `update`, or its replacement when it spent a budget it did not have."""
        return update

    def default_verify_mode(self, plan: Plan, update: Update) -> str:
        """The mode used when the user names none."""
        return self.verify_modes[0]

    def check_verify_mode(self, plan: Plan, mode: str) -> None:
        """Refuse (UnlearnError, at planning: nothing written yet) a mode this kind cannot use for
        this plan's model and method."""
        check_verify_mode_name(mode)
        if mode not in self.verify_modes:
            raise UnlearnError(f"--verify {mode} is not available for {self.name} models: use "
                               f"{' or '.join('--verify ' + m for m in self.verify_modes)}")

    def verification(self, lineage: Lineage, plan: Plan, after, update: Update, config, mode: str) -> Verification:
        """Verify the update in `mode` (one of `verify_modes`)."""
        if mode == "reference":
            return self.verify(lineage, plan, after, update, config)
        return self.evidence(lineage, plan, after, update, config, mode)

    @abstractmethod
    def verify(self, lineage: Lineage, plan: Plan, after, update: Update, config) -> Verification:
        """Judge the update against the retrained reference (child run `verify`)."""

    @abstractmethod
    def evidence(self, lineage: Lineage, plan: Plan, after, update: Update, config, mode: str) -> Verification:
        """Judge the update without training a model (a mode of `verify_modes` other than
        `reference`; child run `verify`): Verification(..., retrain_s=None, mode=mode, retrains=0)."""

    def fall_back(self, lineage: Lineage, plan: Plan, after, update: Update, verification: Verification,
                  config) -> tuple[Update, Verification, dict] | None:
        """`auto` and the update failed verification: the retrained reference as (update,
        verification, the failed attempt), or None where the kind has no fallback."""
        return None

    @abstractmethod
    def reference_job(self, plan: Plan) -> ReferenceJob:
        """The verification reference (the model retrained on D'), planned without writing anything."""

    def version_tags(self, update: Update) -> dict:
        """Extra model-version tags of the new version."""
        return {}

    def private_state(self, update: Update, after):
        """A callable computing the private state kept beside the new version, or None."""
        return None

    def after_audit(self, root: Path, plan, stays: bool) -> dict | None:
        """What an audit of `plan` (tasks.audit.AuditPlan) does to what keep_for_next_update sealed,
        before its record, which states the returned dict (`stays`: production stays in place).
        Most kinds keep nothing: None."""
        return None

    def keep_for_next_update(self, root: Path, plan: Plan, update: Update) -> list[dict]:
        """Seal what the next fast update needs of the model the promotion will supersede, pending
        until the release names it as it does an escrow (a text chain's teacher:
        tasks.kinds.text_teacher); the certificate's entries for it. Most kinds keep nothing."""
        return []

    # --- forget: what the certificate and the summary say -------------------------------------
    def certificate_result(self, update: Update) -> Result:
        """What the certificate's `guarantee` block is built from."""
        return Result(theta=None, method=update.method, guarantee=update.guarantee, stats=update.stats)

    def certificate_metrics(self, verification: Verification) -> dict:
        return verification.metrics

    def certificate_config(self, plan: Plan, update: Update, attempt: dict | None, config) -> dict:
        """The kind's entries of the certificate's `config` (beside method, requested, options)."""
        return {}

    def summary_fields(self, plan: Plan, update: Update, verification: Verification,
                       attempt: dict | None) -> dict:
        """The kind's entries of the forget summary (beside the ones every kind has)."""
        return {}

    def forget_headline(self, summary: dict) -> str:
        """What the kind adds to the first line of the console summary of a forget."""
        return ""

    def format_forget(self, summary: dict) -> list[str]:
        """The kind's lines of the console summary of a forget (after model and data)."""
        return []


def replaced_by(attempt: dict | None) -> dict:
    """The summary's and the certificate's account of a failed update: `fallback` where it was
    replaced by a retraining (a repair tried first is in it), `repaired` where a repair passed."""
    repaired = attempt is not None and attempt.get("outcome") == "repaired"
    return {"fallback": None if repaired else attempt, "repaired": attempt if repaired else None}
