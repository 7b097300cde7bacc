"""The decoupled pipeline in-process on the bundled digits: stages, records, checkpoints."""
import json

import numpy as np
import pytest
import torch

from lt_bench.checkpoint import load_checkpoint
from lt_bench.data import build_data
from lt_bench.distributed import DistContext
from lt_bench.errors import CheckpointError, NonFiniteLossError
from lt_bench.models import build_model
from lt_bench.pipeline import run_training
from lt_bench.records import REQUIRED_FIELDS, read_records
from lt_bench.stages.feature_cache import FEATURES_FILE, cached_features

SHORT = ("stage1.epochs=3", "stage2.epochs=2", "device=cpu")


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    from hydra import compose, initialize_config_dir
    from tests.conftest import ROOT
    out = tmp_path_factory.mktemp("digits_run")
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=[f"out_dir={out}", "progress=false", *SHORT])
    records = run_training(cfg)
    return cfg, out, records


def test_two_records_with_required_fields(digits_run):
    cfg, out, records = digits_run
    on_disk = read_records(out / "results.json")
    assert on_disk == json.loads(json.dumps(records))
    assert [(r["stage"], r["method"]) for r in on_disk] == [(1, "softmax"), (2, "gumbel")]
    for r in on_disk:
        assert set(REQUIRED_FIELDS) <= set(r)
        assert r["task"] == "digits_lt" and r["imbalance"] == 50 and r["model"] == "resnet8"
        assert r["num_train"] == sum(r["train_counts"]) == 331 and r["num_eval"] == 500
        assert r["shot_classes"] == {"many": 1, "medium": 4, "few": 5}
        assert 0 <= r["top1"] <= r["top5"] <= 100 and 0 <= r["ece"] <= 100
        # balanced test set: top-1 is the mean of the per-class accuracies
        assert r["top1"] == pytest.approx(sum(r["per_class_top1"]) / 10, abs=1e-3)
        assert r["epochs"] == (3 if r["stage"] == 1 else 2)
        assert len(r["config_hash"]) == 16 and r["seed"] == 0
    assert on_disk[0]["config_hash"] == on_disk[1]["config_hash"]


def test_run_folder_holds_config_tensorboard_and_checkpoints(digits_run):
    _, out, _ = digits_run
    assert (out / "config.yaml").is_file()
    for stage in ("stage1", "stage2"):
        assert list((out / "tensorboard" / stage).glob("events.out.tfevents.*"))
        assert load_checkpoint(out / "checkpoints" / f"{stage}.pt")["progress"]["complete"]


def test_stage2_changes_only_the_classifier(digits_run):
    """The backbone's weights stay; with stage2.bn=train (the default, as the authors' and Kang et
    al.'s code) its BatchNorm statistics follow the stage-2 batches."""
    _, out, _ = digits_run
    s1 = load_checkpoint(out / "checkpoints" / "stage1.pt")["model"]
    s2 = load_checkpoint(out / "checkpoints" / "stage2.pt")["model"]
    running = ("running_mean", "running_var", "num_batches_tracked")
    for key, value in s1.items():
        if key.startswith("backbone.") and not key.endswith(running):
            assert torch.equal(value, s2[key]), key
    assert not torch.equal(s1["backbone.bn1.running_mean"], s2["backbone.bn1.running_mean"])
    assert not torch.equal(s1["classifier.weight"], s2["classifier.weight"])
    assert read_records(out / "results.json")[1]["bn"] == "train"


