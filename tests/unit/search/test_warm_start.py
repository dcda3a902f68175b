"""search.warm_start: an earlier study's trials reach HyperOpt as evaluated points, next to (not instead
of) this study's own points to evaluate; an incompatible study is a ConfigError naming the difference."""
import json
import math

import pytest
import yaml
from hyperopt.base import JOB_STATE_DONE, JOB_STATE_NEW

from fairtune_ray.config import ConfigError
from fairtune_ray.search.space import baseline_points, bit_keys, build_param_space, initial_points, matches_point
from fairtune_ray.search.tune_value import TUNE_METRIC
from fairtune_ray.search.tuner import make_searcher
from fairtune_ray.search.warm_start import (
    POINTS_TAG, WARM_FILE, fit_point, load_warm_start, record_warm_start, searcher_warm_args,
)

N_BITS = 18  # the tiny config's micro ViT (6 blocks) in attn_mlp_norm
N_GOOD = 5


def _config(i: int, lr: float = 1e-4) -> dict:
    return {**{k: (i >> (j % 5)) & 1 for j, k in enumerate(bit_keys(N_BITS))}, "lr": lr}


def _trials() -> list[dict]:
    good = [{"trial_id": f"t{i}", "config": _config(i, 1e-4 * (i + 1)), "objective": 0.5 + 0.05 * i,
             "search_value": 0.4 + 0.05 * i, "status": "completed" if i % 2 else "stopped_early"}
            for i in range(N_GOOD)]
    bad = [{"trial_id": "failed", "config": _config(7), "objective": 0.9, "search_value": 0.9, "status": "failed"},
           {"trial_id": "nan", "config": _config(8), "objective": math.nan, "search_value": math.nan, "status": "completed"},
           {"trial_id": "lr", "config": _config(9, lr=5e-2), "objective": 0.7, "search_value": 0.7, "status": "completed"},
           # a record from before search_value existed: its objective is what TPE saw
           {"trial_id": "old", "config": _config(10), "objective": 0.66, "status": "completed"}]
    return good + bad


def write_run_folder(path, cfg, n_bits: int = N_BITS, trials=None, **changes):
    """A run folder as a finished study leaves it (config.yaml, trials.json, stages/prepare.json)."""
    config = cfg.model_dump()
    for dotted, value in changes.items():
        node = config
        *parents, last = dotted.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    (path / "stages").mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    (path / "trials.json").write_text(json.dumps(_trials() if trials is None else trials))
    (path / "stages" / "prepare.json").write_text(json.dumps({"n_bits": n_bits, "space_name": config["mask"]["space"]}))
    return path


def _warm_cfg(cfg, source):
    cfg = cfg.model_copy(deep=True)
    cfg.search.warm_start = str(source)
    return cfg


class FakeClient:
    def __init__(self):
        self.tags = {}

    def set_tag(self, run_id, key, value):
        self.tags[key] = value


def _searcher(cfg, **warm):
    cfg = cfg.model_copy(deep=True)
    cfg.search.max_concurrent = 100  # suggest() without completing trials in between
    searcher = make_searcher(cfg, initial_points(cfg, N_BITS), **warm)
    searcher.set_search_properties(TUNE_METRIC, "max", build_param_space(cfg, N_BITS))
    return searcher


