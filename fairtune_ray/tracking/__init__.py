"""MLflow tracking: one parent run per search, one nested child run per trial."""
from fairtune_ray.tracking.descriptions import (  # noqa: F401
    EXPERIMENT_KIND_TAG, MODEL_URI_TAG, NOTE_TAG, TRAINING_KIND, model_sentence, search_description, trials_sentence,
)
from fairtune_ray.tracking.mlflow_runs import (  # noqa: F401
    DEFAULT_TRACKING_URI, ChildRunLogger, experiment_id, finish_child_runs, metric_key, objective_mode,
    resolve_tracking_uri, start_parent_run, trials_link, ui_hint,
)
