"""The exported model (docs/design.md#the-exported-model): a folder with ``model.safetensors`` and
``model.json`` that rebuilds the fine-tuned network without the pre-training checkpoint or any
download, scores images, and travels to MLflow as a pyfunc model.

Modules: ``folder`` (files and where a model lives), ``metadata`` (what model.json records),
``capture`` (the weights out of a fine-tune), ``rebuild`` (model.json + weights -> a scoring model),
``checks`` (does a dataset fit a model), ``scoring`` (a checked model and dataset, scored),
``evaluation`` (metrics with intervals), ``pyfunc`` and ``mlflow_model`` (the MLflow flavour,
logging, registry, ``models:/`` references).
"""
