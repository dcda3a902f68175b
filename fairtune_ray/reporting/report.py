"""The search report: one self-contained ``report.html`` in the run folder, same figures in MLflow.

Inputs are the files ``fairtune-ray search`` writes into ``runs/<name>/`` (results.json,
trials.json, test_scores.npz, config.yaml, fairtune_run.json) plus, when the MLflow store is
reachable, the per-epoch history of every trial's child run and any Fisher statistics logged to
the parent run. ``download_run`` rebuilds such a folder from a parent run id alone.

Sections: summary, results table with intervals, Pareto plot, mask heat map, per-group ROC
curves, validation objective per epoch (ASHA stops), Fisher disparity per layer (if present).
"""
from __future__ import annotations

import base64
import html
import json
import math
import re
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urlparse

import numpy as np

REPORT_NAME = "report.html"
FIGURE_DIR = "figures"
SCORES_NAME = "test_scores.npz"
RUN_INFO = "fairtune_run.json"
PARENT_TAG = "mlflow.parentRunId"
TRIAL_TAG = "ray_trial_id"
_BIT_KEY = re.compile(r"^m(\d+)$")


# --------------------------------------------------------------------------- test scores
def save_test_scores(rows: list[dict], path: Path, group_names: Optional[dict] = None) -> Path:
    """Write each row's ``_scores`` (test labels, groups, per-seed scores) as one npz array set per method."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {}
    methods = []
    for row in rows:
        sc = row.get("_scores")
        if not sc:
            continue
        i = len(methods)
        methods.append(str(row["method"]))
        arrays[f"m{i}_labels"] = np.asarray(sc["labels"])
        arrays[f"m{i}_groups"] = np.asarray(sc["groups"])
        arrays[f"m{i}_scores"] = np.atleast_2d(np.asarray([np.asarray(s, dtype=np.float32) for s in sc["scores"]]))
    names = group_names or {}
    arrays["methods"] = np.array(methods, dtype=str)
    arrays["group_codes"] = np.array(sorted(names), dtype=np.int64)
    arrays["group_names"] = np.array([str(names[c]) for c in sorted(names)], dtype=str)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


def load_test_scores(path: Path) -> tuple[dict[str, dict[str, np.ndarray]], dict[int, str]]:
    """({method: {labels, groups, scores [seeds, n]}}, {group code: name})."""
    with np.load(path, allow_pickle=False) as z:
        methods = [str(m) for m in z["methods"]]
        out = {m: {"labels": z[f"m{i}_labels"], "groups": z[f"m{i}_groups"], "scores": np.atleast_2d(z[f"m{i}_scores"])}
               for i, m in enumerate(methods)}
        names = {int(c): str(n) for c, n in zip(z["group_codes"], z["group_names"])}
    return out, names


# --------------------------------------------------------------------------- MLflow access
def store_reachable(uri: Optional[str], run_id: Optional[str] = None, timeout: float = 3.0) -> tuple[bool, str]:
    """Whether the tracking store answers (and holds ``run_id``); never creates a new store."""
    if not uri:
        return False, "no tracking URI is known for this run"
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):]
        if not Path(path).is_file():
            return False, f"the SQLite store {path} does not exist"
    elif uri.startswith(("http://", "https://")):
        p = urlparse(uri)
        try:
            socket.create_connection((p.hostname, p.port or (443 if p.scheme == "https" else 80)), timeout=timeout).close()
        except OSError as err:
            return False, f"the tracking server {uri} does not answer ({err})"
    elif uri.startswith("file:") or "://" not in uri:
        local = uri[len("file://"):] if uri.startswith("file://") else uri[5:] if uri.startswith("file:") else uri
        if not Path(local).exists():
            return False, f"the file store {local} does not exist"
    if run_id:
        try:
            from mlflow.tracking import MlflowClient

            MlflowClient(uri).get_run(run_id)
        except Exception as err:  # noqa: BLE001 - any store error means "not usable"
            return False, f"run {run_id} is not readable in {uri} ({type(err).__name__}: {str(err)[:200]})"
    return True, ""


def child_histories(client, parent_run_id: str, key: str = "objective") -> list[dict]:
    """Per-epoch history of ``key`` for each nested child run of the parent."""
    parent = client.get_run(parent_run_id)
    runs = client.search_runs([parent.info.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
                              max_results=5000)
    out = []
    for run in runs:
        hist = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: (m.step, m.timestamp))
        tags = run.data.tags
        out.append({"trial_id": tags.get(TRIAL_TAG, run.info.run_id), "run_id": run.info.run_id,
                    "name": run.info.run_name, "status": tags.get("fairtune.status"),
                    "steps": [m.step for m in hist], "values": [m.value for m in hist]})
    return out


def tune_histories(storage: Optional[str], name: Optional[str]) -> list[dict]:
    """Fallback: per-epoch objective from Tune's per-trial ``result.json`` files (local storage only)."""
    if not storage or not name or "://" in storage:
        return []
    root = Path(storage) / name
    out = []
    for f in sorted(root.glob("*/result.json")):
        steps, vals, tid = [], [], None
        for line in f.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "objective" in r and "epoch" in r:
                steps.append(int(r["epoch"]))
                vals.append(float(r["objective"]))
                tid = r.get("trial_id", tid)
        if steps:
            out.append({"trial_id": tid or f.parent.name, "name": f.parent.name, "status": None, "steps": steps, "values": vals})
    return out


