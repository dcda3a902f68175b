"""fairtune-ray: fairness-aware fine-tuning search for medical imaging on Ray.

Layout (one job per module):
  data/      manifests, packed image shards, synthetic default, dataset adapters
  models/    timm backbones, PEFT masks, PEFT adapters (HF peft) placed by the mask, Fisher-weighted low-rank layers
  metrics/   dataset-level subgroup metrics, objectives, bootstrap intervals
  fisher/    per-group Fisher information and its neutralisation
  training/  the inner fine-tune loop under Accelerate, backbone pre-training
  search/    Ray Tune search space, trial function, selection, retrain-and-test
  tracking/  MLflow parent/child runs
  reporting/ tables, plots and the HTML report
  cli.py     the `fairtune-ray` command
"""

__version__ = "0.1.0"
