"""Unlearning for image classifiers (the CNN of models/cnn.py) behind one interface.

    request = forget_class(data.y, 3)                     # or delete_records / fix_labels
    result = run_image_method("alignment", model, data, request, {"epochs": 2})
    result.model, result.stats["seconds"]

Where things live: request.py (requests as indices, ImageData), common.py (shared config, result,
samplers, distillation), alignment.py (the method of Seo et al.), baselines.py (retrain, finetune,
gradient_ascent, random_labels, scrub, salun, l1_sparse), influence.py (first/second-order
updates on the last layers), registry.py (IMAGE_METHODS, run_image_method, choose_method).
"""

from unlearning.images.common import ImageMethodConfig, ImageResult
from unlearning.images.registry import (
    AUTO, IMAGE_METHODS, ImageMethod, choose_method, get_image_method, image_config, run_image_method,
)
from unlearning.images.request import IMAGE_KINDS, ImageData, ImageRequest, delete_records, fix_labels, forget_class

__all__ = [
    "AUTO", "IMAGE_KINDS", "IMAGE_METHODS", "ImageData", "ImageMethod", "ImageMethodConfig", "ImageRequest",
    "ImageResult", "choose_method", "delete_records", "fix_labels", "forget_class", "get_image_method",
    "image_config", "run_image_method",
]
