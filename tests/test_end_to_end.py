"""Real runs through run.py in subprocesses: CIFAR pickles, interruption and resume, torchrun DDP."""
import json
import os
import subprocess
import sys

import pytest
import torch

from lt_bench.checkpoint import load_checkpoint
from lt_bench.data import build_data
from lt_bench.distributed import DistContext
from lt_bench.models import build_model
from lt_bench.pipeline import evaluate
from lt_bench.activations import build_activation
from tests.conftest import ROOT
from lt_bench.data.synthetic import write_cifar

pytestmark = pytest.mark.slow
QUICK = ["stage1.epochs=4", "stage2.epochs=2", "device=cpu", "progress=false"]


def run_py(*overrides, cwd, failpoint=None, launcher=()):
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    env.pop("LT_BENCH_FAILPOINT", None)
    if failpoint:
        env["LT_BENCH_FAILPOINT"] = failpoint
    return subprocess.run([sys.executable, *launcher, str(ROOT / "run.py"), *overrides], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def results(out_dir):
    return json.loads((out_dir / "results.json").read_text())


def comparable(records):
    keys = ("stage", "method", "top1", "top5", "many", "medium", "few", "ece", "per_class_top1", "epochs")
    return [{k: r[k] for k in keys} for r in records]


def test_cifar_pickles_end_to_end(tmp_path):
    write_cifar(tmp_path / "cifar", "cifar10", train_per_class=40, test_per_class=20)
    out = tmp_path / "run"
    proc = run_py("task=cifar10lt", "imbalance=10", f"data.root={tmp_path / 'cifar'}", "data.verify_md5=false",
                  "data.num_workers=1", "stage1.batch_size=32", "stage1.lr=0.05", "stage2.lr=0.01",
                  f"out_dir={out}", *QUICK, "stage1.epochs=10", "stage1.warmup_epochs=1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = results(out)
    assert [(r["stage"], r["method"]) for r in records] == [(1, "softmax"), (2, "gumbel")]
    assert records[0]["num_train"] == sum(int(40 * 0.1 ** (i / 9)) for i in range(10))
    assert records[0]["num_eval"] == 200
    assert records[0]["top1"] > 30          # colour-coded classes: far above chance (10%)
    assert "stage method" in proc.stdout     # the summary table


@pytest.mark.parametrize("failpoint", ["stage1.epoch_end:2", "stage2.epoch_end:1"])
def test_resume_after_sigkill_reproduces_the_uninterrupted_run(tmp_path, failpoint):
    whole = tmp_path / "whole"
    assert run_py(f"out_dir={whole}", *QUICK, cwd=tmp_path).returncode == 0
    cut = tmp_path / "cut"
    killed = run_py(f"out_dir={cut}", *QUICK, cwd=tmp_path, failpoint=failpoint)
    assert killed.returncode == -9, killed.stderr[-2000:]
    stage = failpoint.split(".")[0]
    assert load_checkpoint(cut / "checkpoints" / f"{stage}.pt")["progress"]["epochs_done"] == int(failpoint[-1])
    resumed = run_py(f"out_dir={cut}", "resume=true", *QUICK, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout + resumed.stderr
    assert comparable(results(cut)) == comparable(results(whole))
    final_cut = load_checkpoint(cut / "checkpoints" / "stage2.pt")["model"]
    final_whole = load_checkpoint(whole / "checkpoints" / "stage2.pt")["model"]
    assert all(torch.equal(final_cut[k], final_whole[k]) for k in final_whole)


def test_resume_refuses_a_different_config(tmp_path):
    out = tmp_path / "run"
    assert run_py(f"out_dir={out}", *QUICK, cwd=tmp_path, failpoint="stage1.epoch_end:1").returncode == -9
    proc = run_py(f"out_dir={out}", "resume=true", "stage1.lr=0.5", *QUICK, cwd=tmp_path)
    assert proc.returncode != 0 and "config hash" in proc.stdout + proc.stderr


def test_torchrun_two_processes_count_each_image_once(tmp_path, make_cfg):
    out = tmp_path / "ddp"
    proc = run_py(f"out_dir={out}", *QUICK, cwd=tmp_path,
                  launcher=("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (tmp_path / "runs").exists()      # no stray run folders from rank 1
    records = results(out)
    for r in records:
        assert r["world_size"] == 2 and r["num_eval"] == 500
        checksums = r["rank_param_checksums"]
        assert len(checksums) == 2 and checksums[0] == checksums[1]   # replicas in sync
    # The DDP evaluation equals a single-process evaluation of the saved model.
    cfg = make_cfg(*QUICK)
    bundle = build_data(cfg)
    model = build_model("resnet8", 10, in_chans=1)
    for stage, record in zip(("stage1", "stage2"), records):
        model.load_state_dict(load_checkpoint(out / "checkpoints" / f"{stage}.pt")["model"])
        single = evaluate(model, bundle, build_activation(record["method"]), cfg, DistContext())
        assert single["top1"] == record["top1"] and single["per_class_top1"] == record["per_class_top1"]
