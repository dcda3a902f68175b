"""A two-node Ray cluster on 127.0.0.1 and an MLflow server, for the slow cluster tests.

Both Ray nodes run on this machine (two raylets, each with its own CPUs and a custom resource
naming its role), with every port chosen free and a private ``--temp-dir``, so the cluster does not
clash with other Ray instances. Token authentication uses a token made for this cluster
(``RAY_AUTH_TOKEN``), never ``~/.ray``. Everything started here is stopped by process id: the
processes whose command line names this cluster's temp dir (and their children), and the MLflow
server's process group. ``ray stop`` is not used: it would stop every Ray instance on the machine.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Optional

import psutil

from paths import REPO  # noqa: E402
BIN = Path(sys.executable).parent


_GIVEN: set[int] = set()


def free_port() -> int:
    """A port free now and not handed out before by this process (the OS may reuse a closed one)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


def base_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update({
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # `fairtune-ray`, `ray`, `mlflow` of this venv
        "RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
        "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "0",  # the search reads the trials' result files
        "RAY_AIR_NEW_OUTPUT": "0", "PYTHONUNBUFFERED": "1",
    })
    return env


def _each(procs, action: str) -> None:
    """Send ``action`` ("terminate" or "kill") to every process still there."""
    for p in procs:
        try:
            getattr(p, action)()
        except psutil.NoSuchProcess:
            pass