def _download(run_id: str, uri: str, artifact_path: str, dst: Path) -> Optional[Path]:
    import mlflow.artifacts

    try:
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path, dst_path=str(dst),
                                                        tracking_uri=uri))
    except Exception:  # noqa: BLE001 - a missing artifact is simply absent
        return None


def _list_files(client, run_id: str, path: Optional[str] = None) -> list[str]:
    files = []
    for a in client.list_artifacts(run_id, path):
        files.extend(_list_files(client, run_id, a.path) if a.is_dir else [a.path])
    return files


def download_run(run_id: str, tracking_uri: str, dest: Path, log: Callable = print) -> Path:
    """Rebuild a run folder from a parent run's artifacts (everything but an earlier report)."""
    from mlflow.tracking import MlflowClient

    ok, why = store_reachable(tracking_uri, run_id)
    if not ok:
        raise FileNotFoundError(f"cannot read MLflow run {run_id}: {why}")
    client = MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    files = [f for f in _list_files(client, run_id) if not f.startswith("report/")]
    for f in files:
        _download(run_id, tracking_uri, f, dest)
    params = run.data.params
    info = {"name": run.info.run_name, "parent_run_id": run_id, "tracking_uri": tracking_uri,
            "storage": params.get("search.storage"), "selected_trial_id": params.get("selected.trial_id")}
    (dest / RUN_INFO).write_text(json.dumps(info))
    log(f"downloaded {len(files)} artifacts of run {run_id} ({run.info.run_name}) into {dest}")
    return dest


# --------------------------------------------------------------------------- loading a run folder
@dataclass
class RunData:
    run_dir: Path
    info: dict
    results: list[dict]
    trials: list[dict]
    config: Optional[dict] = None
    scores: Optional[dict] = None
    score_groups: dict = field(default_factory=dict)
    fisher: Optional[object] = None  # pandas DataFrame
    histories: list[dict] = field(default_factory=list)
    history_source: str = ""
    mlflow_ok: bool = False
    mlflow_note: str = ""
    group_names: list[str] = field(default_factory=list)
    bit_keys: list[str] = field(default_factory=list)
    selected_id: Optional[str] = None
    baseline_ids: dict = field(default_factory=dict)

    @property
    def objective(self) -> str:
        return ((self.config or {}).get("train") or {}).get("objective", "objective")

    @property
    def mode(self) -> str:
        try:
            from fairtune_ray.metrics import parse_objective

            return parse_objective(self.objective).mode
        except Exception:  # noqa: BLE001
            return "max"


def _read_json(path: Path, default):
    return json.loads(path.read_text()) if path.is_file() else default


def _bits_of(trial: dict, keys: list[str]) -> str:
    return "".join(str(int(float(trial["config"].get(k, 0)))) for k in keys)


def _find_fisher(run_dir: Path):
    import pandas as pd

    for p in sorted(run_dir.rglob("*.parquet")):
        try:
            df = pd.read_parquet(p)
        except Exception:  # noqa: BLE001
            continue
        if {"layer", "param", "numel", "disparity_mean"} <= set(df.columns):
            return df
    return None


