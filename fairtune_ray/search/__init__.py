"""The search: its space, the Tune trial and tuner, multi-worker trials, selection, the result row, the run folder and the stages (``stages/``)."""