class LocalCluster:
    """`ray start --head` (role resource ``head``) plus one `ray start --address` node (``worker_node``)."""

    def __init__(self, head_cpus: int = 2, worker_cpus: int = 1):
        self.head_cpus, self.worker_cpus = head_cpus, worker_cpus
        # Short (Unix socket paths below it must stay under ~107 characters), and one per node: nodes
        # on one machine sharing a session dir would share runtime_resources/, and one node's
        # runtime-env agent would delete a job's working dir while the other node still uses it.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="ftr", dir="/tmp"))
        self.worker_temp_dir = Path(tempfile.mkdtemp(prefix="ftw", dir="/tmp"))
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        self.worker_nm_port = free_port()
        self.env = base_env()
        self.env.update({
            "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
            # notice a dead node within seconds (defaults: tens of seconds)
            "RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "1000",
            "RAY_health_check_failure_threshold": "3", "RAY_health_check_initial_delay_ms": "1000",
        })
        self.log = self.temp_dir / "cluster.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def run(self, *args: str, timeout: float = 180, check: bool = True) -> subprocess.CompletedProcess:
        out = subprocess.run([str(BIN / "ray"), *args], env=self.env, capture_output=True, text=True,
                             timeout=timeout, cwd=REPO)
        with open(self.log, "a") as f:
            f.write(f"$ ray {' '.join(args)}\n{out.stdout}\n{out.stderr}\n")
        if check and out.returncode != 0:
            raise RuntimeError(f"ray {' '.join(args)} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        return out

    def _node_ports(self, node_manager_port: Optional[int] = None) -> list[str]:
        return [f"--node-manager-port={node_manager_port or free_port()}", f"--object-manager-port={free_port()}",
                f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}"]

    def start(self) -> "LocalCluster":
        self.run("start", "--head", "--node-ip-address=127.0.0.1", f"--port={self.gcs_port}",
                 "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
                 f"--ray-client-server-port={free_port()}", f"--temp-dir={self.temp_dir}",
                 f"--num-cpus={self.head_cpus}", "--num-gpus=0", '--resources={"head": 1}',
                 "--include-dashboard=true", *self._node_ports(), "--disable-usage-stats")
        self.run("start", f"--address={self.address}", "--node-ip-address=127.0.0.1",
                 f"--num-cpus={self.worker_cpus}", "--num-gpus=0", '--resources={"worker_node": 1}',
                 f"--temp-dir={self.worker_temp_dir}",
                 *self._node_ports(self.worker_nm_port))
        self.wait_nodes(2)
        return self

    def job_status(self, job_id: str) -> str:
        """PENDING / RUNNING / SUCCEEDED / FAILED / STOPPED, from the job REST API (token in the header)."""
        req = urllib.request.Request(f"{self.dashboard}/api/jobs/{job_id}",
                                     headers={"Authorization": f"Bearer {self.env['RAY_AUTH_TOKEN']}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())["status"]

    def wait_job(self, job_id: str, timeout: float) -> str:
        deadline, status = time.time() + timeout, "UNKNOWN"
        while time.time() < deadline:
            try:
                status = self.job_status(job_id)
            except OSError:
                pass
            if status in ("SUCCEEDED", "FAILED", "STOPPED"):
                break
            time.sleep(3)
        return status

    def nodes(self) -> list[dict]:
        out = self.run("list", "nodes", "--format", "json", "--address", self.dashboard, "--detail", timeout=60)
        return json.loads(out.stdout)

    def wait_nodes(self, n: int, timeout: float = 90) -> list[dict]:
        deadline = time.time() + timeout
        while True:
            try:
                alive = [x for x in self.nodes() if x["state"] == "ALIVE"]
                if len(alive) == n:
                    return alive
            except (RuntimeError, json.JSONDecodeError, subprocess.TimeoutExpired):
                pass
            if time.time() > deadline:
                raise TimeoutError(f"{n} Ray nodes not alive after {timeout}s; see {self.log}")
            time.sleep(2)

    def node_ids(self) -> dict[str, str]:
        """{"head": node_id, "worker": node_id} by each node's role resource."""
        ids = {}
        for node in self.nodes():
            total = node.get("resources_total") or {}
            if "head" in total:
                ids["head"] = node["node_id"]
            elif "worker_node" in total:
                ids["worker"] = node["node_id"]
        return ids

    def processes(self) -> list[psutil.Process]:
        """Every process of this cluster: its command line names one of the private temp dirs."""
        mine, markers = [], (str(self.temp_dir), str(self.worker_temp_dir))
        for p in psutil.process_iter(["pid", "cmdline"]):
            try:
                if any(m in arg for arg in (p.info["cmdline"] or []) for m in markers):
                    mine.append(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return mine

    def worker_raylet(self) -> psutil.Process:
        for p in self.processes():
            cmd = " ".join(p.cmdline())
            if "raylet" in Path(p.cmdline()[0]).name and f"--node_manager_port={self.worker_nm_port}" in cmd:
                return p
        raise LookupError(f"no raylet with node manager port {self.worker_nm_port}")

    def kill_worker_node(self) -> list[int]:
        """The second node dies as a lost machine would: SIGKILL its raylet, the raylet's children (the
        trial and Train worker processes, the agents) and its other processes, by pid."""
        raylet = self.worker_raylet()
        victims = [raylet, *raylet.children(recursive=True)]
        for p in self.processes():
            if str(self.worker_temp_dir) in " ".join(p.cmdline()) and p.pid not in {v.pid for v in victims}:
                victims.append(p)
        _each(victims, "kill")
        psutil.wait_procs(victims, timeout=10)
        return [p.pid for p in victims]

    def stop(self) -> None:
        procs = self.processes()
        for p in list(procs):
            try:
                procs.extend(p.children(recursive=True))
            except psutil.NoSuchProcess:
                pass
        procs = list({p.pid: p for p in procs}.values())
        _each(procs, "terminate")
        # a few seconds' grace: nothing is kept after a test, and some Ray processes sit out SIGTERM for 10 s
        _, alive = psutil.wait_procs(procs, timeout=3)
        _each(alive, "kill")
        psutil.wait_procs(alive, timeout=5)
        if not self.processes():
            for d in (self.temp_dir, self.worker_temp_dir):
                shutil.rmtree(d, ignore_errors=True)


class MlflowServer:
    """`mlflow server` on 127.0.0.1 with a SQLite store; stopped by its process group."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.port = free_port()
        self.proc: Optional[subprocess.Popen] = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> "MlflowServer":
        return self.launch().wait_ready(timeout)

    def launch(self) -> "MlflowServer":
        """Start the server and return at once (it takes about 10 s to serve: start a Ray cluster meanwhile)."""
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.root / "mlflow-server.log", "w")
        self.proc = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
             "--artifacts-destination", str(self.root / "artifacts"), "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", "1"],
            env=base_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.root)
        return self

    def wait_ready(self, timeout: float = 120) -> "MlflowServer":
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(self.root / 'mlflow-server.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(1)
        raise TimeoutError(f"mlflow server not up after {timeout}s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the server and its uvicorn workers
            self.proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
