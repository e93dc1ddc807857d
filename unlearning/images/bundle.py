"""What the pipeline stores for an image model, and how a pipeline request becomes an ImageRequest.

An `ImageBundle` is the CNN plus what unlearning it later needs: the training schedule (retraining
replays it), the class names (predictions are names) and the record ids of the images it was
trained on, in training order (a model may be trained on a subset of a dataset's training split;
after a deletion the new model's ids are the retained ones). Stored as a folder: `cnn.pt`
(cnn.py `save`, or factory.py `save` for a user's model) and `image_model.json`. A user's model
(`factory`: package.module:function, factory.py) is loaded back only when its factory is in the
`allow` the caller passes.

    bundle, stats = train_image_model(dataset, ImageTrainConfig(preset="tiny"))
    request, delete_ids, fixes = image_request(req, dataset, bundle)   # validated, one-line errors
    data = training_data(dataset, bundle)                               # ImageData for the methods
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Collection
from typing import Literal

import numpy as np
import torch
from pydantic import ConfigDict, Field

from unlearning.devices import DeviceSettings
from unlearning.errors import UnlearnError
from unlearning.numbers import whole_number_as_written
from unlearning.images import cnn, factory
from unlearning.images.data import ImageDataset
from unlearning.images.request import ImageData, ImageRequest, delete_records, fix_labels, forget_class
from unlearning.linalg import single_threaded

META_FILE = "image_model.json"
WEIGHTS_FILE = "cnn.pt"
TINY_MAX_SIDE = 16  # images up to 16×16 (digits) get the tiny preset by default


class ImageTrainConfig(DeviceSettings):
    """How `unlearn train` trains a CNN on an image dataset. None = the default for the data:
    preset tiny for ≤ 16-pixel images (digits), small otherwise (Fashion-MNIST); subset = every
    training image for tiny, the first 10,000 for small (~1 min on one core); epochs = the preset's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: Literal["tiny", "small"] | None = None
    subset: int | None = Field(None, ge=10, description="train on the first N training images")
    epochs: float | None = Field(None, gt=0)
    seed: int = 0
    factory: str | None = Field(None, description=(
        "package.module:function building the user's own nn.Module (unlearning.images.factory); the preset "
        "then sets only the training schedule"))


@dataclass(frozen=True)
class ImageBundle:
    model: cnn.CNN | factory.UserModel
    schedule: cnn.TrainSchedule | None
    preset: str | None
    classes: tuple[str, ...]
    train_ids: tuple[str, ...]  # the images it was trained on, in training order

    @torch.no_grad()
    def predict(self, images) -> list[str]:
        """Class names for images (n, H, W) or (n, C, H, W): uint8 0–255 or floats in [0, 1]."""
        x = np.asarray(images)
        if x.dtype == object:  # a DataFrame column of arrays
            x = np.stack([np.asarray(v) for v in x.reshape(-1)])
        x = torch.as_tensor(x.astype(np.float32) / (255.0 if x.dtype == np.uint8 else 1.0))
        if x.ndim == 3:
            x = x[:, None]
        return [self.classes[i] for i in cnn.logits_of(self.model.eval(), x).argmax(1).tolist()]


def is_image_bundle(path: Path) -> bool:
    return (Path(path) / META_FILE).is_file()


def save_image_bundle(bundle: ImageBundle, path: Path) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if isinstance(bundle.model, factory.UserModel):
        factory.save(path / WEIGHTS_FILE, bundle.model, bundle.schedule)
    else:
        cnn.save(path / WEIGHTS_FILE, bundle.model, bundle.preset, bundle.schedule)
    (path / META_FILE).write_text(json.dumps({"kind": kind_of_model(bundle.model), "classes": list(bundle.classes),
                                              "train_ids": list(bundle.train_ids)}))
    return path


def kind_of_model(model) -> str:
    return "factory" if isinstance(model, factory.UserModel) else "cnn"


