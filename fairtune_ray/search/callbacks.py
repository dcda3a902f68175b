"""Driver-side Tune callback: what happened to each trial, for the MLflow child runs.

A trial stopped by ASHA never runs code after its last report, so only the driver can tell
"completed" from "stopped early"; failures carry Tune's error text.
"""
from __future__ import annotations

from ray import tune


class TrialStatusCallback(tune.Callback):
    def __init__(self, max_epochs: int):
        self.max_epochs = max_epochs
        self.statuses: dict[str, tuple[str, str]] = {}

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = int((trial.last_result or {}).get("epoch", 0))
        if last >= self.max_epochs:
            self.statuses[trial.trial_id] = ("completed", "")
        else:
            self.statuses[trial.trial_id] = ("stopped_early", f"stopped by ASHA after epoch {last} of {self.max_epochs}")

    def on_trial_error(self, iteration, trials, trial, **info):
        reason = ""
        path = getattr(trial, "error_file", None) or ""
        try:
            if path:
                with open(path) as f:
                    reason = f.read()[-3000:]
        except OSError:
            pass
        self.statuses[trial.trial_id] = ("failed", reason or "trial raised an error (see Ray logs)")
