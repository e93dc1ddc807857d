"""A model version's outputs on images named by record id, kept once per version
(unlearning.images.evidence's "model before": every request on the version reads them instead of
evaluating it again; tasks.state keeps them as the version's private state, `outputs/`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from unlearning.metrics import model_outputs
from unlearning.metrics.evaluate import Outputs


def compact(t: torch.Tensor) -> torch.Tensor:
    """`t` (float64, as model_outputs returns it) as float32 where that loses nothing: a float32
    model's outputs are float32 numbers widened, so they are kept at half the size, exactly."""
    f = t.float()
    return f if torch.equal(f.double(), t) else t


@dataclass(frozen=True, eq=False)
class KnownOutputs:
    """A model version's outputs (features and logits, as unlearning.metrics.model_outputs gives
    them) on images named by record id: what every request on the version needs of the model
    before. Derived from the images (training images included): it is kept as the version's
    private state and purged with it, never published."""

    ids: tuple[str, ...]
    features: torch.Tensor  # (n, d)
    logits: torch.Tensor  # (n, K)

    @classmethod
    def of(cls, ids, outputs: Outputs) -> KnownOutputs:
        ids = tuple(str(i) for i in ids)
        if len(ids) != len(outputs.labels) or len(set(ids)) != len(ids):
            raise ValueError(f"need one distinct id per row: {len(ids)} ids ({len(set(ids))} distinct) "
                             f"for {len(outputs.labels)} rows")
        return cls(ids, compact(outputs.features), compact(outputs.logits))

    def rows(self) -> dict[str, int]:
        return {i: r for r, i in enumerate(self.ids)}

    def restricted(self, keep) -> KnownOutputs:
        """Only the rows of the ids in `keep` (what a new version may keep: its own training
        images and the held-out ones, never an erased image's outputs)."""
        keep = set(keep)
        rows = [r for r, i in enumerate(self.ids) if i in keep]
        return KnownOutputs(tuple(self.ids[r] for r in rows), self.features[rows], self.logits[rows])

    def merged(self, other: KnownOutputs | None) -> KnownOutputs:
        """These rows and those of `other` (ours first where both hold an id)."""
        if other is None:
            return self
        mine = set(self.ids)
        extra = [r for r, i in enumerate(other.ids) if i not in mine]
        return KnownOutputs(self.ids + tuple(other.ids[r] for r in extra),
                            compact(torch.cat([self.features.double(), other.features[extra].double()])),
                            compact(torch.cat([self.logits.double(), other.logits[extra].double()])))

    def as_state(self) -> dict:
        return {"ids": list(self.ids), "features": self.features, "logits": self.logits}

    @classmethod
    def from_state(cls, content: dict | None) -> KnownOutputs | None:
        if not content:
            return None
        return cls(tuple(content["ids"]), content["features"], content["logits"])


def outputs_of(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, ids, known: KnownOutputs | None,
               batch_size: int = 512) -> tuple[Outputs, int]:
    """(model_outputs(model, x, y), how many rows were evaluated): the rows `known` holds (the same
    model's outputs on those ids) are read from it, the others evaluated."""
    ids = [str(i) for i in ids]
    index = known.rows() if known is not None else {}
    rows = [index.get(i, -1) for i in ids]
    missing = [p for p, r in enumerate(rows) if r < 0]
    if len(missing) == len(ids):
        return model_outputs(model, x, y, batch_size), len(ids)
    y = torch.as_tensor(y).long().cpu()
    hit = [p for p, r in enumerate(rows) if r >= 0]
    hit_rows = [rows[p] for p in hit]
    features = torch.empty(len(ids), known.features.shape[1], dtype=torch.float64)
    logits = torch.empty(len(ids), known.logits.shape[1], dtype=torch.float64)
    features[hit], logits[hit] = known.features[hit_rows].double(), known.logits[hit_rows].double()
    if missing:
        fresh = model_outputs(model, x[missing], y[missing], batch_size)
        features[missing], logits[missing] = fresh.features, fresh.logits
    return Outputs(features, logits, y), len(missing)


def evaluate_sets(model: torch.nn.Module, sets, known: KnownOutputs | None):
    """(outputs per set, images evaluated, `known` with them added): an image in two sets (a
    control among the test images) is evaluated once."""
    outs, evaluated, running = [], 0, known
    for x, y, ids in sets:
        out, n = outputs_of(model, x, y, ids, running)
        outs.append(out)
        evaluated += n
        running = KnownOutputs.of(ids, out).merged(running) if n else running
    return outs, evaluated, running


def known_of(parts: list[tuple[list, Outputs]]) -> KnownOutputs:
    """One KnownOutputs of several (ids, outputs) of the same model (an id in two sets: the first)."""
    known = None
    for ids, out in parts:
        part = KnownOutputs.of(ids, out)
        known = part if known is None else known.merged(part)
    return known
