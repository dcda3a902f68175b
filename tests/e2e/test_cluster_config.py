"""clusters/aws.yaml: Ray's own cluster-launcher preparation and schema validation, offline.

``prepare_config`` merges the AWS provider defaults (a file in the Ray package) and fills node-type
bounds; ``validate_config`` checks the result against Ray's ``ray-schema.json``. Neither needs
boto3 or the network. The AWS provider's resource auto-detection does (EC2 DescribeInstanceTypes),
so the config states each node type's CPU/GPU explicitly, and the autoscaler's own bin-packing
(``get_nodes_for``) is run on those numbers to check which node type a workload would start.
"""
import copy
import re
from functools import partial

import pytest
import yaml
from paths import REPO
from ray.autoscaler._private.node_provider_availability_tracker import (
    NodeAvailabilitySummary,
)
from ray.autoscaler._private.resource_demand_scheduler import (
    _default_utilization_scorer,
    get_nodes_for,
)
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = REPO
CONFIG = ROOT / "clusters" / "aws.yaml"


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(CONFIG.read_text())


@pytest.fixture(scope="module")
def prepared(raw) -> dict:
    cfg = prepare_config(copy.deepcopy(raw))
    validate_config(cfg)  # raises jsonschema.ValidationError / ValueError on a bad config
    return cfg


def test_ray_validates_the_prepared_config(prepared):
    assert prepared["provider"]["type"] == "aws"
    assert prepared["head_node_type"] == "head"
    assert set(prepared["available_node_types"]) == {"head", "gpu_small", "gpu_multi"}


def test_validation_rejects_a_broken_copy(raw):
    import jsonschema

    bad = copy.deepcopy(raw)
    bad["available_node_types"]["gpu_small"]["min_workers"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(bad))
    bad = copy.deepcopy(raw)
    bad["head_node_type"] = "nope"
    with pytest.raises(ValueError):
        validate_config(prepare_config(bad))


def test_node_types_instances_and_bounds(prepared):
    types = prepared["available_node_types"]
    assert types["head"]["node_config"]["InstanceType"] == "m5.2xlarge"
    assert types["head"]["resources"].get("GPU", 0) == 0
    assert types["gpu_small"]["node_config"]["InstanceType"] == "g5.xlarge"
    assert types["gpu_small"]["resources"]["GPU"] == 1
    assert types["gpu_multi"]["node_config"]["InstanceType"] == "g5.12xlarge"
    assert types["gpu_multi"]["resources"]["GPU"] == 4
    for name in ("gpu_small", "gpu_multi"):
        t = types[name]
        assert 0 <= t["min_workers"] <= t["max_workers"]
        # workers write Tune results and MLflow artifacts to S3
        assert "IamInstanceProfile" in t["node_config"]
    assert sum(t.get("min_workers", 0) for t in types.values()) <= prepared["max_workers"]
    assert types["gpu_small"]["max_workers"] + types["gpu_multi"]["max_workers"] <= prepared["max_workers"]


def test_setup_installs_the_project_and_head_runs_mlflow(prepared):
    mounts = prepared["file_mounts"]
    project = next(remote for remote, local in mounts.items() if local == ".")
    setup = " ".join(prepared["setup_commands"])
    assert f"-e {project}" in setup and "constraints.txt" in setup
    assert re.search(r"ray\[default,tune,train\]==\d", setup)
    head = " ".join(prepared["head_start_ray_commands"])
    assert "ray start --head" in head and "RAY_AUTH_MODE=token" in head
    assert ("mlflow server --backend-store-uri sqlite:////home/ubuntu/mlflow.db "
            "--default-artifact-root s3://YOUR-BUCKET/mlflow --host 0.0.0.0 --port 5000") in head
    workers = " ".join(prepared["worker_start_ray_commands"])
    assert "ray start --address=$RAY_HEAD_IP:6379" in workers and "RAY_AUTH_MODE=token" in workers
    assert "MLFLOW_TRACKING_URI=http://$RAY_HEAD_IP:5000" in workers
    # the same Ray token on every node
    assert any(remote.endswith(".ray/auth_token") for remote in mounts)


def _nodes_for(prepared, demands):
    scorer = partial(_default_utilization_scorer, node_availability_summary=NodeAvailabilitySummary({}))
    to_add, residual = get_nodes_for(prepared["available_node_types"], {}, prepared["head_node_type"],
                                     prepared["max_workers"], demands, scorer)
    return dict(to_add), residual


def test_autoscaler_picks_the_intended_node_types(prepared):
    # four fractional trials at 0.25 GPU: one single-GPU node
    assert _nodes_for(prepared, [{"CPU": 1, "GPU": 0.25}] * 4) == ({"gpu_small": 1}, [])
    # a 4-worker trial (Train's PACK placement group is flattened into its bundles): the 4-GPU node
    assert _nodes_for(prepared, [{"CPU": 8, "GPU": 1}] * 4) == ({"gpu_multi": 1}, [])
    # a CPU-only demand never starts a GPU node
    to_add, _ = _nodes_for(prepared, [{"CPU": 1}])
    assert not {"gpu_small", "gpu_multi"} & set(to_add)
