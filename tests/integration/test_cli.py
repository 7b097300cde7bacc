"""lt-bench train is run.py: Hydra's own help, word for word."""
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def lt_bench_command():
    script = Path(sys.executable).parent / "lt-bench"          # the console script, where installed
    return [str(script)] if script.is_file() else [sys.executable, "-m", "lt_bench.cli"]


def test_train_help_is_run_py_help(tmp_path):
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    ours = subprocess.run([*lt_bench_command(), "train", "--help"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    theirs = subprocess.run([sys.executable, str(ROOT / "run.py"), "--help"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert ours.returncode == theirs.returncode == 0, ours.stderr[-2000:]
    assert ours.stdout == theirs.stdout
    assert "== Configuration groups ==" in ours.stdout and "== Config ==" in ours.stdout
    assert "stage2: crt, gumbel" in ours.stdout and "usage: lt-bench train" not in ours.stdout
