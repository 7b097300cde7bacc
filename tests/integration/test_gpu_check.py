"""benchmarks/gpu_check.py --dry-run: every step of the GPU check runs at tiny sizes on CPU, so
the script is known to work before a GPU is lent (about 2 minutes on 2 busy cores)."""
import json
import math
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

STEPS = ["environment", "amp_correctness", "gumbel_autocast", "ddp", "throughput_synthetic", "throughput_pipeline",
         "stage2_cache"]


@pytest.mark.slow
def test_dry_run_runs_every_step(tmp_path):
    out = tmp_path / "results"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--out", str(out)],
                          cwd=tmp_path, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert len(files) == 2 and all(f.startswith("gpu_check_dry-run_") for f in files), files
    report = json.loads((out / files[0]).read_text())
    markdown = (out / files[1]).read_text()

    assert report["mode"] == "dry-run" and report["device"] == "cpu"
    assert [s["name"] for s in report["steps"]] == STEPS
    for step in report["steps"]:
        assert step["status"] in ("ok", "skipped"), (step["name"], step.get("error"), step.get("traceback"))
        if step["status"] == "skipped":
            assert step["reason"], step["name"]
        for part, reason in step["parts_skipped"].items():
            assert reason, (step["name"], part)
        assert all(c["ok"] for c in step["checks"]), step["name"]
        for key, metric in step["metrics"].items():          # every measurement a finite number
            assert isinstance(metric["value"], float) and math.isfinite(metric["value"]), (step["name"], key)
    by_name = {s["name"]: s for s in report["steps"]}
    assert "CUDA" in by_name["amp_correctness"]["parts_skipped"]["fp16"]      # fp16 needs CUDA: skipped, with why
    assert by_name["amp_correctness"]["status"] == "ok" and len(by_name["amp_correctness"]["checks"]) >= 20
    if by_name["ddp"]["status"] == "ok":                      # the gloo path: DDP top-1 = one process's
        assert any("DDP test top-1" in c["name"] for c in by_name["ddp"]["checks"])
    assert report["summary"].get("failed", 0) == 0 and report["summary"].get("timeout", 0) == 0

    tolerances = report["tolerances"]
    for key in ("loss_rtol_bf16", "loss_rtol_fp16", "grad_cosine_min", "gumbel_loss_rtol"):
        assert isinstance(tolerances[key]["value"], float) and tolerances[key]["why"], key
        assert f"`{key}`" in markdown

    assert "DRY RUN" in markdown and "not benchmark figures" in markdown
    assert "| step | status | seconds | result |" in markdown
    for name in STEPS:
        assert f"| {name} | {by_name[name]['status']} |" in markdown
    assert "[gpu_check] done" in done.stdout
