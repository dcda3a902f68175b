"""The inner loop imports without Ray or MLflow: benchmarks/gpu/gpu_check.py runs it on a GPU machine
that has neither, and a trainer that needs no search stack is easier to test and to reuse."""
import subprocess
import sys
import textwrap

from paths import REPO

# What the trainer and a trial process's set-up need, down to the data, models, metrics and Fisher layers.
MODULES = ("fairtune_ray.training.loop", "fairtune_ray.training.process", "fairtune_ray.training.pretrain",
           "fairtune_ray.data.loading", "fairtune_ray.config", "fairtune_ray.models", "fairtune_ray.metrics",
           "fairtune_ray.fisher")
BLOCKED = ("ray", "mlflow", "hyperopt")


def test_inner_loop_imports_without_ray_or_mlflow():
    code = textwrap.dedent(f"""
        import sys
        for name in {BLOCKED!r}:
            sys.modules[name] = None  # importing it now raises ImportError
        import importlib
        for module in {MODULES!r}:
            importlib.import_module(module)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, f"a trainer module imports one of {BLOCKED}:\n{proc.stderr[-3000:]}"
