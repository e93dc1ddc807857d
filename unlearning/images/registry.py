"""The image unlearning methods in the one registry (unlearning/registry.py), kind `images`.

An image method is called as `fn(model, data, request, config) -> ImageResult`: `model` the
trained CNN (never modified), `data` its training set and schedule, `request` the forget/retain
indices, `config` the method's validated pydantic config. `run_image_method` (registry.run for
images) validates options, times the call (stats["seconds"]) and runs it single-threaded like the
convex methods (linalg.single_threaded explains why: on the shared 2-core machine a second OpenMP
thread made a training step 3–4× slower).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import NamedTuple

import torch

from unlearning import registry
# Submodules by their full names: the package's __init__ imports none of its methods, so they can
# import it, and this module needs none of the package's names.
import unlearning.images.alignment as alignment
import unlearning.images.baselines as baselines
import unlearning.images.influence as influence
from unlearning.images.cnn import CNN
from unlearning.images.common import ImageChain, ImageMethodConfig, ImageResult
from unlearning.images.request import ImageData, ImageRequest
from unlearning.linalg import single_threaded

KIND = "images"
AUTO = registry.AUTO


class ImageContext(NamedTuple):
    model: CNN
    data: ImageData
    request: ImageRequest
    chain: ImageChain | None = None  # the chain a deletion continues (alignment's unroll; CHAINED)


# The methods that continue a chain of deletions (`chain=`); the others start from the model before.
CHAINED = ("alignment",)


IMAGE_METHODS: dict[str, registry.Method] = registry.table(KIND)  # live: plugins appear here too

for _name, _guarantee, _config, _fn in (
    ("alignment", "empirical", alignment.AlignmentConfig, alignment.alignment),
    ("retrain", "exact", baselines.RetrainConfig, baselines.retrain),
    ("finetune", "empirical", baselines.FinetuneConfig, baselines.finetune),
    ("gradient_ascent", "empirical", baselines.GradientAscentConfig, baselines.gradient_ascent),
    ("random_labels", "empirical", baselines.RandomLabelsConfig, baselines.random_labels),
    ("scrub", "empirical", baselines.ScrubConfig, baselines.scrub),
    ("salun", "empirical", baselines.SalUnConfig, baselines.salun),
    ("l1_sparse", "empirical", baselines.L1SparseConfig, baselines.l1_sparse),
    ("first_order", "empirical", influence.FirstOrderConfig, influence.first_order),
    ("second_order", "empirical", influence.SecondOrderConfig, influence.second_order),
):
    registry.register(KIND, _name, _guarantee, _config)(_fn)


def choose_method(request: ImageRequest | None = None) -> str:
    """What `auto` means for a deep image model (registry.choose decides it)."""
    return registry.choose(KIND, AUTO)


def get_image_method(name: str, request: ImageRequest | None = None) -> registry.Method:
    return registry.get(KIND, registry.choose(KIND, name))


def _warm_up_optimiser() -> None:
    """The first torch.optim optimiser of a process imports torch._dynamo (measured 3–5 s here);
    pay it before the clock starts, so RTE measures the method, not the process's first import."""
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)


def run_image_method(name: str, model: CNN, data: ImageData, request: ImageRequest,
                     options: Mapping | None = None, chain: ImageChain | None = None) -> ImageResult:
    """Validate, run and time an image unlearning method (`auto` → registry.choose); `chain`: the
    chain of deletions the model before continues (used by the CHAINED methods)."""
    return registry.run(KIND, name, ImageContext(model, data, request, chain), options)


def _execute(method: registry.Method, ctx: ImageContext, config: ImageMethodConfig) -> ImageResult:
    ctx.request.check(ctx.data)
    _warm_up_optimiser()
    started, cpu_started = time.perf_counter(), time.process_time()
    chained = {"chain": ctx.chain} if ctx.chain is not None and method.name in CHAINED else {}
    with single_threaded():
        result = method.run(ctx.model, ctx.data, ctx.request, config, **chained)
    result.stats["seconds"] = time.perf_counter() - started
    # CPU time of this (single-threaded) process: on the shared machine wall-clock ratios swing
    # with the other jobs' load, CPU-time ratios do not.
    result.stats["cpu_seconds"] = time.process_time() - cpu_started
    result.stats["config"] = config.model_dump()
    return result


registry.define_kind(KIND, _execute, lambda ctx: {})