def test_stage2_alone_from_a_checkpoint(digits_run, make_cfg, tmp_path):
    _, out, _ = digits_run
    cfg = make_cfg(*SHORT, "stage=2", f"stage1.checkpoint={out / 'checkpoints' / 'stage1.pt'}",
                   "stage2.activation=sigmoid", "stage2.cache_features=true", "stage2.bn=frozen",
                   out_dir=tmp_path / "s2")
    records = run_training(cfg)
    assert [(r["stage"], r["method"], r["bn"]) for r in records] == [(2, "sigmoid", "frozen")]
    assert [r["method"] for r in read_records(tmp_path / "s2" / "results.json")] == ["sigmoid"]
    s1 = load_checkpoint(out / "checkpoints" / "stage1.pt")["model"]
    s2 = load_checkpoint(tmp_path / "s2" / "checkpoints" / "stage2.pt")["model"]
    assert all(torch.equal(v, s2[k]) for k, v in s1.items() if k.startswith("backbone."))   # bn=frozen


def test_stage2_checkpoint_must_fit_the_task(digits_run, make_cfg, tmp_path):
    _, out, _ = digits_run
    cfg = make_cfg("stage=2", f"stage1.checkpoint={out / 'checkpoints' / 'stage1.pt'}", "task=cifar100lt",
                   "model=resnet8", f"data.root={tmp_path / 'no_data_here'}")
    with pytest.raises(CheckpointError, match="num_classes=10, this run needs 100"):
        run_training(cfg)


def test_feature_cache_equals_backbone_outputs_and_is_reused(make_cfg, tmp_path):
    cfg = make_cfg()
    bundle = build_data(cfg)
    model = build_model("resnet8", 10, in_chans=1).eval()
    cached = cached_features(model.backbone, bundle.train_plain, bundle.train.targets, DistContext(),
                             tmp_path, batch_size=64)
    images = torch.stack([bundle.train_plain[i][0] for i in range(len(bundle.train))])
    with torch.no_grad():
        expected = model.backbone(images)
    torch.testing.assert_close(torch.from_numpy(np.array(cached.features)), expected)
    feature, label = cached[5]
    torch.testing.assert_close(feature, expected[5])
    assert label == bundle.train.targets[5] and len(cached) == len(bundle.train)
    stamp = (tmp_path / FEATURES_FILE).stat().st_mtime_ns
    cached_features(model.backbone, bundle.train_plain, bundle.train.targets, DistContext(), tmp_path)
    assert (tmp_path / FEATURES_FILE).stat().st_mtime_ns == stamp          # same backbone: reused
    with torch.no_grad():
        model.backbone.conv1.weight.mul_(2)
    again = cached_features(model.backbone, bundle.train_plain, bundle.train.targets, DistContext(), tmp_path)
    assert not np.allclose(np.array(again.features), expected.numpy())      # other backbone: recomputed


def test_nonfinite_loss_stops_naming_stage_epoch_and_batch(make_cfg):
    cfg = make_cfg("stage1.epochs=2", "stage1.lr=1e30", "stage1.warmup_epochs=0")
    with pytest.raises(NonFiniteLossError, match=r"stage1: loss is (nan|inf) at epoch 1/2, batch \d+/11"):
        run_training(cfg)


def test_nonfinite_steps_can_be_skipped_and_are_counted(make_cfg, tmp_path):
    """Skipped steps are counted in the checkpoint; a model whose outputs end non-finite writes no
    record (a NaN in results.json would break every table over the folder), with a named error."""
    from lt_bench.errors import DataError
    cfg = make_cfg("stage1.epochs=1", "stage2.epochs=1", "stage1.lr=1e30", "stage1.warmup_epochs=0",
                   "train.skip_nonfinite=true", out_dir=tmp_path / "run")
    with pytest.raises(DataError, match="has non-finite values in ece"):
        run_training(cfg)
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "stage1.pt")["progress"]["nonfinite_skipped"] > 0
    assert not (tmp_path / "run" / "results.json").exists()


def test_bf16_autocast_and_channels_last_on_cpu(make_cfg):
    cfg = make_cfg("stage1.epochs=1", "stage2.epochs=1", "train.amp=bf16", "train.channels_last=true")
    records = run_training(cfg)
    assert [r["stage"] for r in records] == [1, 2]
    assert all(0 <= r["top1"] <= 100 and r["nonfinite_skipped"] == 0 for r in records)