def _mask_groups(cfg: Optional[dict], n_bits: int, log: Callable) -> list[str]:
    """Group labels from the mask space of the configured backbone (weights are not needed)."""
    if cfg:
        try:
            from fairtune_ray.config import config_from_dict
            from fairtune_ray.models import get_space
            from fairtune_ray.search.preflight import structure_model

            ec = config_from_dict(cfg, "config.yaml")
            names = list(get_space(ec.mask.space, structure_model(ec)).group_names)
            if len(names) == n_bits:
                return names
            log(f"report: the mask space has {len(names)} groups but the trials have {n_bits} bits; using bit numbers")
        except Exception as err:  # noqa: BLE001
            log(f"report: could not rebuild the mask space ({type(err).__name__}: {err}); using bit numbers")
    return [f"bit {i}" for i in range(n_bits)]


def load_run(run_dir: Path, tracking_uri: Optional[str] = None, log: Callable = print) -> RunData:
    import yaml

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    info = _read_json(run_dir / RUN_INFO, {})
    results = _read_json(run_dir / "results.json", [])
    trials = _read_json(run_dir / "trials.json", [])
    if not results and not trials:
        raise FileNotFoundError(f"{run_dir} holds neither results.json nor trials.json: not a search run folder")
    data = RunData(run_dir, info, results, trials)
    uri = tracking_uri or info.get("tracking_uri")
    parent = info.get("parent_run_id")
    data.mlflow_ok, why = store_reachable(uri, parent) if parent else (False, "no parent run id in fairtune_run.json")
    client = None
    if data.mlflow_ok:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(uri)
        data.mlflow_note = f"MLflow parent run {parent} in {uri}"
    else:
        data.mlflow_note = f"MLflow not used: {why}"
        log(f"report: {data.mlflow_note}")

    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file() and client is not None:
        with tempfile.TemporaryDirectory() as tmp:
            got = _download(parent, uri, "config.yaml", Path(tmp))
            if got:
                data.config = yaml.safe_load(got.read_text())
    elif cfg_path.is_file():
        data.config = yaml.safe_load(cfg_path.read_text())

    if (run_dir / SCORES_NAME).is_file():
        data.scores, data.score_groups = load_test_scores(run_dir / SCORES_NAME)

    data.fisher = _find_fisher(run_dir)
    if data.fisher is None and client is not None:
        parquet = [f for f in _list_files(client, parent) if f.endswith(".parquet")]
        if parquet:
            with tempfile.TemporaryDirectory() as tmp:
                for f in parquet:
                    _download(parent, uri, f, Path(tmp))
                data.fisher = _find_fisher(Path(tmp))

    if client is not None:
        try:
            data.histories = child_histories(client, parent)
            data.history_source = "MLflow child runs (metric history of `objective`)"
        except Exception as err:  # noqa: BLE001
            log(f"report: could not read the child runs ({type(err).__name__}: {err})")
    if not data.histories:
        data.histories = tune_histories(info.get("storage"), info.get("name"))
        data.history_source = "Tune result files" if data.histories else ""
    status = {str(t["trial_id"]): t.get("status") for t in trials}
    for h in data.histories:
        h["status"] = h.get("status") or status.get(str(h["trial_id"]))

    keys = sorted({k for t in trials for k in t.get("config", {}) if _BIT_KEY.match(k)}, key=lambda k: int(k[1:]))
    data.bit_keys = keys
    if keys:
        data.group_names = _mask_groups(data.config, len(keys), log)
        for t in trials:
            b = _bits_of(t, keys)
            if b == "1" * len(keys):
                data.baseline_ids.setdefault("full", str(t["trial_id"]))
            elif b == "0" * len(keys):
                data.baseline_ids.setdefault("linear", str(t["trial_id"]))
    data.selected_id = _selected_id(data, client, parent)
    return data


def _selected_id(data: RunData, client, parent) -> Optional[str]:
    ids = {str(t["trial_id"]) for t in data.trials}
    sid = data.info.get("selected_trial_id")
    if sid is None and client is not None:
        sid = client.get_run(parent).data.params.get("selected.trial_id")
    if sid is not None and str(sid) in ids:
        return str(sid)
    sel = next((r for r in data.results if "selected" in str(r.get("method", "")).lower()), None)
    if sel and data.bit_keys and ":" in str(sel.get("mask", "")):
        bits = str(sel["mask"]).split(":", 1)[1]
        for t in data.trials:
            if _bits_of(t, data.bit_keys) == bits and math.isclose(float(t["config"].get("lr", -1)), float(sel["lr"]),
                                                                   rel_tol=1e-6):
                return str(t["trial_id"])
    finite = [t for t in data.trials if _isfinite(t.get("objective"))]
    if not finite:
        return None
    pick = (max if data.mode == "max" else min)(finite, key=lambda t: float(t["objective"]))
    return str(pick["trial_id"])


