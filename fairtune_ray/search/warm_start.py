"""Warm start: an earlier study's trials, given to TPE as points it has already evaluated.

``search.warm_start`` names an earlier study by its run folder (``runs/<name>``: ``trials.json`` and
``config.yaml``) or by its MLflow parent run id (read from this study's tracking store: the parent's
``trials.json`` artifact, else its child runs). Its trials are comparable only within one search space
and one objective, so prepare checks, before Ray starts, that it searched the same backbone, mask space
and bit count, method and dimensions, with the same ``train.objective`` and ``search.tune_value``; any
difference is a ConfigError naming both sides. Its data and sensitive attribute may differ (a second
attribute or dataset is the use case); the log says where the values come from.

Each completed trial becomes a (config, value) pair: the value is what TPE saw in that study
(``search_value``: the best-so-far objective, penalised when a constraint was broken), else its
``objective``. Failed trials, trials without a finite value, and configs outside this study's space
(an lr out of range, a category this study does not offer) are skipped and counted, never clipped:
a clipped config would carry a value it never earned. Prepare writes the points to
``runs/<name>/warm_start.json``; the tune stage hands them to ``tuner.make_searcher``.
"""
from __future__ import annotations

import json
import math
import re
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from ray.tune.search.sample import Categorical, Domain, Float, Integer

from fairtune_ray.config import ConfigError, ExperimentConfig
from fairtune_ray.data.groups import attribute_label
from fairtune_ray.metrics import parse_objective
from fairtune_ray.search.run_folder import CONFIG_FILE, STAGES_DIR, TRIALS_FILE, read_json, write_json
from fairtune_ray.search.space import bit_keys, build_param_space, uses_mask_bits
from fairtune_ray.tracking.mlflow_runs import PARENT_TAG, ROLE_TAG, TRIAL_TAG

WARM_FILE = "warm_start.json"  # in the run folder: the points prepare checked, read by the tune stage
POINTS_TAG = "fairtune.warm_start.points"
SKIPPED_TAG = "fairtune.warm_start.skipped"
SOURCE_TAG = "fairtune.warm_start.source"
WHERE = "search.warm_start"
MISMATCH = ("search.warm_start: {source} was searched {what} {theirs}, this study uses {ours}; an earlier study's "
            "trials warm-start TPE only within the same search space and objective")
NOT_FOUND = ("search.warm_start: '{value}' is neither a run folder with {trials} (e.g. runs/<name>, or <name> under "
             "search.storage) nor an MLflow run id in {uri}")
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_MASK_KEY = re.compile(r"^m\d+$")


@dataclass
class WarmSource:
    """What an earlier study left: its raw config (not re-validated: the schema may have moved on since)
    and its trial records (``config``, ``objective``, ``search_value``, ``status``)."""

    label: str
    config: dict
    trials: list[dict]
    n_bits: Optional[int] = None

    def get(self, dotted: str, default: Any = None) -> Any:
        node: Any = self.config
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node


@dataclass
class WarmStart:
    """The evaluated points handed to TPE, in this study's space, with what was left out and why."""

    source: str
    points: list[dict]
    rewards: list[float]
    skipped: dict[str, int] = field(default_factory=dict)
    provenance: str = ""

    def summary(self) -> str:
        text = f"warm start: {len(self.points)} evaluated points from {self.source} ({self.provenance}) given to TPE"
        if self.skipped:
            reasons = ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items()))
            text += f"; skipped {sum(self.skipped.values())}: {reasons}"
        return text


def load_warm_start(cfg: ExperimentConfig, n_bits: int, tracking_uri: str, run_dir: Optional[Path] = None) -> Optional[WarmStart]:
    """The checked warm-start points of ``search.warm_start``, or None when it is not set. Raises ConfigError
    when the earlier study cannot be read or searched another space or objective."""
    value = cfg.search.warm_start
    if not value:
        return None
    source = read_source(value, cfg.search.storage, tracking_uri, run_dir)
    check_compatible(cfg, n_bits, source)
    return map_points(cfg, n_bits, source)


