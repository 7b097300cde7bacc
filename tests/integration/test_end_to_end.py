"""Real runs through run.py in subprocesses: CIFAR pickles, torchrun DDP."""
import pytest

from lt_bench.checkpoint import load_checkpoint
from lt_bench.data import build_data
from lt_bench.distributed import DistContext
from lt_bench.models import build_model
from lt_bench.pipeline import evaluate
from lt_bench.activations import build_activation
from lt_bench.data.synthetic import write_cifar
from tests.helpers.runs import QUICK, TORCHRUN, results, run_py

pytestmark = pytest.mark.slow


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


def test_torchrun_two_processes_count_each_image_once(tmp_path, make_cfg):
    out = tmp_path / "ddp"
    proc = run_py(f"out_dir={out}", *QUICK, cwd=tmp_path, launcher=TORCHRUN)
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
