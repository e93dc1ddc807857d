"""Retrained references as self-contained jobs: what verification judges an update against.

Verification retrains the model on D' = (D \\ Z) ∪ Z̃ with the original schedule and seeds. A
`ReferenceJob` holds exactly what that needs — D' alone (never the removed rows, windows or
images), the architecture and the schedule — so it can run anywhere: in the flow's process, or on
a Dask worker while other batches are being processed. `train(job)` is the one code path for
both, so a reference trained ahead of time is the reference inline verification would train.

`job.key` is a sha256 over the job's content: a reference trained for one key answers any later
job with the same key (same D', same model, same schedule) and no other.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field

from typing import TYPE_CHECKING

import torch

from unlearning.errors import UnlearnError
from unlearning.linalg import single_threaded
from unlearning.tabular.methods import run_method
from unlearning.tabular.problem import Problem

if TYPE_CHECKING:  # the text and image stacks are imported by their own jobs only: a table's loads neither
    from unlearning.images import cnn

KINDS = ("table", "text", "images")


@dataclass(frozen=True, eq=False)
class ReferenceJob:
    """Retrain `kind` on D': `data` the D' tensors, `settings` everything else it depends on."""

    kind: str
    data: dict[str, torch.Tensor]
    settings: dict = field(default_factory=dict)
    device: str = "cpu"  # where it is trained (not part of the key: the same job on any device)

    @property
    def key(self) -> str:
        h = hashlib.sha256(json.dumps({"kind": self.kind, "settings": self.settings}, sort_keys=True,
                                      default=repr).encode())
        for name in sorted(self.data):
            tensor = self.data[name]
            h.update(f"\0{name}:{tensor.dtype}:{tuple(tensor.shape)}\0".encode())
            h.update(tensor.detach().contiguous().cpu().numpy().tobytes())
        return h.hexdigest()

    def describe(self) -> str:
        rows = len(next(iter(self.data.values()))) if self.data else 0
        return f"{self.kind} reference on {rows} rows of D'"


def table_job(problem: Problem) -> ReferenceJob:
    """The convex model retrained on D' of `problem` (its X_new, y_new; the noise b of a certified
    model is part of the objective, so the reference minimises the same perturbed loss)."""
    data = {"X": problem.X_new, "y": problem.y_new}
    if problem.obj.b is not None:
        data["b"] = problem.obj.b
    settings = {"l2": problem.obj.l2, "n_classes": problem.n_classes, "revoked": list(problem.revoked),
                "theta_shape": list(problem.theta.shape),
                "certification": None if problem.certification is None else
                [problem.certification.epsilon, problem.certification.delta, problem.certification.sigma]}
    return ReferenceJob("table", data, settings)


def text_job(model_config: dict, settings: dict, windows: torch.Tensor, device: str = "cpu") -> ReferenceJob:
    """A character LM retrained on the windows of D' with the original run's steps, lr, batch, seed
    (and precision, when it was not fp32), on `device`; a Hugging Face model (config["hf"]): its base
    checkpoint (settings["base"]: path + sha256, checked when the job runs) fine-tuned again on the
    windows of D' with the same schedule."""
    names = ("steps", "lr", "batch", "seed") + (("seq_len", "base", "lora") if model_config.get("hf") else ())
    keep = {k: settings[k] for k in (*names, "precision") if k in settings}
    return ReferenceJob("text", {"windows": windows}, {"config": model_config, **keep}, str(device))


def image_job(model_config: dict, X: torch.Tensor, y: torch.Tensor, schedule: cnn.TrainSchedule | None,
              device: str = "cpu") -> ReferenceJob:
    """A CNN (or a user's factory model: its config names the factory) retrained on D' = (X, y)
    replaying the original schedule (its precision too), on `device`."""
    if schedule is None:
        raise UnlearnError("retrain needs the original training schedule: the model version records none")
    config = _image_config(model_config, list)
    return ReferenceJob("images", {"X": X, "y": y}, {"config": config, "schedule": schedule.to_dict()}, str(device))


def replayable(precision: str, device: str) -> None:
    """A reference replays the model's precision: one trained in fp16 on a GPU cannot be replayed on
    a CPU (UnlearnError naming the fix) — not the CLI's check, since the device is the audit's."""
    from unlearning.devices import check_precision, resolve_device

    try:
        check_precision(precision, resolve_device(device))
    except UnlearnError:
        raise UnlearnError(f"this model was trained in {precision}, which {device} cannot replay: retrain its "
                           f"reference on a GPU (--device cuda)") from None


def train(job: ReferenceJob, progress=None):
    """Run a job: a methods.Result (table), a deep_influence.DeepUpdate (text) or an ImageResult
    (images), each with its wall-clock `seconds` in stats (`update_seconds` for a table).
    `progress(stats)`: called once per epoch of a language model's or CNN's training."""
    if job.kind == "table":
        return run_method("retrain", _d_prime_problem(job), {})
    if job.kind == "text":
        from unlearning.text import deep_influence

        s = job.settings
        replayable(s.get("precision", "fp32"), job.device)
        if s["config"].get("hf"):
            from unlearning.text import hf_finetune

            return hf_finetune.refine_tune(s, job.data["windows"], progress=progress, device=job.device)
        return deep_influence.retrain_on(s["config"], job.data["windows"], steps=int(s["steps"]), lr=s["lr"],
                                         batch=int(s["batch"]), seed=int(s["seed"]), init_seed=int(s["seed"]),
                                         progress=progress, device=job.device,
                                         precision=s.get("precision", "fp32"))
    if job.kind == "images":
        from unlearning.images import baselines, cnn

        config = _image_config(job.settings["config"], tuple)
        schedule = cnn.TrainSchedule(**job.settings["schedule"])
        replayable(schedule.precision, job.device)
        started, cpu_started = time.perf_counter(), time.process_time()
        with single_threaded():  # as every image method is run and timed (registry.run_image_method)
            result = baselines.retrain_on(config, job.data["X"], job.data["y"], schedule, progress, job.device)
        result.model.cpu()  # the image metrics and methods run on the CPU (tasks.devices)
        result.stats.update(seconds=time.perf_counter() - started, cpu_seconds=time.process_time() - cpu_started)
        return result
    raise UnlearnError(f"unknown reference kind {job.kind!r}: one of {', '.join(KINDS)}")


def _image_config(config: dict, sequence) -> dict:
    """A CNN's widths and strides as `sequence` (JSON lists in a job, tuples in the model); a
    factory's config as it is."""
    if "widths" not in config:
        return dict(config)
    return {**config, "widths": sequence(config["widths"]), "strides": sequence(config["strides"])}


def _d_prime_problem(job: ReferenceJob) -> Problem:
    """A Problem whose D is D' and whose request is empty: `retrain` on it fits D' exactly as it
    would from the full problem (it reads only X_new, y_new, the objective and θ's shape)."""
    from unlearning.tabular.logreg import Objective
    from unlearning.tabular.problem import Certification

    s, X, y = job.settings, job.data["X"], job.data["y"]
    certification = None if s["certification"] is None else Certification(*s["certification"])
    return Problem(theta=torch.zeros(s["theta_shape"], dtype=X.dtype), obj=Objective(s["l2"], job.data.get("b")),
                   X=X, y=y, n_classes=int(s["n_classes"]), z_index=torch.zeros(0, dtype=torch.long),
                   X_tilde=X[:0], y_tilde=y[:0], revoked=tuple(s["revoked"]), certification=certification)