def read_source(value: str, storage: str, tracking_uri: str, run_dir: Optional[Path] = None) -> WarmSource:
    """A run folder (as given, or by name under ``storage``) or an MLflow parent run id."""
    for path in (Path(value), Path(storage) / value):
        if path.is_dir():
            if run_dir is not None and path.resolve() == Path(run_dir).resolve():
                raise ConfigError(f"{WHERE}: {value} is this study's own run folder; name an earlier study")
            return read_folder(path, value)
    if _RUN_ID.match(value):
        return read_mlflow(value, tracking_uri)
    raise ConfigError(NOT_FOUND.format(value=value, trials=TRIALS_FILE, uri=tracking_uri))


def read_folder(path: Path, label: str) -> WarmSource:
    config, trials = path / CONFIG_FILE, path / TRIALS_FILE
    for needed in (config, trials):
        if not needed.is_file():
            raise ConfigError(f"{WHERE}: {label} has no {needed.name} (its tune stage did not finish?)")
    prepared = read_json(path / STAGES_DIR / "prepare.json", {}) or {}
    n_bits = prepared.get("n_bits")
    return WarmSource(label, yaml.safe_load(config.read_text()) or {}, json.loads(trials.read_text()),
                      int(n_bits) if n_bits is not None else None)


def read_mlflow(run_id: str, uri: str) -> WarmSource:
    """The parent run's config.yaml and trials.json artifacts; without the latter, its child runs."""
    client = MlflowClient(uri)
    label = f"MLflow run {run_id}"
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ConfigError(f"{WHERE}: no MLflow run {run_id} in {uri}") from None
    config = _artifact(client, run_id, CONFIG_FILE)
    if config is None:
        raise ConfigError(f"{WHERE}: {label} has no {CONFIG_FILE} artifact; is it a search's parent run?")
    config = yaml.safe_load(config) or {}
    trials = _artifact(client, run_id, TRIALS_FILE)
    n_bits = run.data.params.get("mask.n_bits", "")
    source = WarmSource(label, config, [], int(n_bits) if n_bits.isdigit() else None)
    source.trials = json.loads(trials) if trials is not None else trials_from_child_runs(client, run, source)
    return source


def _artifact(client: MlflowClient, run_id: str, name: str) -> Optional[str]:
    if name not in {a.path for a in client.list_artifacts(run_id)}:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        return Path(client.download_artifacts(run_id, name, tmp)).read_text()


def trials_from_child_runs(client: MlflowClient, parent, source: WarmSource) -> list[dict]:
    """Trial records rebuilt from the nested child runs: params (mask, lr, Fisher options) and the best
    epoch's objective (what TPE saw, less a constraint's penalty, which the runs do not record). A run
    records lambda 0 for EWC off and rank 0 without factorisation: those dimensions had no effect there
    and take a neutral value of this study's space (``fit_value``)."""
    runs = client.search_runs([parent.info.experiment_id], max_results=5000,
                              filter_string=f"tags.`{PARENT_TAG}` = '{parent.info.run_id}' and tags.`{ROLE_TAG}` = 'trial'")
    fisher = source.get("search.method", "fairtune") in ("fisher", "both")
    key = "objective_lcb" if source.get("search.tune_value") == "lcb" else "objective"
    try:
        best = max if parse_objective(source.get("train.objective", "min_auc")).mode == "max" else min
    except ValueError as err:
        raise ConfigError(f"{WHERE}: {source.label}: train.objective: {err}") from None
    records = []
    for run in runs:
        params = run.data.params
        config: dict = {"lr": float(params.get("lr", "nan"))}
        bits = params.get("mask", "").partition(":")[2]
        config.update({k: int(b) for k, b in zip(bit_keys(len(bits)), bits)})
        if fisher:
            lam, factorise = float(params.get("ewc_lambda", 0)), params.get("factorise", "none")
            config.update({"ewc_on": int(lam > 0), "ewc_lambda": lam if lam > 0 else None,
                           "gamma": float(params.get("gamma", "nan"))})
            if source.get("fisher.factorise"):
                config.update({"factorise": "" if factorise == "none" else factorise,
                               "rank": int(params["rank"]) if factorise != "none" else None})
        values = [m.value for m in client.get_metric_history(run.info.run_id, key) if math.isfinite(m.value)]
        records.append({"trial_id": run.data.tags.get(TRIAL_TAG, run.info.run_id), "config": config,
                        "objective": best(values) if values else math.nan,
                        "status": run.data.tags.get("fairtune.status", "unknown")})
    return records


