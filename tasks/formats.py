"""How each kind of model stores, reads and describes its dataset and its trained model: the one
place a dataset, a model bundle or a stored folder is mapped to its kind for storage.

Apart from tasks/kinds/ (the kinds' steps) because this is what loading a model needs: MLflow's
model-from-code entry (tasks/pyfunc_entry.py → tasks.tracking) imports it, so it imports neither
prefect nor the step modules (importing any module of tasks/kinds/ runs their package, which
loads them all). A new kind adds one `Format` here besides its module in tasks/kinds/.

A format imports its kind's library only when it is used: a table request loads nothing of the
text or image stacks (torch models, scikit-learn, the metrics). An object can only be an instance
of a class whose module is loaded, and a stored folder is recognised by its marker file, so
mapping a table to its format needs neither."""

from __future__ import annotations

import importlib
import json
import sys
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from unlearning.tabular.bundle import ModelBundle, load_bundle, save_bundle
from unlearning.tabular.data import Table, check_trainable, load_table, save_table

# The text cells of a dataset, each with where it is (record, and column for a table).
Cells = Iterator[tuple[str, dict]]


class Format(ABC):
    """One kind's dataset and model as files, and what `data add` and MLflow say about them."""

    name: str  # "table", "text", "images": the same names as tasks.kinds
    dataset_type: type
    bundle_type: type

    def holds_dataset(self, dataset) -> bool:
        return isinstance(dataset, self.dataset_type)

    def holds_bundle(self, bundle) -> bool:
        return isinstance(bundle, self.bundle_type)

    # --- the dataset under data/NAME ------------------------------------------------------------
    @abstractmethod
    def stores_dataset(self, directory: Path) -> bool:
        """Whether `directory` holds a dataset of this kind (by the marker file its saver writes)."""

    @abstractmethod
    def save_dataset(self, dataset, directory: Path) -> None:
        """Write `dataset` as the folder `directory` (crash-safe: unlearning.storage)."""

    @abstractmethod
    def load_dataset(self, directory: Path):
        """The dataset stored in `directory`."""

    def check_dataset(self, dataset) -> None:
        """Refuse (UnlearnError) a dataset `data add` must not store."""

    @abstractmethod
    def same_dataset(self, stored, given) -> bool:
        """Whether re-adding `given` would leave data/NAME (`stored`, of this kind) as it is."""

    @abstractmethod
    def dataset_summary(self, dataset, version: str) -> tuple[dict, str]:
        """What `data add` prints: (the --json payload, the human line)."""

    def text_cells(self, dataset) -> Cells | None:
        """The texts `scan` searches for secrets, or None where the dataset holds no text."""
        return None

    def record_ids(self, dataset) -> set[str] | None:
        """The ids of the records an erasure request deletes by id (`delete_records`), or None where
        requests name no records (a text corpus's redact secrets): what tasks.erased keeps out."""
        return None

    def record_labels(self, dataset, ids: set[str]) -> dict[str, str]:
        """Record id → its label (a table's target, an image's class name), of those of `ids` the
        dataset holds: what a completed `fix_labels` rectified is checked against (tasks.erased);
        none where records carry no label (a text corpus)."""
        return {}

    # --- the trained model, as the MLflow artifact `bundle` ------------------------------------
    @abstractmethod
    def stores_model(self, path: Path) -> bool:
        """Whether `path` holds a model bundle of this kind."""

    @abstractmethod
    def save_model(self, bundle, path: Path) -> Path:
        """Write the model bundle under `path`; returns the folder written."""

    @abstractmethod
    def load_model(self, path: Path):
        """The model bundle stored under `path`."""

    @abstractmethod
    def predict(self, bundle, model_input) -> pd.Series:
        """The pyfunc model's answer to `model_input` (tracking.UnlearnModel says what it reads)."""

    @abstractmethod
    def signature(self, bundle):
        """The input/output schema the MLflow UI shows on a model version's page (MLflow also
        checks inputs against it)."""

    @abstractmethod
    def input_description(self, bundle) -> dict:
        """What the model reads, as metadata beside its signature (an input example would put
        real rows into MLflow: none is logged)."""

    def requirements(self, bundle) -> list[str]:
        """Packages the logged model needs beyond the ones every model needs (tracking.PIP_REQUIREMENTS)."""
        return []


