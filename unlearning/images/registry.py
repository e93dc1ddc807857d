"""The registry of image unlearning methods: each a config plus a function, under a stable name.

Every method is called as `run(model, data, request, config) -> ImageResult`: `model` the trained
CNN (never modified), `data` its training set and schedule, `request` the forget/retain indices,
`config` the method's validated pydantic config. `run_image_method` validates options, times the
call (stats["seconds"]) and runs it single-threaded like the convex methods (methods.py explains
why: on the shared 2-core machine a second OpenMP thread made a training step 3–4× slower).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from pydantic import ValidationError

from unlearning.errors import UnlearnError
from unlearning.images import alignment, baselines, influence
from unlearning.images.common import ImageMethodConfig, ImageResult
from unlearning.images.request import ImageData, ImageRequest
from unlearning.methods import single_threaded
from unlearning.models.cnn import CNN

AUTO = "auto"


@dataclass(frozen=True)
class ImageMethod:
    name: str
    guarantee: str
    config: type[ImageMethodConfig]
    run: Callable[[CNN, ImageData, ImageRequest, ImageMethodConfig], ImageResult]

    @property
    def summary(self) -> str:
        return (self.run.__doc__ or "").strip().splitlines()[0]


IMAGE_METHODS: dict[str, ImageMethod] = {m.name: m for m in (
    ImageMethod("alignment", "empirical", alignment.AlignmentConfig, alignment.alignment),
    ImageMethod("retrain", "exact", baselines.RetrainConfig, baselines.retrain),
    ImageMethod("finetune", "empirical", baselines.FinetuneConfig, baselines.finetune),
    ImageMethod("gradient_ascent", "empirical", baselines.GradientAscentConfig, baselines.gradient_ascent),
    ImageMethod("random_labels", "empirical", baselines.RandomLabelsConfig, baselines.random_labels),
    ImageMethod("scrub", "empirical", baselines.ScrubConfig, baselines.scrub),
    ImageMethod("salun", "empirical", baselines.SalUnConfig, baselines.salun),
    ImageMethod("l1_sparse", "empirical", baselines.L1SparseConfig, baselines.l1_sparse),
    ImageMethod("first_order", "empirical", influence.FirstOrderConfig, influence.first_order),
    ImageMethod("second_order", "empirical", influence.SecondOrderConfig, influence.second_order),
)}


def choose_method(request: ImageRequest | None = None) -> str:
    """What `auto` means for a deep image model: alignment, for every request kind (the influence
    updates have no certificate for a non-convex network, and retraining is the reference)."""
    return "alignment"


def get_image_method(name: str, request: ImageRequest | None = None) -> ImageMethod:
    resolved = choose_method(request) if name == AUTO else name
    if resolved not in IMAGE_METHODS:
        raise UnlearnError(f"method {name!r} does not apply to an image model: choose one of "
                           f"{', '.join(IMAGE_METHODS)} or auto (certified needs a convex model)")
    return IMAGE_METHODS[resolved]


def image_config(name: str, options: Mapping | None = None, request: ImageRequest | None = None) -> ImageMethodConfig:
    """The method's validated config; any problem is one UnlearnError line."""
    method = get_image_method(name, request)
    if options is not None and not isinstance(options, Mapping):
        raise UnlearnError(f"bad options for method {method.name!r}: expected a mapping of option names "
                           f"to values, got {type(options).__name__}")
    try:
        return method.config(**(options or {}))
    except ValidationError as exc:  # pydantic's report is multi-line; the CLI wants one line
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg']}" for e in exc.errors())
        raise UnlearnError(f"bad options for method {method.name!r}: {problems} "
                           f"(valid options: {', '.join(method.config.model_fields) or 'none'})") from None


def _warm_up_optimiser() -> None:
    """The first torch.optim optimiser of a process imports torch._dynamo (measured 3–5 s here);
    pay it before the clock starts, so RTE measures the method, not the process's first import."""
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)


def run_image_method(name: str, model: CNN, data: ImageData, request: ImageRequest,
                     options: Mapping | None = None) -> ImageResult:
    """Validate, run and time an image unlearning method (`auto` → choose_method)."""
    method = get_image_method(name, request)
    config = image_config(method.name, options)
    request.check(data)
    _warm_up_optimiser()
    started, cpu_started = time.perf_counter(), time.process_time()
    with single_threaded():
        result = method.run(model, data, request, config)
    result.stats["seconds"] = time.perf_counter() - started
    # CPU time of this (single-threaded) process: on the shared machine wall-clock ratios swing
    # with the other jobs' load, CPU-time ratios do not.
    result.stats["cpu_seconds"] = time.process_time() - cpu_started
    result.stats["config"] = config.model_dump()
    return result
