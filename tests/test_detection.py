"""The mmdet plugin: registration, heads built with the losses, configs, an end-to-end run."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("mmdet", reason="the detection extra is not installed (make det)")

from mmdet.registry import MODELS  # noqa: E402

import lt_bench.detection.registry  # noqa: E402,F401
from lt_bench.config import validate  # noqa: E402
from lt_bench.detection.runner import build_mmdet_config, run_detection  # noqa: E402
from lt_bench.errors import ConfigError  # noqa: E402

SHARED_LVIS = Path(__file__).resolve().parents[2] / "shared" / "data" / "lvis"
needs_shared = pytest.mark.skipif(not SHARED_LVIS.is_dir(), reason="../shared/data/lvis not present")
FREQ_FILE = str(SHARED_LVIS / "lvis_v1_categories_with_counts.json")


def bbox_head(loss_cls: dict, activation: str):
    head = MODELS.build(dict(
        type="Shared2FCBBoxHead", in_channels=8, fc_out_channels=16, roi_feat_size=7, num_classes=1203,
        loss_cls=loss_cls,
        init_cfg=[dict(type="ActivationClassifierInit", activation=activation, override=dict(name="fc_cls"))]))
    head.init_weights()
    return head


@needs_shared
@pytest.mark.parametrize("loss,activation,channels,bias", [
    ("ActivationCrossEntropyLoss", "gumbel", 1204, -2.0),
    ("ActivationCrossEntropyLoss", "softmax", 1204, -6.5),
    ("DropLoss", "gumbel", 1203, -2.0),
    ("EQLLoss", "sigmoid", 1203, -6.5),
])
def test_bbox_head_takes_width_scores_and_init_from_the_loss(loss, activation, channels, bias):
    extra = {} if loss == "ActivationCrossEntropyLoss" else dict(frequency_file=FREQ_FILE, num_images=100_170)
    head = bbox_head(dict(type=loss, activation=activation, num_classes=1203, **extra), activation)
    assert head.fc_cls.out_features == channels
    assert torch.all(head.fc_cls.weight == 0.001) and torch.all(head.fc_cls.bias == bias)
    scores = head.loss_cls.get_activation(torch.zeros(3, channels))
    assert scores.shape == (3, 1204)           # mmdet's NMS drops the last (background) column
    losses = head.loss(torch.randn(5, channels), torch.randn(5, 4 * 1203), rois=torch.zeros(5, 5),
                       labels=torch.tensor([0, 5, 1203, 1203, 7]), label_weights=torch.ones(5),
                       bbox_targets=torch.zeros(5, 4), bbox_weights=torch.zeros(5, 4))
    assert torch.isfinite(losses["loss_cls"]) and "acc_classes" in losses


def lvis_overrides(tmp_path, *extra):
    return ("task=lvis", f"data.root={tmp_path / 'coco'}", f"data.lvis_dir={tmp_path / 'lvis'}", *extra)


@pytest.mark.parametrize("detector,loss,wrapped,epochs", [
    ("mask_rcnn_r50", "ActivationCrossEntropyLoss", False, 12),
    ("mask_rcnn_r50_rfs", "ActivationCrossEntropyLoss", True, 12),
    ("gol_r50", "DropLoss", True, 24),
    ("eql_gumbel_r50", "EQLLoss", False, 24),
])
def test_detector_configs(make_cfg, tmp_path, detector, loss, wrapped, epochs):
    cfg = make_cfg(*lvis_overrides(tmp_path, f"detector={detector}", "activation=sigmoid"))
    validate(cfg)
    mm = build_mmdet_config(cfg, tmp_path / "run")
    train = mm.train_dataloader["dataset"]
    assert (train["type"] == "ClassBalancedDataset") == wrapped
    if wrapped:
        assert train["oversample_thr"] == 1e-3
        train = train["dataset"]
    assert train["type"] == "LVISV1Dataset" and train["ann_file"] == str(tmp_path / "lvis" / "lvis_v1_train.json")
    assert mm.test_evaluator["ann_file"] == str(tmp_path / "lvis" / "lvis_v1_val.json")
    assert mm.test_evaluator["type"] == "FastLVISMetric"     # detection.evaluator=fast, the default
    assert mm.val_dataloader is None            # evaluated once, after training
    head = mm.model["roi_head"]["bbox_head"]
    assert head["loss_cls"]["type"] == loss and head["loss_cls"]["activation"] == "sigmoid"
    assert head["num_classes"] == 1203 and mm.model["roi_head"]["mask_head"]["num_classes"] == 1203
    assert head["init_cfg"][0]["activation"] == "sigmoid"
    assert mm.train_cfg["max_epochs"] == epochs and mm.work_dir == str(tmp_path / "run")
    if detector == "gol_r50":
        assert mm.model["test_cfg"]["rcnn"]["nms"]["iou_threshold"] == 0.3
        assert mm.model["test_cfg"]["rcnn"]["score_thr"] == 1e-4 and mm.model["test_cfg"]["rcnn"]["max_per_img"] == 300
        assert mm.model["roi_head"]["mask_head"]["predictor_cfg"]["type"] == "NormedConv2d"
        assert head["loss_cls"]["lambda_"] == 0.0011


def test_lvis_v05_and_config_errors(make_cfg, tmp_path):
    mm = build_mmdet_config(make_cfg(*lvis_overrides(tmp_path, "task.version=v0.5", "detector=gol_r50")), tmp_path)
    inner = mm.train_dataloader["dataset"]["dataset"]
    assert inner["type"] == "LVISV05Dataset" and inner["data_prefix"]["img"].endswith("train2017/")
    assert mm.model["roi_head"]["bbox_head"]["num_classes"] == 1230
    assert mm.model["roi_head"]["bbox_head"]["loss_cls"]["lambda_"] == 0.00177
    official = build_mmdet_config(make_cfg(*lvis_overrides(tmp_path, "detection.evaluator=lvis")), tmp_path)
    assert official.test_evaluator["type"] == "LVISMetric" and official.test_evaluator["metric"] == ["bbox", "segm"]
    with pytest.raises(ConfigError, match="unknown detection.evaluator 'coco'; valid: fast, lvis"):
        validate(make_cfg(*lvis_overrides(tmp_path, "detection.evaluator=coco")))
    with pytest.raises(ConfigError, match="activation must be sigmoid or gumbel, not softmax"):
        validate(make_cfg(*lvis_overrides(tmp_path, "detector=gol_r50", "activation=softmax")))
    with pytest.raises(ConfigError, match="unknown activation 'gumble'"):
        validate(make_cfg(*lvis_overrides(tmp_path, "activation=gumble")))


def write_images(ann_file: Path, folder: Path) -> None:
    """Random images of the annotated sizes, named as mmdet's LVIS v0.5 loader expects."""
    from PIL import Image
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for img in json.loads(ann_file.read_text())["images"]:
        pixels = rng.integers(0, 255, (img["height"], img["width"], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / img["file_name"][-16:], quality=75)


@pytest.mark.slow
@needs_shared
def test_mask_rcnn_gumbel_trains_and_evaluates_on_real_lvis_annotations(make_cfg, tmp_path):
    ann = SHARED_LVIS / "lvis_v0.5_val_100.json"
    write_images(ann, tmp_path / "coco" / "val2017")
    (tmp_path / "coco" / "train2017").symlink_to(tmp_path / "coco" / "val2017")
    out = tmp_path / "run"
    cfg = make_cfg(*lvis_overrides(tmp_path, "task.version=v0.5", "activation=gumbel", f"data.train_ann={ann}",
                                   f"data.val_ann={ann}", "detection.backbone_pretrained=null",
                                   "detection.max_epochs=1", "detection.train_images=4", "detection.batch_size=2",
                                   "detection.num_workers=0", "detection.image_scale=[320,192]",
                                   "detection.val_images=4", "detection.rpn_proposals=50",
                                   "detection.max_per_img=100", "device=cpu"), out_dir=out)
    record = run_detection(cfg)
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk == [record]
    assert record["kind"] == "detection" and record["method"] == "gumbel" and record["version"] == "v0.5"
    assert not record["no_detections"]      # Gumbel's init scores exp(-exp(2)) pass the 1e-4 threshold
    for key in ("AP", "APr", "APc", "APf", "APbox"):
        assert record[key] is not None and 0.0 <= record[key] <= 100.0
    assert list((out).glob("epoch_1.pth"))
