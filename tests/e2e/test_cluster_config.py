"""clusters/aws.yaml: Ray's own cluster-launcher preparation and schema validation, offline.

``prepare_config`` merges the AWS provider defaults (a file in the Ray package) and fills node-type
bounds; ``validate_config`` checks the result against Ray's ``ray-schema.json``. Neither needs
boto3 or the network. The AWS provider's resource auto-detection does (EC2 DescribeInstanceTypes),
so the config states each node type's CPU/GPU explicitly, and the autoscaler's own bin-packing
(``get_nodes_for``) is run on those numbers to check which node type a workload would start.
"""
import configparser
import copy
import math
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
AUTH_INI = ROOT / "clusters" / "mlflow_auth.ini"
PASSWORD_FILE = "/home/ubuntu/.mlflow/fairtune_admin_password"
# What AWS sells under each instance type (vCPUs, GPUs, GPU memory in MiB as nvidia-smi shows it).
INSTANCES = {"m5.2xlarge": (8, 0, 0), "g5.xlarge": (4, 1, 23028), "g5.12xlarge": (48, 4, 4 * 23028)}


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
    assert ("mlflow server --app-name basic-auth --backend-store-uri sqlite:////home/ubuntu/mlflow.db "
            "--default-artifact-root s3://YOUR-BUCKET/mlflow --host $(hostname -I | awk '{print $1}') --port 5000") in head
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


def _commands(prepared) -> list[str]:
    return [c for key in ("head_start_ray_commands", "worker_start_ray_commands") for c in prepared[key]]


def test_nothing_listens_on_every_interface(prepared):
    commands = " ".join(_commands(prepared))
    assert "0.0.0.0" not in commands
    head = " ".join(prepared["head_start_ray_commands"])
    # the dashboard only on the head's loopback: reached with `ray dashboard clusters/aws.yaml` (SSH)
    assert "--dashboard-host=127.0.0.1" in head
    # MLflow on the head's private address, the one every Ray process is told to use
    mlflow = next(c for c in prepared["head_start_ray_commands"] if "mlflow server" in c)
    private = "$(hostname -I | awk '{print $1}')"
    assert f"--host {private} --port 5000" in mlflow
    assert f"MLFLOW_TRACKING_URI=http://{private}:5000" in head


def test_mlflow_asks_for_a_password_that_is_not_in_the_repository(prepared):
    mlflow = next(c for c in prepared["head_start_ray_commands"] if "mlflow server" in c)
    assert "--app-name basic-auth" in mlflow
    assert any("mlflow[auth]" in c for c in prepared["head_setup_commands"])
    # the admin password comes from a file copied from the user's machine, never from this repository
    assert prepared["file_mounts"][PASSWORD_FILE].startswith("~/")
    assert f'MLFLOW_AUTH_ADMIN_PASSWORD="$(cat {PASSWORD_FILE})"' in mlflow
    ini_path = re.search(r"MLFLOW_AUTH_CONFIG_PATH=(\S+);", mlflow).group(1)
    assert ini_path == "/home/ubuntu/fairtune-ray/clusters/" + AUTH_INI.name
    ini = configparser.ConfigParser()
    ini.read(AUTH_INI)
    assert ini["mlflow"]["admin_username"] == "admin" and "admin_password" not in ini["mlflow"]
    assert ini["mlflow"]["database_uri"].startswith("sqlite:////home/ubuntu/")
    # every Ray process, on every node, logs with the credentials
    for command in _commands(prepared):
        if "ray start" in command:
            assert "MLFLOW_TRACKING_USERNAME=admin" in command
            assert f'MLFLOW_TRACKING_PASSWORD="$(cat {PASSWORD_FILE})"' in command
    # no password literal anywhere: every *PASSWORD variable is read from the mounted file
    assignments = re.findall(r"(\w*PASSWORD)=(\S+ \S+)", CONFIG.read_text())
    assert assignments and all(value.startswith(f'"$(cat {PASSWORD_FILE})"') for _, value in assignments)


def test_declared_resources_are_the_instances(prepared):
    for name, t in prepared["available_node_types"].items():
        vcpus, gpus, _ = INSTANCES[t["node_config"]["InstanceType"]]
        assert t["resources"].get("GPU", 0) == gpus
        # workers give every vCPU to trials; the head keeps 2 for GCS, dashboard and MLflow
        assert t["resources"]["CPU"] == (vcpus - 2 if name == "head" else vcpus)


def _gpu_experiments() -> dict:
    from fairtune_ray.config import load_config

    found = {p.name: load_config(p).trial for p in sorted((ROOT / "experiments").glob("*.yaml"))}
    return {name: t for name, t in found.items() if t.resources.gpu > 0}


def _trials_per_node(node_resources: dict, cpu: float, gpu: float) -> int:
    return min(math.floor(node_resources["CPU"] / cpu + 1e-9), math.floor(node_resources["GPU"] / gpu + 1e-9))


def test_experiments_pack_four_trials_per_g5_xlarge(prepared):
    from fairtune_ray.training.process import MIB, allocator_cap_bytes

    experiments = _gpu_experiments()
    assert len(experiments) >= 10
    types = prepared["available_node_types"]
    for name, trial in experiments.items():
        r = trial.resources
        assert trial.workers == 1 and r.gpu == 0.25, name
        assert _trials_per_node(types["gpu_small"]["resources"], r.cpu, r.gpu) == 4, name
        assert _trials_per_node(types["gpu_multi"]["resources"], r.cpu, r.gpu) == 16, name
        # the autoscaler agrees: four fill one g5.xlarge, a fifth starts a second one
        demand = {"CPU": r.cpu, "GPU": r.gpu}
        assert _nodes_for(prepared, [demand] * 4) == ({"gpu_small": 1}, []), name
        assert _nodes_for(prepared, [demand] * 5) == ({"gpu_small": 2}, []), name
        # GPU memory: four allocator caps plus four CUDA contexts fill the A10G's 23028 MiB
        total = INSTANCES["g5.xlarge"][2] * MIB
        cap = allocator_cap_bytes(r.gpu, total, r.cuda_context_mb)
        assert cap > 4 * 1024 * MIB, name  # room for a ViT-S/16 at batch 64 (benchmarks/gpu/)
        assert 4 * (cap + r.cuda_context_mb * MIB) <= total, name
