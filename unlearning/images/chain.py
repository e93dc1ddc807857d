"""The rules of an image model's chain of unrolled record deletions, in one copy: the pipeline
(tasks.kinds.images and images_chain) and bench.stream's image scenario follow them. Plain data in,
plain data out: a model's first model is whatever its caller names it by (a run id and version in
the pipeline, the model itself in the bench); where a chain is kept (sealed beside the project,
tasks.state.teacher_file) is the caller's business. The chained step is alignment.unroll's.

- What takes the chain: a method that continues chains (registry.CHAINED) whose options take the
  unrolling path for the request (alignment.unrolls). Nothing else opens it: it is of removed data
  (its first model learnt the deleted images, its gradient is of them).
- What a deletion continues: the chain the model before keeps; a model that keeps none (trained,
  retrained, updated another way, or audited and left in production) starts one from itself.
- What the new model keeps: the chain unroll returns, whose first model is the chain's where the
  deletion continued it, and the model before where no halved step met the guard and the chain
  ended (the deletion was unrolled from the model before, which starts a new chain); none where
  the method took another path.
- After an audit the chain goes (its gradient is of the requests the audit covers, and its first
  model learnt them): production, if it stays, starts the next one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from unlearning.images.alignment import unrolls
from unlearning.images.cnn import CNN
from unlearning.images.common import ImageChain
from unlearning.images.registry import CHAINED
from unlearning.images.request import ImageData, ImageRequest

R = TypeVar("R")  # what names a chain's first model: a run id and version, or the model itself


def takes_the_chain(method: str, options: Mapping | None, data: ImageData, request: ImageRequest) -> bool:
    """Does `method` with `options` continue the chain of the model before on this request?"""
    return method in CHAINED and unrolls(options, data, request)


def continued(kept: tuple[ImageChain, R] | None, before: CNN, named: R) -> tuple[ImageChain, R]:
    """(the chain a deletion from the model `before` continues, what names its first model): the one
    `before` keeps, else a new chain from `before` itself, which `named` names."""
    return (ImageChain(before), named) if kept is None else kept


def first_model(taken: tuple[ImageChain, R], result: ImageChain | None, before: R) -> R | None:
    """What names the first model of the chain the new model keeps, after a deletion that took the
    chain `taken` (continued) and returned the chain `result` (unroll's; None: another path):
    the taken chain's first model where it went on, `before` (the model before) where it ended."""
    if result is None:
        return None
    chain, start = taken
    return start if result.model is chain.model else before
