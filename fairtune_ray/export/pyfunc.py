"""The MLflow pyfunc flavour of an exported model: the model folder travels as the artifact
``model_dir``; this class, importable wherever fairtune_ray is installed, loads and scores it."""
from __future__ import annotations

import mlflow.pyfunc
import numpy as np

from fairtune_ray.export.folder import PYFUNC_ARTIFACT
from fairtune_ray.export.rebuild import ExportedModel


class FairtuneModel(mlflow.pyfunc.PythonModel):
    """Input: a batch of images (N, H, W, C), uint8 as in prepared datasets (the logged signature);
    output: P(label 1) per image, float32."""

    def load_context(self, context):
        self.exported = ExportedModel(context.artifacts[PYFUNC_ARTIFACT])

    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        # np.ndarray: MLflow infers nothing from this hint and enforces the logged signature instead
        return self.exported.score(np.asarray(model_input)).astype(np.float32)
