"""Flow `train`: data version → fit → evaluate → register → promote; and flow `import`: a model
fine-tuned elsewhere (a Hugging Face checkpoint) → evaluate → register → promote, with the data
version the user declares it was trained on."""

from __future__ import annotations

import math
from pathlib import Path

from prefect.runtime import flow_run

from flows.runs import flow
from tasks import common, tracking
from tasks.kinds import kind_of
from unlearning.errors import UnlearnError
from unlearning.images.bundle import ImageTrainConfig
from unlearning.tabular.training import TrainConfig
from unlearning.text.lm import TextTrainConfig


@flow(name="train", log_prints=False, validate_parameters=True)
def train_flow(root: str, dataset: str, model: str | None = None, config: TrainConfig = TrainConfig(),
               text_config: TextTrainConfig = TextTrainConfig(),
               image_config: ImageTrainConfig = ImageTrainConfig()) -> dict:
    """Train a model on a DVC-versioned dataset and make it `production`: logistic regression for a
    table (`config`), a character LSTM for a text corpus (`text_config`), a CNN for images
    (`image_config`)."""
    root_path = Path(root)
    name = model or dataset
    data, data_version, digest = common.load_data(root_path, dataset)
    kind = kind_of(data)
    config = {"table": config, "text": text_config, "images": image_config}[kind.name]
    prepared = kind.prepare(data, config)  # a checkpoint that does not load: one line, nothing recorded
    require_data_version(root_path)
    experiment = tracking.configure(root_path)
    tags = {"data_version": data_version, "dataset": dataset, "dataset_digest": digest,
            "git_commit": tracking.git_commit(root_path), "prefect_flow_run": flow_run.id, "model": name}
    with tracking.run(experiment, f"train {name}", {**tags, "flow": "train"}) as parent:
        lineage = common.Lineage(root_path, experiment, parent, tags)
        tracking.log_params(parent, kind.train_params(dataset, config))
        trained = kind.train(lineage, data, config, data_version, prepared)
        metrics, fit_seconds, guarantee_tags = trained.metrics, trained.fit_seconds, trained.version_tags
        refuse_unmeasured(name, metrics)
        version, model_run, _ = common.register(lineage, name, trained.bundle, trained.b, {
            "parent_version": None, "method": "train", "guarantee": "exact", "lineage_run": parent,
            "data_before": None, "data_after": data_version, **guarantee_tags}, trained.cache)
        common.promote(lineage, name, version)
        tracking.log_metrics(parent, {**metrics, "fit_seconds": fit_seconds})
        summary = {"model": {"name": name, "version": version}, "data_version": data_version,
                   "certified": guarantee_tags["certified"] == "true", "metrics": metrics,
                   "timings": {"fit_s": fit_seconds}, "run_id": parent}
        tracking.log_json(parent, summary, "result.json")
    return summary


@flow(name="import", log_prints=False, validate_parameters=True)
def import_flow(root: str, model: str, dataset: str, checkpoint: str, base: str | None = None,
                steps: int | None = None, seed: int = 0, lr: float | None = None, batch: int | None = None,
                seq_len: int | None = None) -> dict:
    """Register the Hugging Face causal LM in `checkpoint`, fine-tuned elsewhere on `dataset` as it
    is checked out (the user's declaration, recorded as such), and make it `production`. `base`:
    the checkpoint it was fine-tuned from, which retraining (`--verify reference`, the audit)
    fine-tunes again on the corrected data with the declared schedule (`steps`, `lr`, `batch`,
    `seq_len`: all required with `base`, tasks.kinds.hf.declared_schedule)."""
    from tasks.kinds import text as text_kind
    from tasks.kinds.hf import declared_schedule, load_import

    schedule = declared_schedule(base, steps, lr, batch, seq_len)

    root_path = Path(root)
    data, data_version, digest = common.load_data(root_path, dataset)
    loaded = load_import(checkpoint, base, schedule, seed)  # one that does not load: nothing recorded
    require_data_version(root_path)
    experiment = tracking.configure(root_path)
    tags = {"data_version": data_version, "dataset": dataset, "dataset_digest": digest,
            "git_commit": tracking.git_commit(root_path), "prefect_flow_run": flow_run.id, "model": model}
    with tracking.run(experiment, f"import {model}", {**tags, "flow": "import"}) as parent:
        lineage = common.Lineage(root_path, experiment, parent, tags)
        tracking.log_params(parent, {"dataset": dataset, "kind": "text", "checkpoint": checkpoint, "base": base,
                                     **schedule, "seed": seed, "data_declared": "true"})
        trained = text_kind.import_pretrained(lineage, data, loaded)
        refuse_unmeasured(model, trained.metrics)
        version, _, _ = common.register(lineage, model, trained.bundle, None, {
            "parent_version": None, "method": "import", "guarantee": "declared", "lineage_run": parent,
            "data_before": None, "data_after": data_version, "data_declared": "true", **trained.version_tags})
        common.promote(lineage, model, version)
        tracking.log_metrics(parent, trained.metrics)
        summary = {"model": {"name": model, "version": version}, "data_version": data_version, "certified": False,
                   "metrics": trained.metrics, "lineage": trained.version_tags, "run_id": parent}
        tracking.log_json(parent, summary, "result.json")
    return summary


def require_data_version(root: Path) -> None:
    """data/ must be the version data.dvc names (tasks.dvc.require_checked_out): a `data add` killed
    before its `dvc add` left other rows, which the model would be tagged with the wrong version
    for. Asked last before the run is recorded, after every check of the input (a checkpoint that
    does not load included): asking DVC writes its lock and hash-cache files, and a refusal of bad
    input writes nothing."""
    from tasks import dvc

    dvc.require_checked_out(root)


def refuse_unmeasured(name: str, metrics: dict) -> None:
    """A model whose held-out metrics are NaN (nothing to evaluate on) was never judged: it is
    neither registered nor promoted."""
    unmeasured = sorted(k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v))
    if unmeasured:
        raise UnlearnError(f"model {name} was not registered: {', '.join(unmeasured)} could not be measured "
                           f"(NaN); give the dataset held-out rows of every class and train again")
