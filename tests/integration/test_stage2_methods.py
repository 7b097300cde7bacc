"""Stage-2 baselines run end to end on the digits and the tiny split-file tree (the classifier
operations' unit tests are in tests/unit/stages/test_classifier_ops.py)."""
import pytest

from lt_bench.data.synthetic import write_split_tree
from lt_bench.pipeline import run_training


@pytest.fixture(scope="module")
def stage1_checkpoint(tmp_path_factory):
    from hydra import compose, initialize_config_dir
    from tests.conftest import ROOT
    out = tmp_path_factory.mktemp("s1")
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=[f"out_dir={out}", "progress=false", "stage=1", "stage1.epochs=3",
                                           "device=cpu", "plots=false"])
    run_training(cfg)
    return out / "checkpoints" / "stage1.pt"


@pytest.mark.parametrize("method,extra,expected", [
    ("crt", [], "crt"), ("lws", [], "lws"), ("logit_adjust", [], "logit_adjust"),
    ("tau_norm", ["stage2.tau=1.0"], "tau_norm"), ("gumbel", ["stage2.sampler=sqrt"], "gumbel"),
    ("softmax", [], "softmax"),
])
def test_each_method_runs_and_is_recorded(stage1_checkpoint, make_cfg, method, extra, expected):
    cfg = make_cfg("stage=2", f"stage1.checkpoint={stage1_checkpoint}", f"stage2={method}",
                   "stage2.epochs=1", "device=cpu", "plots=false", *extra)
    [record] = run_training(cfg)
    assert record["method"] == expected and record["stage2_method"] == cfg.stage2.method
    if method in ("crt", "lws"):
        assert record["sampler"] == "class_balanced"
    if method == "logit_adjust":
        assert record["tau"] == 1.0


def test_tau_norm_chooses_tau_on_the_val_split(make_cfg, tmp_path):
    splits_dir, images = write_split_tree(tmp_path / "tree", prefix="Tiny_LT")
    files = [f"task.split_files.{s}=Tiny_LT_{s}.txt" for s in ("train", "val", "test")]
    cfg = make_cfg("task=imagenetlt", "model=resnet8", "task.num_classes=6", *files, f"data.splits_dir={splits_dir}",
                   f"data.root={images}", "data.image_size=32", "data.resize=36", "data.num_workers=0",
                   "stage1.epochs=1", "stage1.batch_size=8", "stage1.lr=0.05", "stage2=tau_norm",
                   "device=cpu", "plots=false")
    records = run_training(cfg)
    assert records[1]["method"] == "tau_norm" and 0.0 <= records[1]["tau"] <= 2.0
    assert len(records[1]["val_balanced_top1_by_tau"]) == 21
