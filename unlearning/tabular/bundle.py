"""A trained tabular model as one self-contained object: feature map + θ + objective settings.

Saved as a small directory (`bundle.json` + `theta.npy`) that the MLflow pyfunc wrapper loads.
The perturbation b is deliberately NOT part of it: certified removal assumes the adversary does
not know b, so it lives in the private state store beside the project, never in the registry.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from unlearning.tabular import logreg
from unlearning.tabular.encoding import Encoder
from unlearning.tabular.problem import Certification

BUNDLE_FILE = "bundle.json"
THETA_FILE = "theta.npy"


@dataclass(frozen=True)
class ModelBundle:
    encoder: Encoder
    theta: torch.Tensor  # (d,) binary or (d, K)
    l2: float  # Λ of the objective (fixed for the lineage)
    certification: Certification | None = None

    @property
    def labels(self) -> tuple[str, ...]:
        return self.encoder.labels

    def features(self, frame: pd.DataFrame) -> torch.Tensor:
        return torch.as_tensor(self.encoder.transform(frame), dtype=logreg.DTYPE)

    def predict(self, frame: pd.DataFrame) -> list[str]:
        return self.encoder.decode_labels(logreg.predict(self.theta, self.features(frame)).numpy())

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        P = logreg.probabilities(self.theta, self.features(frame)).numpy()
        return np.stack([1 - P, P], axis=1) if P.ndim == 1 else P

    def with_theta(self, theta: torch.Tensor, **changes) -> "ModelBundle":
        return replace(self, theta=theta, **changes)

    def to_dict(self) -> dict:
        cert = self.certification
        return {
            "format": "unlearnflow.logreg/2",
            "encoder": self.encoder.to_dict(),
            "l2": self.l2,
            "certification": None if cert is None else {
                "epsilon": cert.epsilon, "delta": cert.delta, "sigma": cert.sigma, "spent": cert.spent},
        }


def save_bundle(bundle: ModelBundle, directory: Path) -> Path:
    """Write the bundle atomically (a temp directory renamed into place)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=".bundle-"))
    (tmp / BUNDLE_FILE).write_text(json.dumps(bundle.to_dict(), indent=1, sort_keys=True))
    np.save(tmp / THETA_FILE, bundle.theta.numpy())
    os.replace(tmp, directory)
    return directory


def load_bundle(directory: Path) -> ModelBundle:
    directory = Path(directory)
    meta = json.loads((directory / BUNDLE_FILE).read_text())
    cert = meta.get("certification")
    return ModelBundle(
        encoder=Encoder.from_dict(meta["encoder"]),
        theta=torch.as_tensor(np.load(directory / THETA_FILE), dtype=logreg.DTYPE),
        l2=float(meta["l2"]),
        certification=Certification(**cert) if cert else None,
    )
