"""Unlearning for image classifiers (the CNN of cnn.py) behind one interface.

    request = forget_class(data.y, 3)                     # or delete_records / fix_labels
    result = run_image_method("alignment", model, data, request, {"epochs": 2})
    result.model, result.stats["seconds"]

Where things live: request.py (requests as indices, ImageData), common.py (shared config, result,
samplers, distillation), alignment.py (the method of Seo et al.), baselines.py (retrain, finetune,
gradient_ascent, random_labels, scrub, salun, l1_sparse), influence.py (first/second-order
updates on the last layers), registry.py (the image methods in the one registry, IMAGE_METHODS,
run_image_method: import them from unlearning.images.registry — this package does not import its
methods, so that they can import it).

The names below are loaded on first use: importing the package (e.g. for unlearning.images.verify,
whose thresholds the forget flow's parameters name) loads no torch model code.
"""

import importlib

_FROM = {"ImageMethodConfig": "common", "ImageResult": "common", **dict.fromkeys(
    ("IMAGE_KINDS", "ImageData", "ImageRequest", "delete_records", "fix_labels", "forget_class"), "request")}

__all__ = [
    "IMAGE_KINDS", "ImageData", "ImageMethodConfig", "ImageRequest", "ImageResult", "delete_records",
    "fix_labels", "forget_class",
]


def __getattr__(name: str):
    if name in _FROM:
        return getattr(importlib.import_module(f"{__name__}.{_FROM[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
