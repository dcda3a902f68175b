"""MLflow tracking: one parent run per search, one nested child run per trial."""
from fairtune_ray.tracking.mlflow_runs import (  # noqa: F401
    DEFAULT_TRACKING_URI, ChildRunLogger, finish_child_runs, metric_key, resolve_tracking_uri, start_parent_run,
)