def _isfinite(v) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


# --------------------------------------------------------------------------- figures
def _asha_rungs(cfg: Optional[dict]) -> tuple[Optional[int], list[float]]:
    if not cfg:
        return None, []
    epochs = int(cfg.get("train", {}).get("epochs", 0)) or None
    asha = cfg.get("search", {}).get("asha", {})
    grace, rf = float(asha.get("grace_period", 1)), float(asha.get("reduction_factor", 2))
    rungs, r = [], grace
    while epochs and r < epochs and rf > 1:
        rungs.append(r)
        r *= rf
    return epochs, rungs


def build_figures(data: RunData, log: Callable = print) -> list[dict]:
    """[{key, title, caption, png (bytes) | None, note}] in report order."""
    from fairtune_ray.reporting import plots
    from fairtune_ray.search.selection import pareto_front

    figs = []

    def add(key, title, caption, make, missing_note=None):
        png, note = None, missing_note
        if missing_note is None:
            try:
                fig = make()
                png = plots.to_png(fig)
            except Exception as err:  # noqa: BLE001 - one broken figure must not lose the report
                note = f"figure failed: {type(err).__name__}: {err}"
                log(f"report: {title}: {note}")
        figs.append({"key": key, "title": title, "caption": caption, "png": png, "note": note})

    trials = [t for t in data.trials if isinstance(t.get("metrics"), dict)]
    pts = [{"trial_id": str(t["trial_id"]), "metrics": {"group/overall/auc": t["metrics"].get("overall_auc"),
                                                          "group/worst/auc": t["metrics"].get("min_auc")}}
           for t in trials if _isfinite(t["metrics"].get("overall_auc")) and _isfinite(t["metrics"].get("min_auc"))]
    front_2d = pareto_front(pts) if pts else []
    try:
        front_groups = pareto_front([{**t, "trial_id": str(t["trial_id"])} for t in trials]) if trials else []
    except ValueError:
        front_groups = []
    add("pareto", "Pareto plot: overall AUC against worst-group AUC",
        "Left: every trial at its best validation epoch; the dashed staircase is the Pareto front of (overall, "
        "worst-group) AUC, black rings mark trials not dominated over the per-group AUC vector, the star is the "
        "selected trial, square and diamond are the all-ones (full fine-tuning) and all-zeros (linear probe) trials. "
        "Right: the retrained configurations on test with 95% bootstrap intervals.",
        lambda: plots.pareto_figure(trials, data.selected_id, data.results, front_2d, front_groups,
                                    data.baseline_ids, data.objective),
        None if (trials or data.results) else "no trials.json and no results.json")

    add("masks", "Masks of the top trials",
        "Each row is one trial (best objective first, \u2605 = selected), each column one parameter group of the "
        "mask space; a trained group is coloured by the trial's validation objective, a frozen group is grey.",
        lambda: plots.mask_heatmap_figure(trials, data.bit_keys, data.group_names, data.objective, data.mode,
                                          data.selected_id),
        None if (trials and data.bit_keys) else "the trials have no mask bits (method without a mask search)")

    add("roc", "Per-group ROC curves on test",
        "The selected configuration against full fine-tuning and the linear probe, one panel per group "
        "(seed-averaged test scores, AUC in the legend).",
        lambda: _roc(data, plots),
        None if data.scores else f"no {SCORES_NAME} in the run folder (written by searches from this version on)")

    epochs, rungs = _asha_rungs(data.config)
    add("epochs", "Validation objective per epoch",
        f"One line per trial (from {data.history_source or 'n/a'}); an X marks the last epoch of a trial that ASHA "
        "stopped early, dotted verticals are ASHA's rungs (where it compares trials).",
        lambda: plots.epochs_figure(data.histories, data.objective, data.mode, epochs, rungs, data.selected_id,
                                    data.baseline_ids),
        None if data.histories else "no per-epoch history: the MLflow store is not reachable and no Tune result "
                                    "files were found")

    if data.fisher is not None:
        add("fisher", "Fisher disparity per layer",
            "Mean disparity max_g F_n - min_g F_n of the group-normalised Fisher information per layer "
            "(numel-weighted over its parameters): long bars are layers whose importance differs most between groups, "
            "the candidates the Fisher prior freezes.",
            lambda: plots.fisher_figure(data.fisher))
    return figs