def _schema(*columns):
    from mlflow.types.schema import Schema

    return Schema(list(columns))


class TableFormat(Format):
    name, dataset_type, bundle_type = "table", Table, ModelBundle

    def stores_dataset(self, directory: Path) -> bool:
        return True  # the unmarked format: looked at after the marked ones

    def save_dataset(self, dataset, directory: Path) -> None:
        save_table(dataset, directory)

    def load_dataset(self, directory: Path):
        return load_table(directory)

    def check_dataset(self, dataset) -> None:
        check_trainable(dataset)

    def record_ids(self, dataset) -> set[str]:
        return set(dataset.frame.index)

    def record_labels(self, dataset, ids: set[str]) -> dict[str, str]:
        target = dataset.frame[dataset.target]
        return {i: str(target.at[i]) for i in ids if i in target.index}

    def same_dataset(self, stored, given) -> bool:
        return stored.revoked == given.revoked and stored.frame.astype(str).equals(given.frame.astype(str))

    def dataset_summary(self, dataset, version: str) -> tuple[dict, str]:
        payload = {"name": dataset.name, "kind": "table", "rows": len(dataset.frame),
                   "features": list(dataset.features), "target": dataset.target,
                   "labels": list(dataset.labels), "data_version": version}
        human = (f"data/{dataset.name}: {len(dataset.frame)} rows, {len(dataset.features)} features, "
                 f"target {dataset.target!r} — data version {version} (data.dvc)")
        return payload, human

    def text_cells(self, dataset) -> Cells:
        """The non-numeric cells, by record id and column."""
        for column in dataset.frame.columns:
            values = dataset.frame[column]
            if pd.api.types.is_numeric_dtype(values):
                continue
            for record, value in values.dropna().items():
                yield str(value), {"record": str(record), "column": column}

    def stores_model(self, path: Path) -> bool:
        return True  # the unmarked format: looked at after the marked ones

    def save_model(self, bundle, path: Path) -> Path:
        return save_bundle(bundle, path)

    def load_model(self, path: Path):
        return load_bundle(path)

    def predict(self, bundle, model_input) -> pd.Series:
        return pd.Series(bundle.predict(model_input), name="prediction")

    def signature(self, bundle):
        """The source columns by name (revoked ones optional), typed `any`: MLflow would refuse an
        int column for a `double` and the model reads numbers and categories as given; no category
        value appears (the encoder keeps only their keyed hashes)."""
        from mlflow.models import ModelSignature
        from mlflow.types.schema import AnyType, ColSpec

        enc = bundle.encoder
        inputs = [ColSpec(AnyType(), f, required=f not in enc.revoked) for f in enc.features]
        return ModelSignature(inputs=_schema(*inputs), outputs=_schema(ColSpec("string", "prediction")))

    def input_description(self, bundle) -> dict:
        enc = bundle.encoder
        return {"input_columns": {f: ("category" if f in enc.categorical else "number") for f in enc.features},
                "revoked_features": list(enc.revoked), "labels": list(enc.labels), "encoded_features": enc.d}


# The files that mark a stored folder of a lazily loaded format: the libraries' SCHEMA_FILE and
# META_FILE, named here so that recognising a table's folder imports neither library
# (tests/unit/test_cold_imports.py keeps them equal).
SCHEMA_FILE = "schema.json"