def test_run_folder_points_reach_hyperopt_as_evaluated_trials(tiny_cfg, tmp_path):
    source = write_run_folder(tmp_path / "runs" / "a", tiny_cfg, **{"data.sensitive_attribute": "sex"})
    cfg = _warm_cfg(tiny_cfg, source)
    warm = load_warm_start(cfg, N_BITS, "sqlite:///unused.db", tmp_path / "runs" / "b")
    assert len(warm.points) == len(warm.rewards) == N_GOOD + 1
    assert warm.rewards[:N_GOOD] == pytest.approx([0.4 + 0.05 * i for i in range(N_GOOD)])  # search_value, not objective
    assert warm.rewards[-1] == pytest.approx(0.66)
    assert warm.skipped == {"failed trials": 1, "without a finite value": 1, "with lr outside [1e-05, 0.001]": 1}
    assert "attribute sex" in warm.provenance and "this study: synthetic data (seed 0), attribute skin_tone" in warm.provenance
    assert "skipped 3" in warm.summary()

    # prepare records the points; the tune stage hands them to the searcher
    run_dir = tmp_path / "runs" / "b"
    run_dir.mkdir(parents=True)
    client = FakeClient()
    record_warm_start(warm, run_dir, client, "parent", log=lambda *_: None)
    assert (run_dir / WARM_FILE).is_file() and client.tags[POINTS_TAG] == str(N_GOOD + 1)
    searcher = _searcher(cfg, **searcher_warm_args(cfg, run_dir))

    trials = searcher.searcher._hpopt_trials
    done = [t for t in trials.trials if t["state"] == JOB_STATE_DONE]
    assert len(done) == N_GOOD + 1
    assert [t["result"]["loss"] for t in done] == pytest.approx([-r for r in warm.rewards])  # hyperopt minimises
    assert [t["misc"]["vals"]["lr"][0] for t in done] == pytest.approx([p["lr"] for p in warm.points])
    assert [t["misc"]["vals"]["m00"][0] for t in done] == [p["m00"] for p in warm.points]
    # this study's own points are still to be evaluated, and run first: full fine-tuning, then the linear probe
    own = initial_points(cfg, N_BITS)
    assert sum(t["state"] == JOB_STATE_NEW for t in trials.trials) == len(own)
    first = [searcher.suggest(f"t{i}") for i in range(len(own) + 1)]
    for proposal, point in zip(first, baseline_points(cfg, N_BITS)):
        assert matches_point(proposal, point)
    assert not any(matches_point(first[-1], p) for p in own)  # then TPE, which has the warm history
    assert len([t for t in trials.trials if t["state"] == JOB_STATE_DONE]) == N_GOOD + 1


def test_no_warm_start_proposes_what_plain_hyperopt_does(tiny_cfg, tmp_path):
    from ray.tune.search.hyperopt import HyperOptSearch

    plain = HyperOptSearch(points_to_evaluate=initial_points(tiny_cfg, N_BITS), random_state_seed=tiny_cfg.search.seed,
                           n_initial_points=tiny_cfg.search.n_initial_points)
    plain.set_search_properties(TUNE_METRIC, "max", build_param_space(tiny_cfg, N_BITS))
    assert searcher_warm_args(tiny_cfg, tmp_path) == {}
    ours = _searcher(tiny_cfg, **searcher_warm_args(tiny_cfg, tmp_path))
    assert [ours.suggest(f"t{i}") for i in range(5)] == [plain.suggest(f"t{i}") for i in range(5)]


def test_warm_history_changes_what_tpe_proposes(tiny_cfg, tmp_path):
    source = write_run_folder(tmp_path / "a", tiny_cfg)
    warm = load_warm_start(_warm_cfg(tiny_cfg, source), N_BITS, "sqlite:///unused.db")
    cold = _searcher(tiny_cfg)
    hot = _searcher(tiny_cfg, evaluated_points=warm.points, evaluated_rewards=warm.rewards)
    n_own = len(initial_points(tiny_cfg, N_BITS))
    assert [cold.suggest(f"t{i}") for i in range(n_own + 3)][n_own:] != [hot.suggest(f"t{i}") for i in range(n_own + 3)][n_own:]


def test_tpe_learns_from_the_warm_rewards(tiny_cfg):
    """Rewards reach TPE with the right sign: history where m00 = 1 scores high pulls proposals to m00 = 1."""
    import random

    rng = random.Random(0)
    points = [{**{k: rng.randint(0, 1) for k in bit_keys(N_BITS)}, "lr": 10 ** rng.uniform(-5, -3)} for _ in range(30)]
    rewards = [0.3 * p["m00"] + 0.05 * rng.random() for p in points]
    cfg = tiny_cfg.model_copy(deep=True)
    cfg.search.n_initial_points = 6
    n_own = len(initial_points(cfg, N_BITS))
    hot = _searcher(cfg, evaluated_points=points, evaluated_rewards=rewards)
    proposals = [hot.suggest(f"t{i}") for i in range(n_own + 12)][n_own:]
    assert sum(p["m00"] for p in proposals) >= 10


@pytest.mark.parametrize("changes, n_bits, words", [
    ({"mask.space": "block"}, N_BITS, ["mask space block", "attn_mlp_norm"]),
    ({}, 12, ["12 bits", f"{N_BITS} bits"]),
    ({"backbone.name": "vit_small_patch16_224"}, N_BITS, ["backbone vit_small_patch16_224", "this study uses micro"]),
    ({"backbone.micro.width": 128}, N_BITS, ["backbone.micro.width 128", "uses 96"]),
    ({"train.objective": "auc_gap"}, N_BITS, ["objective auc_gap", "uses min_auc"]),
    ({"search.method": "fisher"}, N_BITS, ["search.method fisher", "uses fairtune"]),
    ({"search.tune_value": "lcb"}, N_BITS, ["search.tune_value lcb", "uses point"]),
])
def test_incompatible_study_is_a_config_error_naming_the_difference(tiny_cfg, tmp_path, changes, n_bits, words):
    source = write_run_folder(tmp_path / "runs" / "a", tiny_cfg, n_bits=n_bits, **changes)
    with pytest.raises(ConfigError) as err:
        load_warm_start(_warm_cfg(tiny_cfg, source), N_BITS, "sqlite:///unused.db")
    assert str(err.value).startswith(f"search.warm_start: {source} was searched")
    for word in words:
        assert word in str(err.value)


