"""run.py in a subprocess, and the parts of results.json that must match between runs."""
import json
import os
import subprocess
import sys

from tests.conftest import ROOT

# digits-LT, short: a complete two-stage run in a few seconds
QUICK = ["stage1.epochs=4", "stage2.epochs=2", "device=cpu", "progress=false", "plots=false"]
TORCHRUN = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2")


def run_py(*overrides, cwd, failpoint=None, launcher=(), timeout=600, env=None):
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", **(env or {})}
    env.pop("LT_BENCH_FAILPOINT", None)
    if failpoint:
        env["LT_BENCH_FAILPOINT"] = failpoint
    return subprocess.run([sys.executable, *launcher, str(ROOT / "run.py"), *overrides], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def results(out_dir):
    return json.loads((out_dir / "results.json").read_text())


def comparable(records):
    keys = ("stage", "method", "top1", "top5", "many", "medium", "few", "ece", "per_class_top1", "epochs")
    return [{k: r[k] for k in keys} for r in records]