def check_compatible(cfg: ExperimentConfig, n_bits: int, source: WarmSource) -> None:
    """Same backbone, method, mask space and bits, dimensions, objective and tune value, or a ConfigError."""
    def differ(what: str, theirs, ours) -> None:
        if theirs != ours:
            raise ConfigError(MISMATCH.format(source=source.label, what=what, theirs=theirs, ours=ours))

    differ("on backbone", source.get("backbone.name", "micro"), cfg.backbone.name)
    if cfg.backbone.name == "micro":
        theirs = source.get("backbone.micro", {}) or {}
        for key, ours in cfg.backbone.micro.model_dump().items():
            differ(f"with backbone.micro.{key}", theirs.get(key, ours), ours)
    differ("with search.method", source.get("search.method", "fairtune"), cfg.search.method)
    if uses_mask_bits(cfg):
        differ("on mask space", source.get("mask.space", "attn_mlp_norm"), cfg.mask.space)
        differ("with a mask of", f"{_bits_of(source)} bits", f"{n_bits} bits")
    differ("for objective", _compact(source.get("train.objective", "")), _compact(cfg.train.objective))
    differ("with search.tune_value", source.get("search.tune_value", "point"), cfg.search.tune_value)
    ours = set(build_param_space(cfg, n_bits))
    theirs = set().union(*(set(t.get("config", {})) for t in source.trials)) if source.trials else ours
    if theirs != ours:
        raise ConfigError(f"{WHERE}: {source.label} searched other dimensions than this study: "
                          f"only there {_names(theirs - ours)}, only here {_names(ours - theirs)}")


def _bits_of(source: WarmSource) -> int:
    if source.n_bits is not None:
        return source.n_bits
    return max((sum(1 for k in t.get("config", {}) if _MASK_KEY.match(k)) for t in source.trials), default=0)


def _compact(text: str) -> str:
    return " ".join(str(text).split())


def _names(keys: set) -> str:
    """Sorted names, a run of mask bits shown as one entry (e.g. ``m18..m23``)."""
    bits = sorted(k for k in keys if _MASK_KEY.match(k))
    rest = sorted(k for k in keys if not _MASK_KEY.match(k))
    shown = ([bits[0]] if len(bits) == 1 else [f"{bits[0]}..{bits[-1]}"] if bits else []) + rest
    return "[" + ", ".join(shown) + "]" if shown else "[]"


def map_points(cfg: ExperimentConfig, n_bits: int, source: WarmSource) -> WarmStart:
    """Each usable trial as a point of this study's space and the value TPE saw for it."""
    space = build_param_space(cfg, n_bits)
    points, rewards, skipped = [], [], Counter()
    for trial in source.trials:
        value = _value_seen(trial)
        if trial.get("status") == "failed":
            skipped["failed trials"] += 1
        elif value is None:
            skipped["without a finite value"] += 1
        else:
            point, why = fit_point(trial.get("config", {}), space)
            if point is None:
                skipped[why] += 1
                continue
            points.append(point)
            rewards.append(value)
    return WarmStart(source.label, points, rewards, dict(skipped), provenance(cfg, source))