def _roc(data: RunData, plots):
    from fairtune_ray.metrics import compute_metrics, roc_points

    methods = list(data.scores)
    sel = [m for m in methods if "selected" in m.lower()]
    wanted = sel + [m for m in methods if m in ("Full fine-tuning", "Linear probe")]
    wanted = wanted or methods
    names = data.score_groups or None
    curves, aucs, counts = {}, {}, {}
    for m in wanted:
        d = data.scores[m]
        s = np.asarray(d["scores"], dtype=float).mean(axis=0)
        curves[m] = roc_points(d["labels"], s, d["groups"], names, include_overall=True)
        met = compute_metrics(d["labels"], s, d["groups"], names)
        aucs[m] = {"overall": met.get("overall_auc", float("nan")),
                   **{g: met.get(f"group/{g}/auc", float("nan")) for g in curves[m] if g != "overall"}}
        if not counts:
            y, g = np.asarray(d["labels"]), np.asarray(d["groups"])
            counts["overall"] = (len(y), int(y.sum()))
            for code in np.unique(g):
                nm = (names or {}).get(int(code), str(code))
                counts[nm] = (int((g == code).sum()), int(y[g == code].sum()))
    return plots.roc_figure(curves, aucs, counts)


# --------------------------------------------------------------------------- HTML
CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
main{max-width:1200px;margin:0 auto;padding:24px 32px 64px}
h1{font-size:26px;margin:8px 0 4px} h2{font-size:20px;margin:36px 0 10px;border-bottom:2px solid #dde2ea;padding-bottom:4px}
.sub{color:#5b6577;margin:0 0 16px} nav a{margin-right:14px;color:#2457c5;text-decoration:none}
table{border-collapse:collapse;background:#fff;font-size:14px;margin:8px 0;box-shadow:0 1px 2px #0001}
th,td{padding:6px 10px;border-bottom:1px solid #e6e9ef;text-align:left;white-space:nowrap}
th{background:#eef1f6;font-weight:600} tr.selected td{background:#fff4d6;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums} code{background:#eef1f6;padding:1px 4px;border-radius:3px}
figure{background:#fff;margin:8px 0;padding:12px;box-shadow:0 1px 2px #0001;border-radius:4px}
figure img{max-width:100%;height:auto;display:block;margin:0 auto} figcaption{color:#4a5466;font-size:13px;margin-top:8px}
.note{color:#8a5a00;background:#fff7e0;padding:8px 12px;border-radius:4px} .kv td:first-child{color:#5b6577}
details{margin-top:8px} pre{background:#fff;padding:10px;overflow:auto;font-size:12px}
"""


def _e(v) -> str:
    return html.escape(str(v))


def _num(v, fmt="{:.3f}") -> str:
    return fmt.format(float(v)) if _isfinite(v) else "n/a"


def _mask_short(mask: str) -> str:
    if ":" not in mask:
        return mask
    space, bits = mask.split(":", 1)
    return f"{space}[{bits.count('1')}/{len(bits)}]"


def _results_html(rows: list[dict]) -> str:
    from fairtune_ray.reporting.tables import results_table, with_interval

    if not rows:
        return '<p class="note">no results.json: the search did not reach retrain-and-test.</p>'
    head = ("<tr><th>method</th><th>mask</th><th>lr</th><th>trainable params</th><th>test AUC [95% CI]</th>"
            "<th>worst-group AUC</th><th>AUC gap</th><th>eq-odds diff</th><th>val objective</th><th>seeds</th></tr>")
    body = []
    for r in rows:
        cls = ' class="selected"' if "selected" in str(r.get("method", "")).lower() else ""
        mask = str(r.get("mask", ""))
        bits = f'<br><code style="font-size:11px">{_e(mask.split(":", 1)[1])}</code>' if ":" in mask else ""
        tp = r.get("trainable_params")
        tp = f"{int(float(tp)):,}" if _isfinite(tp) else "n/a"
        cells = [_e(r.get("method")), f"{_e(_mask_short(mask))}{bits}"]
        nums = [_num(r.get("lr"), "{:.2e}"), tp] + [_e(with_interval(r, m)) for m in
                                                   ("overall_auc", "min_auc", "auc_gap", "eodds_diff")]
        nums += [_num(r.get("val_objective")), _e(r.get("seeds", ""))]
        body.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in cells)
                    + "".join(f"<td class=num>{c}</td>" for c in nums) + "</tr>")
    text = results_table(rows)
    return (f"<table>{head}{''.join(body)}</table>"
            "<p class=sub>Point estimates are seed-averaged test metrics; intervals are stratified-bootstrap 95% "
            "intervals over test images. Higher AUC is better; lower gap and equalised-odds difference are better.</p>"
            f"<details><summary>plain-text table</summary><pre>{_e(text)}</pre></details>")


def _trials_html(data: RunData, top: int = 12) -> str:
    trials = [t for t in data.trials if _isfinite(t.get("objective"))]
    trials.sort(key=lambda t: float(t["objective"]), reverse=data.mode == "max")
    rows = []
    for t in trials[:top]:
        cls = ' class="selected"' if str(t["trial_id"]) == data.selected_id else ""
        m = t.get("metrics", {})
        bits = _bits_of(t, data.bit_keys) if data.bit_keys else ""
        rows.append(f"<tr{cls}><td>{_e(t['trial_id'])}</td><td><code>{_e(bits) or '-'}</code></td>"
                    f"<td class=num>{_num(t['config'].get('lr'), '{:.2e}')}</td><td class=num>{_num(t['objective'])}</td>"
                    f"<td class=num>{_num(m.get('overall_auc'))}</td><td class=num>{_num(m.get('min_auc'))}</td>"
                    f"<td class=num>{_e(t.get('epochs', ''))}</td><td>{_e(t.get('status', ''))}</td></tr>")
    return ("<details><summary>top trials on validation</summary><table><tr><th>trial</th><th>mask bits</th>"
            f"<th>lr</th><th>val {_e(data.objective)}</th><th>val AUC</th><th>val worst-group AUC</th><th>epochs</th>"
            f"<th>status</th></tr>{''.join(rows)}</table></details>")


def summary_text(data: RunData, markdown: bool = True) -> str:
    """A few sentences on the outcome: the parent run's description and the report's opening."""
    trials = data.trials
    n = len(trials)
    stopped = sum(1 for t in trials if t.get("status") == "stopped_early")
    failed = sum(1 for t in trials if t.get("status") == "failed")
    c = (lambda s: f"`{s}`") if markdown else (lambda s: s)
    b = (lambda s: f"**{s}**") if markdown else (lambda s: s)
    better = "higher" if data.mode == "max" else "lower"
    sel_strategy = ((data.config or {}).get("search") or {}).get("selection", "best")
    parts = [f"{b(str(n) + ' trials')} ({stopped} stopped early by ASHA, {failed} failed), searching for the best "
             f"validation {c(data.objective)} ({better} is better; selection: {sel_strategy})."]
    sel = next((r for r in data.results if "selected" in str(r.get("method", "")).lower()), None)
    if sel:
        from fairtune_ray.reporting.tables import with_interval

        tp = f"{int(float(sel['trainable_params'])):,}" if _isfinite(sel.get("trainable_params")) else "n/a"
        parts.append(f"Selected {c(_mask_short(str(sel.get('mask'))))} ({c(str(sel.get('mask')))}, lr "
                     f"{_num(sel.get('lr'), '{:.2e}')}, {tp} trainable parameters): test worst-group AUC "
                     f"{with_interval(sel, 'min_auc')}, overall AUC {with_interval(sel, 'overall_auc')}, "
                     f"AUC gap {with_interval(sel, 'auc_gap')}.")
        for r in data.results:
            if r is sel or not _isfinite(r.get("test/min_auc")) or not _isfinite(sel.get("test/min_auc")):
                continue
            d = float(sel["test/min_auc"]) - float(r["test/min_auc"])
            parts.append(f"vs {r['method']}: worst-group AUC {with_interval(r, 'min_auc')} "
                         f"({'+' if d >= 0 else ''}{d:.3f} for the selection).")
    return " ".join(parts)


def render_html(data: RunData, figs: list[dict], mlflow_line: str) -> str:
    name = data.info.get("name") or data.run_dir.name
    nav = " ".join(f'<a href="#{f["key"]}">{_e(f["title"].split(":")[0])}</a>' for f in figs)
    sections = [f"<section id=summary><h2>Summary</h2><p>{_e(summary_text(data, markdown=False))}</p>"
                f"<table class=kv><tr><td>run folder</td><td><code>{_e(data.run_dir.resolve())}</code></td></tr>"
                f"<tr><td>MLflow</td><td>{_e(mlflow_line)}</td></tr></table></section>",
                f"<section id=results><h2>Results on test</h2>{_results_html(data.results)}{_trials_html(data)}</section>"]
    for f in figs:
        if f["png"]:
            b64 = base64.b64encode(f["png"]).decode("ascii")
            body = (f'<figure><img alt="{_e(f["title"])}" src="data:image/png;base64,{b64}">'
                    f"<figcaption>{_e(f['caption'])}</figcaption></figure>")
        else:
            body = f'<p class="note">{_e(f["note"])}</p>'
        sections.append(f"<section id={f['key']}><h2>{_e(f['title'])}</h2>{body}</section>")
    return (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>FairTune search report: {_e(name)}</title>"
            f"<meta name=viewport content='width=device-width, initial-scale=1'><style>{CSS}</style></head><body><main>"
            f"<h1>FairTune search report: {_e(name)}</h1><p class=sub>objective <code>{_e(data.objective)}</code>; "
            f"{len(data.trials)} trials; {len(data.results)} retrained configurations</p>"
            f"<nav><a href='#summary'>Summary</a> <a href='#results'>Results</a> {nav}</nav>"
            f"{''.join(sections)}</main></body></html>")


# --------------------------------------------------------------------------- entry point
def write_report(run_dir, tracking_uri: Optional[str] = None, log: Callable = print) -> Path:
    """Write ``report.html`` (figures embedded) and ``figures/*.png`` into the run folder; log both to
    the parent MLflow run and refresh its description when the store is reachable."""
    data = load_run(Path(run_dir), tracking_uri, log=log)
    figs = build_figures(data, log=log)
    fig_dir = data.run_dir / FIGURE_DIR
    fig_dir.mkdir(exist_ok=True)
    paths = []
    for i, f in enumerate(figs, 1):
        if f["png"]:
            p = fig_dir / f"{i:02d}_{f['key']}.png"
            p.write_bytes(f["png"])
            paths.append(p)
    parent = data.info.get("parent_run_id")
    uri = tracking_uri or data.info.get("tracking_uri")
    line = (f"report and figures logged to parent run {parent} (artifacts report/) in {uri}" if data.mlflow_ok
            else data.mlflow_note)
    out = data.run_dir / REPORT_NAME
    out.write_text(render_html(data, figs, line), encoding="utf-8")
    if data.mlflow_ok:
        try:
            from mlflow.tracking import MlflowClient

            client = MlflowClient(uri)
            for p in paths:
                client.log_artifact(parent, str(p), "report/figures")
            client.log_artifact(parent, str(out), "report")
            from fairtune_ray.reporting.tables import results_table

            note = summary_text(data) + "\n\nFull report: artifact `report/report.html`."
            if data.results:
                note += "\n\n" + results_table(data.results)
            client.set_tag(parent, "mlflow.note.content", note)
            log(f"report: logged {len(paths)} figures and {REPORT_NAME} to MLflow run {parent}")
        except Exception as err:  # noqa: BLE001
            log(f"report: MLflow logging failed ({type(err).__name__}: {err}); the HTML report is still at {out}")
    return out


def report_target(target: str, tracking_uri: Optional[str] = None, out: Optional[str] = None,
                  log: Callable = print) -> Path:
    """A run folder, or an MLflow parent run id whose artifacts are downloaded first."""
    p = Path(target)
    if p.is_dir():
        return write_report(p, tracking_uri, log=log)
    if not re.fullmatch(r"[0-9a-fA-F]{32}", target):
        raise FileNotFoundError(f"'{target}' is neither a run folder nor an MLflow run id (32 hex characters)")
    from fairtune_ray.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    dest = Path(out) if out else Path("runs") / f"mlflow-{target[:8]}"
    download_run(target, uri, dest, log=log)
    return write_report(dest, uri, log=log)


__all__ = ["write_report", "report_target", "download_run", "load_run", "save_test_scores", "load_test_scores",
           "summary_text", "store_reachable"]