def test_other_dimensions_are_named(tiny_cfg, tmp_path):
    trials = [dict(t, config={**t["config"], "rank": 4}) for t in _trials()]
    source = write_run_folder(tmp_path / "a", tiny_cfg, trials=trials)
    with pytest.raises(ConfigError, match=r"other dimensions than this study: only there \[rank\], only here \[\]"):
        load_warm_start(_warm_cfg(tiny_cfg, source), N_BITS, "sqlite:///unused.db")


def test_unknown_source_and_own_folder(tiny_cfg, tmp_path):
    with pytest.raises(ConfigError, match="neither a run folder with trials.json"):
        load_warm_start(_warm_cfg(tiny_cfg, tmp_path / "nowhere"), N_BITS, "sqlite:///unused.db")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="has no config.yaml"):
        load_warm_start(_warm_cfg(tiny_cfg, tmp_path / "empty"), N_BITS, "sqlite:///unused.db")
    own = write_run_folder(tmp_path / "own", tiny_cfg)
    with pytest.raises(ConfigError, match="this study's own run folder"):
        load_warm_start(_warm_cfg(tiny_cfg, own), N_BITS, "sqlite:///unused.db", own)


def test_values_outside_this_space_are_skipped_not_clipped(tiny_cfg):
    cfg = tiny_cfg.model_copy(deep=True)
    cfg.search.method = "both"
    space = build_param_space(cfg, N_BITS)
    base = {**_config(3), "ewc_on": 1, "ewc_lambda": space["ewc_lambda"].lower * 2, "gamma": cfg.fisher.gamma[0]}
    point, why = fit_point(base, space)
    assert why == "" and point["gamma"] == cfg.fisher.gamma[0] and point["m01"] == base["m01"]
    assert fit_point({**base, "m00": 2}, space) == (None, "with m00 not among this study's choices [0, 1]")
    assert fit_point({**base, "gamma": 123.0}, space)[1].startswith("with gamma not among")
    assert fit_point({**base, "lr": cfg.search.lr_max * 1.5}, space)[1].startswith("with lr outside")
    # an inactive dimension recorded without a value (EWC off) takes a neutral value of the range
    lam = fit_point({**base, "ewc_on": 0, "ewc_lambda": None}, space)[0]["ewc_lambda"]
    assert space["ewc_lambda"].lower < lam < space["ewc_lambda"].upper


def test_mlflow_parent_run_source_with_and_without_trials_artifact(tiny_cfg, tmp_path):
    from mlflow.tracking import MlflowClient

    from fairtune_ray.tracking import ChildRunLogger, start_parent_run

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    config_text = yaml.safe_dump(tiny_cfg.model_dump())
    client = MlflowClient(uri)
    parent = start_parent_run(uri, "warm", "a", params={"mask.n_bits": N_BITS})
    client.log_text(parent, config_text, "config.yaml")
    for i, value in enumerate([0.6, 0.7]):  # child runs as trials leave them, no trials.json artifact yet
        child = ChildRunLogger(uri, parent, f"t{i}", f"t{i}", {"mask": "attn_mlp_norm:" + "01" * 9, "lr": 1e-4 * (i + 1)})
        child.log_epoch(1, {"objective": value - 0.1})
        child.log_epoch(2, {"objective": value})
        child.finish("completed")
    warm = load_warm_start(_warm_cfg(tiny_cfg, parent), N_BITS, uri)
    assert warm.source == f"MLflow run {parent}" and sorted(warm.rewards) == pytest.approx([0.6, 0.7])
    assert all(p["m01"] == 1 and p["m00"] == 0 for p in warm.points)

    client.log_text(parent, json.dumps(_trials()), "trials.json")  # the tune stage logs it
    warm = load_warm_start(_warm_cfg(tiny_cfg, parent), N_BITS, uri)
    assert len(warm.points) == N_GOOD + 1
    with pytest.raises(ConfigError, match="no MLflow run"):
        load_warm_start(_warm_cfg(tiny_cfg, "0" * 32), N_BITS, uri)
