"""MLflow "model from code" entry: MLflow copies this file into every logged model and runs it at
load time (no pickled Python objects in the registry). Not imported by the package itself."""

import mlflow

from tasks.tracking import UnlearnModel

mlflow.models.set_model(UnlearnModel())