def _value_seen(trial: dict) -> Optional[float]:
    """What TPE saw in the earlier study (search_value), or its objective in records that predate it."""
    raw = trial.get("search_value") if "search_value" in trial else trial.get("objective")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def fit_point(config: dict, space: dict) -> tuple[Optional[dict], str]:
    """(the config in this space's values, "") or (None, why it does not fit)."""
    point = {}
    for key, domain in space.items():
        if not isinstance(domain, Domain):
            continue
        value = fit_value(config.get(key), domain)
        if value is None:
            return None, _why_not(key, domain)
        point[key] = value
    return point, ""


def fit_value(value, domain: Domain):
    """``value`` as ``domain`` holds it, or None outside it. A missing value (a dimension that had no
    effect in that trial) takes a neutral one: the first category, or the range's (geometric) middle."""
    if isinstance(domain, Categorical):
        if value is None:
            return domain.categories[0]
        return next((c for c in domain.categories if _same(c, value)), None)
    if isinstance(domain, (Float, Integer)):
        lo, hi = domain.lower, domain.upper
        if value is None:
            mid = math.sqrt(lo * hi) if lo > 0 else (lo + hi) / 2
            return int(mid) if isinstance(domain, Integer) else mid
        if not _is_number(value) or not math.isfinite(float(value)):
            return None
        v, tol = float(value), 1e-9 * max(abs(lo), abs(hi))
        top = hi - 1 if isinstance(domain, Integer) else hi  # Ray's integer upper bound is exclusive
        if not lo - tol <= v <= top + tol:
            return None
        return int(round(v)) if isinstance(domain, Integer) else min(max(v, lo), hi)
    return value


def _same(category, value) -> bool:
    if _is_number(category) and _is_number(value):
        return float(category) == float(value)
    return category == value


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _why_not(key: str, domain: Domain) -> str:
    if isinstance(domain, Categorical):
        return f"with {key} not among this study's choices {list(domain.categories)}"
    return f"with {key} outside [{domain.lower:g}, {domain.upper:g}]"


def provenance(cfg: ExperimentConfig, source: WarmSource) -> str:
    """Where the values were measured, beside this study's data and attribute."""
    theirs = _data_label(source.get("data.source", "synthetic"), source.get("data.synthetic.seed", 0),
                         source.get("data.sensitive_attribute", "skin_tone"))
    ours = _data_label(cfg.data.source, cfg.data.synthetic.seed, cfg.data.sensitive_attribute)
    text = f"objective {cfg.train.objective} measured on {theirs}"
    return text + (" as here" if theirs == ours else f"; this study: {ours}")


def _data_label(data_source: str, seed, attribute) -> str:
    data = f"synthetic data (seed {seed})" if data_source == "synthetic" else f"data {data_source}"
    return f"{data}, attribute {attribute_label(attribute)}"


def record_warm_start(warm: Optional[WarmStart], run_dir: Path, client: MlflowClient, parent: str,
                      log: Callable = print) -> None:
    """warm_start.json in the run folder (for the tune stage), tags on the parent run, one log line.
    The param ``search.warm_start`` is on the parent run already, with the rest of the config."""
    if warm is None:
        return
    write_json(Path(run_dir) / WARM_FILE, asdict(warm))
    client.set_tag(parent, POINTS_TAG, str(len(warm.points)))
    client.set_tag(parent, SKIPPED_TAG, str(sum(warm.skipped.values())))
    client.set_tag(parent, SOURCE_TAG, f"{warm.source}: {warm.provenance}"[:5000])
    log(warm.summary())


def read_warm_start(run_dir: Path) -> Optional[WarmStart]:
    record = read_json(Path(run_dir) / WARM_FILE)
    return WarmStart(**record) if record else None


def searcher_warm_args(cfg: ExperimentConfig, run_dir: Path) -> dict:
    """``evaluated_points`` / ``evaluated_rewards`` for ``build_tuner``: empty without a warm start."""
    warm = read_warm_start(run_dir) if cfg.search.warm_start else None
    if warm is None:
        return {}
    return {"evaluated_points": warm.points, "evaluated_rewards": warm.rewards}
