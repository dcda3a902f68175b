"""search.warm_start end to end: a search starts from an earlier study's trials (real Ray, MLflow).

The earlier study is a run folder as a finished study leaves it (config.yaml, trials.json,
stages/prepare.json), written here from the tiny config rather than searched, which saves a
whole search of the suite's time; the warm-started search itself is real."""
import json

import pytest
import yaml
from mlflow.tracking import MlflowClient

from fairtune_ray.config import load_config
from fairtune_ray.search.space import baseline_points, matches_point
from fairtune_ray.search.warm_start import POINTS_TAG, SOURCE_TAG, WARM_FILE
from fairtune_ray.study import run_search


def _earlier_study(path, cfg, n_bits: int = 18) -> list[dict]:
    """Five finished trials on attribute skin_tone (the tiny config's micro ViT has 18 mask bits)."""
    trials = [{"trial_id": f"t{i}", "status": "completed", "objective": 0.5 + 0.04 * i, "search_value": 0.5 + 0.04 * i,
               "config": {**{f"m{j:02d}": (i + j) % 2 for j in range(n_bits)}, "lr": 2e-4 * (i + 1)}}
              for i in range(5)]
    (path / "stages").mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump()))
    (path / "trials.json").write_text(json.dumps(trials))
    (path / "stages" / "prepare.json").write_text(json.dumps({"n_bits": n_bits, "space_name": cfg.mask.space}))
    return trials


@pytest.mark.slow
def test_a_search_warm_starts_from_an_earlier_study(tiny_overrides, ray_local, tmp_path):
    first_dir = tmp_path / "first"
    usable = _earlier_study(first_dir, load_config(None, overrides=tiny_overrides))

    # another attribute of the same data: allowed, and said in the log
    cfg = load_config(None, overrides={**tiny_overrides, "search.warm_start": str(first_dir),
                                       "data.sensitive_attribute": "sex"})
    logs: list[str] = []
    second = run_search(cfg, name="second", report=False, log=lambda *a: logs.append(" ".join(map(str, a))))

    assert len(second.trials) == cfg.search.num_samples  # the warm points were not run again
    n_bits = sum(1 for k in second.trials[0]["config"] if k.startswith("m"))
    for point in baseline_points(cfg, n_bits):  # this study's own baselines still ran, to the last epoch
        [trial] = [t for t in second.trials if matches_point(t["config"], point)]
        assert trial["status"] == "completed"
    [line] = [line for line in logs if line.startswith("warm start:")]
    assert f"{len(usable)} evaluated points from {first_dir}" in line and "attribute skin_tone" in line
    assert "this study: synthetic data (seed 0), attribute sex" in line
    assert len(json.loads((second.run_dir / WARM_FILE).read_text())["points"]) == len(usable)

    parent = MlflowClient(second.tracking_uri).get_run(second.parent_run_id)
    assert parent.data.params["search.warm_start"] == str(first_dir)
    assert parent.data.tags[POINTS_TAG] == str(len(usable))
    assert parent.data.tags[SOURCE_TAG].startswith(str(first_dir))
    assert parent.info.status == "FINISHED"