def stored_kind(directory: Path) -> str | None:
    """The "kind" a stored dataset's schema.json names (text, images), or None."""
    try:
        schema = json.loads((Path(directory) / SCHEMA_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return schema.get("kind") if isinstance(schema, dict) else None


def loaded_class(path: str) -> type | None:
    """The class at "module:Name" if its module is already imported, else None: no object can be
    an instance of a class that was never defined, so there is nothing to import to ask."""
    module, _, name = path.partition(":")
    found = sys.modules.get(module)
    return getattr(found, name, None) if found is not None else None


def library(module: str):
    """A kind's library module, imported on first use."""
    return importlib.import_module(module)


class LazyFormat(Format):
    """A format whose library is imported on first use; its types are named "module:Class"."""

    dataset_class: str
    bundle_class: str
    model_marker: str  # the file a stored model bundle of this kind holds

    @property
    def dataset_type(self) -> type:
        module, _, name = self.dataset_class.partition(":")
        return getattr(library(module), name)

    @property
    def bundle_type(self) -> type:
        module, _, name = self.bundle_class.partition(":")
        return getattr(library(module), name)

    def holds_dataset(self, dataset) -> bool:
        cls = loaded_class(self.dataset_class)
        return cls is not None and isinstance(dataset, cls)

    def holds_bundle(self, bundle) -> bool:
        cls = loaded_class(self.bundle_class)
        return cls is not None and isinstance(bundle, cls)

    def stores_dataset(self, directory: Path) -> bool:
        return stored_kind(directory) == self.name

    def stores_model(self, path: Path) -> bool:
        return (Path(path) / self.model_marker).exists()


HF_PRESET = "hf"  # LMBundle.preset of a Hugging Face causal LM (unlearning.text.hf)


def pinned(package: str) -> str:
    """`package==<installed version>`, so the logged model names what it was saved with."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{package}=={version(package)}"
    except PackageNotFoundError:
        return package


class TextFormat(LazyFormat):
    name, dataset_class, bundle_class, model_marker = "text", "unlearning.text.data:TextCorpus", \
        "unlearning.text.lm:LMBundle", "lm.json"

    def save_dataset(self, dataset, directory: Path) -> None:
        library("unlearning.text.data").save_corpus(dataset, directory)

    def load_dataset(self, directory: Path):
        return library("unlearning.text.data").load_corpus(directory)

    def same_dataset(self, stored, given) -> bool:
        return stored.records == given.records and stored.redacted == given.redacted

    def dataset_summary(self, dataset, version: str) -> tuple[dict, str]:
        payload = {"name": dataset.name, "kind": "text", "records": len(dataset.records),
                   "characters": dataset.n_chars, "data_version": version}
        human = (f"data/{dataset.name}: {len(dataset.records)} text records, {dataset.n_chars} characters "
                 f"— data version {version} (data.dvc)")
        return payload, human

    def text_cells(self, dataset) -> Cells:
        for record, text in dataset.records:
            yield text, {"record": record}

    def save_model(self, bundle, path: Path) -> Path:
        return library("unlearning.text.lm").save_lm(bundle, path)

    def load_model(self, path: Path):
        return library("unlearning.text.lm").load_lm(path)

    def predict(self, bundle, model_input) -> pd.Series:
        """The model's greedy continuation of each prompt: 40 characters of the char LM, 40 tokens of a
        Hugging Face model."""
        if bundle.preset == HF_PRESET:
            from unlearning.text.hf_tokens import generate
        else:
            from unlearning.text.charlm import generate
        return pd.Series([generate(bundle.model, bundle.vocab, str(p), 40) for p in model_input["prompt"]],
                         name="continuation")

    def signature(self, bundle):
        from mlflow.models import ModelSignature
        from mlflow.types.schema import ColSpec

        return ModelSignature(inputs=_schema(ColSpec("string", "prompt")),
                              outputs=_schema(ColSpec("string", "continuation")))

    def input_description(self, bundle) -> dict:
        if bundle.preset != HF_PRESET:
            return {"input_columns": {"prompt": "text"}, "kind": "charlm", "preset": bundle.preset}
        # The bundle folder is a Hugging Face checkpoint too (unlearning.text.hf.save): transformers
        # loads it as is; a LoRA bundle holds the base weights there and the adapters in adapter/.
        base, lora = bundle.settings.get("base") or {}, bool(bundle.settings.get("lora"))
        model = ("peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(<artifacts/bundle>), "
                 "<artifacts/bundle>/adapter)" if lora else "AutoModelForCausalLM.from_pretrained(<artifacts/bundle>)")
        return {"input_columns": {"prompt": "text"}, "kind": "hf-causal-lm", "preset": bundle.preset,
                "base_checkpoint": base.get("path"), "base_checkpoint_sha256": base.get("sha256"), "lora": lora,
                "load_with": "mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({'prompt': [...]})) for greedy "
                             f"40-token continuations; or with transformers: {model} and "
                             "AutoTokenizer.from_pretrained(<artifacts/bundle>)"}

    def requirements(self, bundle) -> list[str]:
        if bundle.preset != HF_PRESET:
            return []
        return [pinned("transformers"), pinned("tokenizers"), *([pinned("peft")] if bundle.settings.get("lora") else [])]


class ImageFormat(LazyFormat):
    name, dataset_class, bundle_class, model_marker = "images", "unlearning.images.data:ImageDataset", \
        "unlearning.images.bundle:ImageBundle", "image_model.json"

    def save_dataset(self, dataset, directory: Path) -> None:
        library("unlearning.images.data").save_images(dataset, directory)

    def load_dataset(self, directory: Path):
        return library("unlearning.images.data").load_images(directory)

    def record_ids(self, dataset) -> set[str]:
        return set(dataset.record_ids)

    def record_labels(self, dataset, ids: set[str]) -> dict[str, str]:
        rows = {record: position for position, record in enumerate(dataset.record_ids) if record in ids}
        return {record: dataset.classes[int(dataset.labels[position])] for record, position in rows.items()}

    def same_dataset(self, stored, given) -> bool:
        return (stored.record_ids == given.record_ids
                and stored.classes == given.classes
                and np.array_equal(stored.labels, given.labels)
                and np.array_equal(stored.train, given.train)
                and np.array_equal(stored.images, given.images))

    def dataset_summary(self, dataset, version: str) -> tuple[dict, str]:
        n_train = int(dataset.train.sum())
        payload = {"name": dataset.name, "kind": "images", "images": len(dataset), "train": n_train,
                   "test": len(dataset) - n_train, "shape": list(dataset.images.shape[1:]),
                   "classes": list(dataset.classes), "source": dataset.source, "data_version": version}
        human = (f"data/{dataset.name}: {len(dataset)} images {'x'.join(map(str, dataset.images.shape[2:]))} "
                 f"({n_train} train, {len(dataset) - n_train} test), {len(dataset.classes)} classes "
                 f"— data version {version} (data.dvc)")
        return payload, human

    def save_model(self, bundle, path: Path) -> Path:
        return library("unlearning.images.bundle").save_image_bundle(bundle, path)

    def load_model(self, path: Path):
        from tasks import factories

        # a user's model is rebuilt only through a factory the user passed (tasks/factories.py)
        return library("unlearning.images.bundle").load_image_bundle(path, allow=factories.allowed())

    def predict(self, bundle, model_input) -> pd.Series:
        images = model_input["image"].to_numpy() if isinstance(model_input, pd.DataFrame) else model_input
        return pd.Series(bundle.predict(images), name="prediction")

    def signature(self, bundle):
        """The predicted class only: the model reads (n, H, W) or (n, C, H, W), uint8 or floats,
        and a tensor spec would refuse all but one of those forms (metadata has the input)."""
        from mlflow.models import ModelSignature
        from mlflow.types.schema import ColSpec

        return ModelSignature(inputs=None, outputs=_schema(ColSpec("string", "prediction")))

    def input_description(self, bundle) -> dict:
        factory = bundle.model.config.get("factory")
        return {"kind": "cnn" if factory is None else "factory", "preset": bundle.preset,
                **({} if factory is None else {"model_factory": factory,
                                               "model_factory_sha256": bundle.model.config.get("factory_sha256")}),
                "classes": list(bundle.classes),
                "input": "images (n, H, W) or (n, C, H, W): uint8 0-255 or floats in [0, 1]",
                "n_train": len(bundle.train_ids)}


TABLE, TEXT, IMAGES = TableFormat(), TextFormat(), ImageFormat()
FORMATS: tuple[Format, ...] = (TABLE, TEXT, IMAGES)
# Folders are recognised by the marker files of the marked formats first; a table's carry none.
BY_MARKER: tuple[Format, ...] = (IMAGES, TEXT, TABLE)


def format_of(dataset) -> Format:
    """The format of a dataset (Table, TextCorpus, ImageDataset)."""
    for found in FORMATS:
        if found.holds_dataset(dataset):
            return found
    raise TypeError(f"no kind of model holds a {type(dataset).__name__}")


def format_of_bundle(bundle) -> Format:
    """The format of a trained model (ModelBundle, LMBundle, ImageBundle)."""
    for found in BY_MARKER:
        if found.holds_bundle(bundle):
            return found
    raise TypeError(f"no kind of model is a {type(bundle).__name__}")


def format_of_dataset_folder(directory: Path) -> Format:
    return next(found for found in BY_MARKER if found.stores_dataset(directory))


def format_of_model_folder(path: Path) -> Format:
    return next(found for found in BY_MARKER if found.stores_model(path))
