"""Flow `train`: data version → fit → evaluate → register → promote."""

from __future__ import annotations

import math
from pathlib import Path

from prefect import flow
from prefect.runtime import flow_run

from tasks import image_steps, steps, tracking
from unlearning.data.images import ImageDataset
from unlearning.data.text import TextCorpus
from unlearning.errors import UnlearnError
from unlearning.images.bundle import ImageTrainConfig
from unlearning.lm import TextTrainConfig
from unlearning.training import TrainConfig


@flow(name="train", log_prints=False, validate_parameters=True)
def train_flow(root: str, dataset: str, model: str | None = None, config: TrainConfig = TrainConfig(),
               text_config: TextTrainConfig = TextTrainConfig(),
               image_config: ImageTrainConfig = ImageTrainConfig()) -> dict:
    """Train a model on a DVC-versioned dataset and make it `production`: logistic regression for a
    table (`config`), a character LSTM for a text corpus (`text_config`), a CNN for images
    (`image_config`)."""
    root_path = Path(root)
    name = model or dataset
    table, data_version, digest = steps.load_data(root_path, dataset)
    experiment = tracking.configure(root_path)
    tags = {"data_version": data_version, "dataset": dataset, "dataset_digest": digest,
            "git_commit": tracking.git_commit(root_path), "prefect_flow_run": flow_run.id, "model": name}
    with tracking.run(experiment, f"train {name}", {**tags, "flow": "train"}) as parent:
        lineage = steps.Lineage(root_path, experiment, parent, tags)
        if isinstance(table, TextCorpus):
            tracking.log_params(parent, {"dataset": dataset, "kind": "text", **text_config.model_dump()})
            bundle, fit_seconds = steps.fit_lm(lineage, table, text_config)
            b, metrics, guarantee_tags = None, steps.evaluate_lm(lineage, table, bundle), {"certified": "false"}
        elif isinstance(table, ImageDataset):
            tracking.log_params(parent, {"dataset": dataset, "kind": "images", **image_config.model_dump()})
            bundle, fit_seconds = image_steps.fit_cnn(lineage, table, image_config)
            b, metrics, guarantee_tags = None, image_steps.evaluate_cnn(lineage, table, bundle), {"certified": "false"}
        else:
            tracking.log_params(parent, {"dataset": dataset, **config.model_dump()})
            tracking.log_dataset(parent, dataset, data_version, root_path / "data" / dataset, table.frame)
            bundle, b, fit_seconds = steps.fit(lineage, table, config)
            metrics = steps.evaluate(lineage, table, bundle)
            guarantee_tags = steps.certification_tags(bundle)
        refuse_unmeasured(name, metrics)
        version, model_run = steps.register(lineage, name, bundle, b, {
            "parent_version": None, "method": "train", "guarantee": "exact", "lineage_run": parent,
            "data_before": None, "data_after": data_version, **guarantee_tags}, table)
        steps.promote(lineage, name, version)
        tracking.log_metrics(parent, {**metrics, "fit_seconds": fit_seconds})
        summary = {"model": {"name": name, "version": version}, "data_version": data_version,
                   "certified": guarantee_tags["certified"] == "true", "metrics": metrics,
                   "timings": {"fit_s": fit_seconds}, "run_id": parent}
        tracking.log_json(parent, summary, "result.json")
    return summary


def refuse_unmeasured(name: str, metrics: dict) -> None:
    """A model whose held-out metrics are NaN (nothing to evaluate on) was never judged: it is
    neither registered nor promoted."""
    unmeasured = sorted(k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v))
    if unmeasured:
        raise UnlearnError(f"model {name} was not registered: {', '.join(unmeasured)} could not be measured "
                           f"(NaN); give the dataset held-out rows of every class and train again")
