"""The mmdet plugin end to end: Mask R-CNN with the Gumbel loss trains and is evaluated on real
LVIS annotations with generated pixels (the plugin's unit tests: tests/unit/detection/test_runner.py)."""
import json

import pytest

pytest.importorskip("mmdet", reason="the detection extra is not installed (make det)")

from lt_bench.detection.runner import run_detection  # noqa: E402

from tests.helpers.lvis import SHARED_LVIS, lvis_overrides, needs_shared, write_images  # noqa: E402


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
    assert record["eval_subset"] is True and record["eval_images"] == 4
    assert record["batch_size"] == 2 and record["lr"] == pytest.approx(0.0025) and record["base_lr"] == 0.02
    assert record["scoring"] == "gumbel" and record["classifier_init"] == "paper"
    assert record["activation_options"] == {"clamp": [-4.0, 10.0], "temperature": 1.0, "gradient": "exact"}
    assert record["kind"] == "detection" and record["method"] == "gumbel" and record["version"] == "v0.5"
    assert not record["no_detections"]      # Gumbel's init scores exp(-exp(2)) pass the 1e-4 threshold
    for key in ("AP", "APbox"):
        assert record[key] is not None and 0.0 <= record[key] <= 100.0
    subset = json.loads((out / "lvis_val_subset.json").read_text())
    groups = {c["id"]: c["frequency"] for c in subset["categories"]}
    present = {groups[a["category_id"]] for a in subset["annotations"]}
    for key, group in (("APr", "r"), ("APc", "c"), ("APf", "f")):   # None: no such category in the 4 images
        assert (record[key] is None) == (group not in present)
        assert record[key] is None or 0.0 <= record[key] <= 100.0
    assert list((out).glob("epoch_1.pth"))


def short_lvis_run(make_cfg, tmp_path, *overrides, train_images=2):
    """run.py's task=lvis on the real LVIS v0.5 val_100 annotations with generated pixels (train =
    val), at a small scale: a few iterations of batch 2 and an evaluation on 2 images."""
    ann = SHARED_LVIS / "lvis_v0.5_val_100.json"
    write_images(ann, tmp_path / "coco" / "val2017")
    (tmp_path / "coco" / "train2017").symlink_to(tmp_path / "coco" / "val2017")
    return run_detection(make_cfg(*lvis_overrides(
        tmp_path, "task.version=v0.5", *overrides, f"data.train_ann={ann}", f"data.val_ann={ann}",
        "detection.backbone_pretrained=null", "detection.max_epochs=1", f"detection.train_images={train_images}",
        "detection.batch_size=2", "detection.num_workers=0", "detection.image_scale=[256,160]",
        "detection.val_images=2", "detection.rpn_proposals=50", "detection.max_per_img=50", "device=cpu"),
        out_dir=tmp_path / "run"))


@pytest.mark.slow
@needs_shared
@pytest.mark.parametrize("detector", ["mask_rcnn_r101", "mask_rcnn_x101_64x4d", "cascade_mask_rcnn_r101", "htc_r101",
                                      "seesaw_r50"])
def test_table7_and_context_detectors_train_and_evaluate(make_cfg, tmp_path, detector):
    """GOL's Table 7 detectors (R101, X101-64x4d, Cascade, HTC: heads as lists) and mmdet's Seesaw
    config (its own box classifier) through run.py's path: one training iteration (the Gumbel
    classifier on every stage) and an evaluation on real LVIS annotations with generated pixels,
    per-category AP in the record."""
    record = short_lvis_run(make_cfg, tmp_path, f"detector={detector}", "activation=gumbel",
                               "detection.sampler=random")
    assert record["iterations"] == 1 and record["sampler"] == "random" and record["detector"] == detector
    if detector == "seesaw_r50":      # random already: the switch changes nothing, the model is the detector
        assert (record["model"], record["method"], record["box_classifier"], record["activation"]) == \
            ("seesaw_r50", "seesaw", "stock", None)
    else:                             # their configs sample with RFS, as mmdet ships them
        assert record["model"] == f"{detector}[sampler=random]" and record["method"] == "gumbel"
    assert record["AP"] is not None and record["per_category"]["AP"]


@pytest.mark.slow
@needs_shared
@pytest.mark.parametrize("loss", ["acsl", "federated"])
def test_table6_losses_train_and_evaluate(make_cfg, tmp_path, loss):
    """ACSL and the federated loss (GOL's Table 6) with Gumbel through run.py's path: the loss gets
    the category statistics it needs from rank 0's file, trains two iterations and is evaluated."""
    record = short_lvis_run(make_cfg, tmp_path, f"detector.loss={loss}", "activation=gumbel", train_images=4)
    assert record["iterations"] == 2 and record["method"] == f"{loss}+gumbel" and record["loss"] == loss
    assert record["model"] == "mask_rcnn_r50" and record["scoring"] == "gumbel" and record["AP"] is not None


@pytest.mark.slow
def test_coco_metric_and_the_lvis_evaluator_agree_where_their_rules_coincide(make_cfg, tmp_path):
    """task=coco end to end, and its evaluator against lt_bench's LVIS one: a small RetinaNet
    (focal + Gumbel) trained one epoch on the toy set through task=lvis, then evaluated from its
    checkpoint through task=coco on the same images written in COCO's format.  Every negative of
    the toy set is verified, nothing is crowd and both keep 100 detections per image from 1e-4,
    so COCO's rules (pycocotools, via mmdet's CocoMetric) and LVIS's (FastLVISMetric) give the
    same AP, AP50, AP75, APs and APm."""
    from lt_bench.detection.toy import ToySet, make_toy_coco, run_overrides
    coco_toy = make_toy_coco(tmp_path / "toy")
    lvis_toy = ToySet(tmp_path / "toy" / "lvis_toy_train.json", coco_toy.image_root, coco_toy.num_images,
                      coco_toy.image_counts)
    keep = lambda overrides: [o for o in overrides if not o.startswith(("out_dir=", "progress="))]  # noqa: E731
    lvis = run_detection(make_cfg(*keep(run_overrides(lvis_toy, "", detector="toy_retinanet")), "activation=gumbel",
                                  "detection.max_epochs=1", out_dir=tmp_path / "lvis"))
    coco = run_detection(make_cfg(*keep(run_overrides(coco_toy, "", detector="toy_retinanet_coco")), "activation=gumbel",
                                  "detection.train=false", f"detection.load_from={tmp_path / 'lvis' / 'epoch_1.pth'}",
                                  "detection.score_thr=0.0001", out_dir=tmp_path / "coco"))
    assert (lvis["dataset"], coco["dataset"]) == ("lvis_v1", "coco_2017")
    assert coco["iterations"] == 0 and coco["method"] == "focal+gumbel" and coco["ap_type"] == "bbox"
    assert coco["APr"] is None and coco["per_category"] is None
    assert lvis["AP"] > 0.5
    for key in ("AP", "AP50", "AP75", "APs", "APm"):
        assert coco["bbox"][key] == pytest.approx(lvis["bbox"][key], abs=1e-9), key
