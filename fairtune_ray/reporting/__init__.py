"""The search report: ``report.write_report`` turns a run folder into ``report.html`` (+ MLflow).

run_data gathers the inputs (run folder, MLflow via mlflow_access, trial helpers in trials),
figures decides what each figure shows (drawn by plots and pareto_plot), html renders the
jinja2 template in templates/; tables holds the terminal's per-group table.
"""