def load_image_bundle(path: Path, allow: Collection[str] = ()) -> ImageBundle:
    """A stored bundle; a user's model is rebuilt through its factory only if it is in `allow`."""
    path = Path(path)
    meta = json.loads((path / META_FILE).read_text())
    blob = torch.load(path / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    if blob["format"] == factory.FORMAT:
        model, schedule = factory.load(blob, allow)
    else:
        model, schedule = cnn.load(path / WEIGHTS_FILE)
    return ImageBundle(model, schedule, blob["preset"], tuple(meta["classes"]), tuple(meta["train_ids"]))


# --- data -------------------------------------------------------------------------------------

def tensors(dataset: ImageDataset, positions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(X, y): images as floats in [0, 1], (n, C, H, W), and labels (n,)."""
    X = torch.from_numpy(dataset.images[positions].astype(np.float32) / 255.0)
    return X, torch.from_numpy(dataset.labels[positions].copy())


def training_data(dataset: ImageDataset, bundle: ImageBundle) -> ImageData:
    X, y = tensors(dataset, dataset.positions(bundle.train_ids))
    return ImageData(X, y, bundle.schedule)


def test_positions(dataset: ImageDataset, exclude_class: int | None = None, cap: int | None = None,
                   seed: int = 0) -> np.ndarray:
    """The test split (without `exclude_class`), a seeded subsample of at most `cap` images."""
    pos = np.flatnonzero(~dataset.train & (dataset.labels != (-1 if exclude_class is None else exclude_class)))
    if cap is not None and len(pos) > cap:
        pos = np.sort(np.random.default_rng(seed).choice(pos, cap, replace=False))
    return pos


def default_train_config(dataset: ImageDataset, cfg: ImageTrainConfig) -> tuple[str, int]:
    preset = cfg.preset or ("tiny" if max(dataset.images.shape[2:]) <= TINY_MAX_SIDE else "small")
    n_train = int(dataset.train.sum())
    subset = cfg.subset or (n_train if preset == "tiny" else min(n_train, 10_000))
    if subset > n_train:
        raise UnlearnError(f"--subset {subset} is larger than the {n_train} training images of '{dataset.name}'")
    return preset, subset


def new_model(dataset: ImageDataset, cfg: ImageTrainConfig, preset: str):
    """The untrained network: the user's factory's (checked on a probe batch) or the preset CNN."""
    if cfg.factory is not None:
        return factory.build(cfg.factory, len(dataset.classes), int(dataset.images.shape[1]),
                             tuple(int(s) for s in dataset.images.shape[2:]), seed=cfg.seed)
    return cnn.CNN.from_preset(preset, n_classes=len(dataset.classes), seed=cfg.seed)


def train_image_model(dataset: ImageDataset, cfg: ImageTrainConfig, progress=None) -> tuple[ImageBundle, cnn.TrainStats]:
    """A CNN (preset) or the user's factory's model trained on the first `subset` training images
    with the preset's schedule."""
    preset, subset = default_train_config(dataset, cfg)
    train_pos = np.flatnonzero(dataset.train)[:subset]
    X, y = tensors(dataset, train_pos)
    changes = {"seed": cfg.seed, "init_seed": cfg.seed, "precision": cfg.precision} | \
        ({"epochs": cfg.epochs} if cfg.epochs else {})
    schedule = cnn.TrainSchedule.from_preset(preset, **changes)
    model = new_model(dataset, cfg, preset).to(cfg.device)
    with single_threaded():
        stats = cnn.train(model, X, y, schedule, progress)
    model.cpu()  # trained on cfg.device; the image metrics and methods run on the CPU (tasks.devices)
    ids = tuple(dataset.record_ids[i] for i in train_pos)
    # a user's model has no preset: the preset named only its schedule, which the bundle keeps
    return ImageBundle(model, schedule, None if cfg.factory else preset, tuple(dataset.classes), ids), stats


# --- requests ---------------------------------------------------------------------------------

def class_index(dataset: ImageDataset, value: str, field: str) -> int:
    """A class given by name or by index → its index; one-line error otherwise."""
    if value in dataset.classes:
        return dataset.classes.index(value)
    index = whole_number_as_written(value)
    # only as an index is written: '03', '+3' or ' 3' is no class's name, and forgetting a whole class
    # on a guess is not undone
    if index is not None and value == str(index) and index < len(dataset.classes):
        return index
    shown = ", ".join(f"'{c}'" for c in dataset.classes)
    raise UnlearnError(f"unknown class '{value}' in {field}; classes of '{dataset.name}': {shown} "
                       f"(or an index 0..{len(dataset.classes) - 1})")


def image_request(req, dataset: ImageDataset, bundle: ImageBundle) -> tuple[ImageRequest, list[str], dict[str, str]]:
    """Validate a pipeline request (unlearning.compliance.requests.UnlearningRequest) against an image
    dataset and the model trained on it. Returns the ImageRequest (positions in the model's
    training set), the record ids to delete from the data, and the label fixes (id → class name).

    One kind per request: delete_records, forget_class or fix_labels. Named records must be
    images the model was trained on. forget_class deletes every *training* image of the class
    from the data (the model's and the rest of the split); test images stay (they measure it)."""
    kinds = req.kinds()
    if req.redact is not None or req.revoke_features:
        raise UnlearnError(f"dataset '{dataset.name}' holds images: a request on it takes one of delete_records, "
                           f"forget_class or fix_labels (revoke_features and redact apply to tables and text)")
    if len(kinds) != 1:
        raise UnlearnError(f"an image request takes exactly one of delete_records, forget_class or fix_labels, "
                           f"got {', '.join(kinds)}: send separate requests")
    position = {record_id: i for i, record_id in enumerate(bundle.train_ids)}
    y = torch.from_numpy(dataset.labels[dataset.positions(bundle.train_ids)].copy())
    if req.forget_class is not None:
        label = class_index(dataset, req.forget_class, "forget_class")
        if not bool((y == label).any()):
            raise UnlearnError(f"model {req.model} was trained on no image of class '{dataset.classes[label]}': "
                               f"nothing to forget")
        request = forget_class(y, label)
        delete = [dataset.record_ids[i] for i in np.flatnonzero(dataset.train & (dataset.labels == label))]
        return request, delete, {}
    named = list(req.delete_records or req.fix_labels)
    dataset.positions(named)  # unknown ids: one-line error naming them
    outside = [i for i in named if i not in position]
    if outside:
        shown = ", ".join(f"'{i}'" for i in outside[:5]) + (", ..." if len(outside) > 5 else "")
        raise UnlearnError(f"{len(outside)} record ids are not among the {len(position)} images model {req.model} "
                           f"was trained on ({shown}); only its training images can be unlearned")
    idx = [position[i] for i in named]
    if req.delete_records:
        return delete_records(len(position), idx), named, {}
    labels = [class_index(dataset, v, "fix_labels") for v in req.fix_labels.values()]
    fixes = {k: dataset.classes[c] for k, c in zip(req.fix_labels, labels)}
    return fix_labels(y, idx, labels, len(dataset.classes)), [], fixes


def unlearned_ids(bundle: ImageBundle, request: ImageRequest) -> tuple[str, ...]:
    """The new model's training ids: D' = retain (in order), then Z̃ (ImageRequest.d_prime)."""
    ids = [bundle.train_ids[i] for i in request.retain.tolist()]
    if request.corrected is not None:
        ids += [bundle.train_ids[i] for i in request.forget.tolist()]
    return tuple(ids)
