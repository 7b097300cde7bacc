"""The mmdet plugin: registration, heads built with the losses, configs (the end-to-end run is in
tests/integration/test_detection_run.py)."""
import json

import pytest
import torch

pytest.importorskip("mmdet", reason="the detection extra is not installed (make det)")

from mmdet.registry import MODELS  # noqa: E402

import lt_bench.detection.registry  # noqa: E402,F401
from lt_bench.validate import validate  # noqa: E402
from lt_bench.detection.categories import load_category_stats  # noqa: E402
from lt_bench.detection.evaluation import ground_truth_as_detections, lvis_evaluate  # noqa: E402
from lt_bench.detection.runner import build_mmdet_config, prepare_inputs  # noqa: E402
from lt_bench.run_folder import RunFolder  # noqa: E402
from lt_bench.errors import ConfigError  # noqa: E402

from tests.helpers.lvis import SHARED_LVIS, lvis_overrides, needs_shared  # noqa: E402
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
    extra = {} if loss == "ActivationCrossEntropyLoss" else dict(frequency_file=FREQ_FILE, num_images=99_388)
    head = bbox_head(dict(type=loss, activation=activation, num_classes=1203, **extra), activation)
    assert head.fc_cls.out_features == channels
    assert torch.all(head.fc_cls.weight == 0.001) and torch.all(head.fc_cls.bias == bias)
    for layer in (*head.shared_fcs, head.fc_reg):      # the initialiser touches fc_cls only
        assert layer.weight.unique().numel() > 100 and not torch.all(layer.bias == bias)
    scores = head.loss_cls.get_activation(torch.zeros(3, channels))
    assert scores.shape == (3, 1204)           # mmdet's NMS drops the last (background) column
    losses = head.loss(torch.randn(5, channels), torch.randn(5, 4 * 1203), rois=torch.zeros(5, 5),
                       labels=torch.tensor([0, 5, 1203, 1203, 7]), label_weights=torch.ones(5),
                       bbox_targets=torch.zeros(5, 4), bbox_weights=torch.zeros(5, 4))
    assert torch.isfinite(losses["loss_cls"]) and "acc_classes" in losses


def build(cfg, tmp_path, v1_stats, **kwargs):
    return build_mmdet_config(cfg, tmp_path / "run", v1_stats[0], v1_stats[1], **kwargs)


@pytest.mark.parametrize("detector,loss,wrapped,epochs", [
    ("mask_rcnn_r50", "ActivationCrossEntropyLoss", False, 12),
    ("mask_rcnn_r50_rfs", "ActivationCrossEntropyLoss", True, 12),
    ("gol_r50", "DropLoss", True, 24),
    ("eql_gumbel_r50", "EQLLoss", False, 24),
])
@needs_shared
def test_detector_configs(make_cfg, tmp_path, detector, loss, wrapped, epochs, v1_stats):
    cfg = make_cfg(*lvis_overrides(tmp_path, f"detector={detector}", "activation=sigmoid"))
    validate(cfg)
    mm = build(cfg, tmp_path, v1_stats)
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
    assert head["init_cfg"][-1]["type"] == "ActivationClassifierInit" and head["init_cfg"][-1]["activation"] == "sigmoid"
    assert head["init_cfg"][-1]["override"] == {"name": "fc_cls"}
    assert train["metainfo"]["classes"] == v1_stats[0].names
    assert mm.train_cfg["max_epochs"] == epochs and mm.work_dir == str(tmp_path / "run")
    assert mm.train_dataloader["batch_size"] == 16 and mm.auto_scale_lr == {"enable": True, "base_batch_size": 16}
    if detector in ("gol_r50", "eql_gumbel_r50"):
        assert mm.model["test_cfg"]["rcnn"]["nms"]["iou_threshold"] == 0.3     # every authors' EQL/GOL config
    if loss == "ActivationCrossEntropyLoss":
        assert head["loss_cls"]["softmax_scores"] is True   # the paper's sigmoid rows: softmax scores
    if detector == "gol_r50":
        assert mm.model["test_cfg"]["rcnn"]["score_thr"] == 1e-4 and mm.model["test_cfg"]["rcnn"]["max_per_img"] == 300
        assert mm.model["roi_head"]["mask_head"]["predictor_cfg"]["type"] == "NormedConv2d"
        assert head["loss_cls"]["lambda_"] == 0.0011


@needs_shared
def test_lvis_v05_and_config_errors(make_cfg, tmp_path, v1_stats):
    v05 = load_category_stats(SHARED_LVIS / "lvis_v0.5_val_100.json")
    mm = build_mmdet_config(make_cfg(*lvis_overrides(tmp_path, "task.version=v0.5", "detector=gol_r50")), tmp_path,
                            v05, str(SHARED_LVIS / "lvis_v0.5_val_100.json"))
    inner = mm.train_dataloader["dataset"]["dataset"]
    assert inner["type"] == "LVISV05Dataset" and inner["data_prefix"]["img"].endswith("train2017/")
    assert mm.model["roi_head"]["bbox_head"]["num_classes"] == 1230
    assert mm.model["roi_head"]["bbox_head"]["loss_cls"]["lambda_"] == 0.00177
    official = build(make_cfg(*lvis_overrides(tmp_path, "detection.evaluator=lvis")), tmp_path, v1_stats)
    assert official.test_evaluator["type"] == "LVISMetric" and official.test_evaluator["metric"] == ["bbox", "segm"]
    with pytest.raises(ConfigError, match=r"unknown detection.evaluator \(task=lvis\) 'coco'; valid: fast, lvis"):
        validate(make_cfg(*lvis_overrides(tmp_path, "detection.evaluator=coco")))
    with pytest.raises(ConfigError, match=r"needs a binary activation \(sigmoid or gumbel\), not softmax"):
        validate(make_cfg(*lvis_overrides(tmp_path, "detector=gol_r50", "activation=softmax")))
    with pytest.raises(ConfigError, match="unknown activation 'gumble'"):
        validate(make_cfg(*lvis_overrides(tmp_path, "activation=gumble")))
    with pytest.raises(ConfigError, match="detection.scoring=softmax needs the C \\+ 1 outputs"):
        validate(make_cfg(*lvis_overrides(tmp_path, "detector=gol_r50", "detection.scoring=softmax")))
    with pytest.raises(ConfigError, match="unknown detection.classifier_init 'xavier'"):
        validate(make_cfg(*lvis_overrides(tmp_path, "detection.classifier_init=xavier")))
    with pytest.raises(ConfigError, match=r"detection.batch_size \(images per iteration over all GPUs\) must be a positive"):
        validate(make_cfg(*lvis_overrides(tmp_path, "detection.batch_size=0")))


@needs_shared
def test_global_batch_size_divides_over_processes(make_cfg, tmp_path, v1_stats):
    cfg = make_cfg(*lvis_overrides(tmp_path, "detection.batch_size=8"))
    assert build(cfg, tmp_path, v1_stats, world_size=4).train_dataloader["batch_size"] == 2
    with pytest.raises(ConfigError, match="detection.batch_size=8 is the global batch"):
        build(cfg, tmp_path, v1_stats, world_size=3)


@needs_shared
def test_activation_options_and_scoring_reach_the_loss(make_cfg, tmp_path, v1_stats):
    """activations.gumbel.* (the shared activation's settings) reach the box classifier's loss."""
    cfg = make_cfg(*lvis_overrides(tmp_path, "detector=gol_r50", "activations.gumbel.temperature=2.0",
                                   "activations.gumbel.clamp=null", "activations.gumbel.gradient=authors"))
    loss_cfg = build(cfg, tmp_path, v1_stats).model["roi_head"]["bbox_head"]["loss_cls"]
    assert loss_cfg["activation_options"] == {"clamp": None, "temperature": 2.0, "gradient": "authors"}
    from mmdet.registry import MODELS
    loss = MODELS.build(loss_cfg)
    assert loss.activation.temperature == 2.0 and loss.activation.clamp is None
    assert loss.activation.gradient == "authors"
    assert int(loss.tail.sum()) == 815
    cfg = make_cfg(*lvis_overrides(tmp_path, "activation=sigmoid", "detection.scoring=activation"))
    assert build(cfg, tmp_path, v1_stats).model["roi_head"]["bbox_head"]["loss_cls"]["softmax_scores"] is False


@needs_shared
def test_label_order_is_mmdets_for_an_unsorted_category_list(tmp_path):
    """mmdet's LVIS dataset numbers categories in the json's order; the frequency vector must too."""
    from mmdet.datasets import LVISV05Dataset
    data = json.loads((SHARED_LVIS / "lvis_v0.5_val_100.json").read_text())
    data["categories"] = data["categories"][::-1][600:] + data["categories"][::-1][:600]
    path = tmp_path / "unsorted.json"
    path.write_text(json.dumps(data))
    dataset = LVISV05Dataset(ann_file=str(path), data_prefix=dict(img=str(tmp_path)), test_mode=True, pipeline=[])
    stats = load_category_stats(path)
    assert list(stats.ids) == list(dataset.cat_ids) != sorted(stats.ids)
    frequent = [c["id"] for c in data["categories"] if c["frequency"] == "f"]
    by_label = {dataset.cat2label[i] for i in frequent}
    assert {i for i, f in enumerate(stats.frequency) if f == "f"} == by_label


@needs_shared
def test_val_subset_is_the_evaluated_ground_truth(make_cfg, tmp_path):
    """detection.val_images=N: the evaluator's ground truth is the N images, so perfect
    detections of them score AP 100 (on the whole file the unseen images would count as missed)."""
    ann = SHARED_LVIS / "lvis_v0.5_val_100.json"
    cfg = make_cfg(*lvis_overrides(tmp_path, "task.version=v0.5", f"data.train_ann={ann}", f"data.val_ann={ann}",
                                   "detection.val_images=10"))
    out = tmp_path / "run"
    prepared = prepare_inputs(cfg, out)
    assert prepared["val_ann"] == str(RunFolder(out).lvis_val_subset) and prepared["eval_images"] == 10
    subset = json.loads(RunFolder(out).lvis_val_subset.read_text())
    full = json.loads(ann.read_text())
    assert [i["id"] for i in subset["images"]] == [i["id"] for i in full["images"][:10]]
    ids = {i["id"] for i in subset["images"]}
    assert subset["annotations"] == [a for a in full["annotations"] if a["image_id"] in ids]
    assert subset["categories"] == full["categories"]
    perfect = ground_truth_as_detections(subset, "bbox")
    assert lvis_evaluate(prepared["val_ann"], perfect, "bbox")["AP"] == pytest.approx(1.0)
    assert lvis_evaluate(str(ann), perfect, "bbox")["AP"] < 0.5
    mm = build_mmdet_config(cfg, out, load_category_stats(prepared["categories"]), prepared["categories"],
                            prepared["val_ann"])
    assert mm.test_evaluator["ann_file"] == prepared["val_ann"]
    assert mm.test_dataloader["dataset"]["ann_file"] == prepared["val_ann"]
    assert "indices" not in mm.test_dataloader["dataset"]
    assert load_category_stats(prepared["categories"]).num_images == 93   # train images with annotations


def _plain(node):
    """An mmengine ConfigDict tree as plain dicts and lists (for ==), without the ``_scope_``
    mmengine stamps on nodes read from mmdet's own files (the registry scope, mmdet either way)."""
    if isinstance(node, dict):
        return {k: _plain(v) for k, v in node.items() if k != "_scope_"}
    if isinstance(node, (list, tuple)):
        return [_plain(v) for v in node]
    return node


@needs_shared
def test_switches_turn_table_1s_detector_into_each_static_config(make_cfg, tmp_path, v1_stats):
    """detection.sampler/enh/schedule on the random-sampler Table 1 detector give exactly the
    model, data and schedule of the hand-written configs: the RFS detector (sampler=rfs), and
    GOL (sampler=rfs, enh=true, schedule=2x, DropLoss) -- so one detector with switches covers
    the ablation tables; sampler=random undoes RFS; the record's switches read the result."""
    from lt_bench.detection.runner import switches_in

    def built(*overrides):
        mm = build(make_cfg(*lvis_overrides(tmp_path, "activation=gumbel", *overrides)), tmp_path, v1_stats)
        return mm, {k: _plain(mm[k]) for k in ("model", "train_dataloader", "train_cfg", "param_scheduler")}

    rfs_mm, rfs = built("detector=mask_rcnn_r50_rfs")
    assert built("detector=mask_rcnn_r50", "detection.sampler=rfs")[1] == rfs
    assert built("detector=mask_rcnn_r50_rfs", "detection.sampler=rfs")[1] == rfs
    random_mm, random = built("detector=mask_rcnn_r50")
    assert built("detector=mask_rcnn_r50_rfs", "detection.sampler=random")[1] == random
    gol_mm, gol = built("detector=gol_r50")
    switched_mm, switched = built("detector=mask_rcnn_r50", "detector.loss=drop", "detection.sampler=rfs",
                                  "detection.enh=true", "detection.schedule=2x")
    assert switched == gol
    assert switches_in(random_mm) == {"sampler": "random", "enh": False, "normed_mask": False, "nms_iou": 0.5,
                                      "schedule_epochs": 12, "lr_steps": [8, 11]}
    assert switches_in(gol_mm) == {"sampler": "rfs", "enh": True, "normed_mask": True, "nms_iou": 0.3,
                                   "schedule_epochs": 24, "lr_steps": [16, 22]}
    plain_gol = built("detector=gol_r50", "detection.enh=false", "detection.schedule=1x")[0]
    assert "predictor_cfg" not in plain_gol.model["roi_head"]["mask_head"]
    assert switches_in(plain_gol)["nms_iou"] == 0.5 and switches_in(plain_gol)["lr_steps"] == [8, 11]
    for bad, message in (("detection.sampler=class_aware", "expected random, rfs or null"),
                         ("detection.schedule=3x", "expected 1x, 2x or null"),
                         ("detection.enh=maybe", "expected true, false or null")):
        with pytest.raises(ConfigError, match=message):
            built("detector=mask_rcnn_r50", bad)


TABLE7 = {"mask_rcnn_r101": (1, 1, "ResNet"), "mask_rcnn_x101_64x4d": (1, 1, "ResNeXt"),
          "cascade_mask_rcnn_r101": (3, 1, "ResNet"), "htc_r101": (3, 3, "ResNet")}


@needs_shared
@pytest.mark.parametrize("detector", sorted(TABLE7))
def test_table7_detectors_put_the_classifier_on_every_stage(make_cfg, tmp_path, v1_stats, detector):
    """GOL's Table 7 detectors: heads given as lists (cascade stages) each get the run's loss,
    1,203 classes and the paper's init on fc_cls over mmdet's own head init; HTC's COCO data is
    replaced by mmdet's LVIS data; the built model has the expected classifier widths and init."""
    boxes, masks, backbone = TABLE7[detector]
    cfg = make_cfg(*lvis_overrides(tmp_path, f"detector={detector}", "activation=gumbel", "detection.sampler=random",
                                   "detection.backbone_pretrained=null"))
    validate(cfg)
    mm = build(cfg, tmp_path, v1_stats)
    roi = mm.model["roi_head"]
    heads = roi["bbox_head"] if isinstance(roi["bbox_head"], list) else [roi["bbox_head"]]
    mask_heads = roi["mask_head"] if isinstance(roi["mask_head"], list) else [roi["mask_head"]]
    assert (len(heads), len(mask_heads)) == (boxes, masks)
    assert all(h["loss_cls"]["type"] == "ActivationCrossEntropyLoss" and h["loss_cls"]["activation"] == "gumbel"
               and h["num_classes"] == 1203 for h in heads)
    assert all(h["num_classes"] == 1203 for h in mask_heads)
    assert mm.model["backbone"]["type"] == backbone and mm.model["backbone"]["depth"] == 101
    train = mm.train_dataloader["dataset"]
    assert train["type"] == "LVISV1Dataset" and train["ann_file"] == str(tmp_path / "lvis" / "lvis_v1_train.json")
    assert mm.test_evaluator["type"] == "FastLVISMetric"
    assert mm.model["test_cfg"]["rcnn"]["max_per_img"] == 300 and mm.model["test_cfg"]["rcnn"]["score_thr"] == 1e-4
    model = MODELS.build(mm.model)
    model.init_weights()
    stages = model.roi_head.bbox_head if boxes > 1 else [model.roi_head.bbox_head]
    for stage in stages:
        assert stage.fc_cls.out_features == 1204
        assert torch.all(stage.fc_cls.weight == 0.001) and torch.all(stage.fc_cls.bias == -2.0)
        assert stage.fc_reg.weight.std() < 0.01 and stage.shared_fcs[0].weight.unique().numel() > 1000


@needs_shared
@pytest.mark.parametrize("detector, sampled", [("seesaw_r50", False), ("seesaw_r50_rfs", True)])
def test_stock_box_classifier_keeps_mmdets_seesaw_head(make_cfg, tmp_path, v1_stats, detector, sampled):
    """detector.box_classifier: stock (mmdet's Seesaw LVIS configs, Table 8's context rows): the
    config's loss, normalised linear predictor and init stay; only the width follows the file;
    the record files it under detector.method; and its reference row is mmdet's model zoo's."""
    import yaml
    from importlib.resources import files
    from lt_bench.detection.runner import resolve_scoring
    cfg = make_cfg(*lvis_overrides(tmp_path, f"detector={detector}"))
    validate(cfg)
    mm = build(cfg, tmp_path, v1_stats)
    head = mm.model["roi_head"]["bbox_head"]
    assert dict(head["loss_cls"]) == {"type": "SeesawLoss", "p": 0.8, "q": 2.0, "num_classes": 1203, "loss_weight": 1.0,
                                      "use_sigmoid": False}     # as mmdet merges its own config
    assert head["cls_predictor_cfg"]["type"] == "NormedLinear" and "init_cfg" not in head
    assert (mm.train_dataloader["dataset"]["type"] == "ClassBalancedDataset") == sampled
    assert resolve_scoring(cfg) is None
    v05 = load_category_stats(SHARED_LVIS / "lvis_v0.5_val_100.json")
    narrow = build_mmdet_config(make_cfg(*lvis_overrides(tmp_path, "task.version=v0.5", f"detector={detector}")),
                                tmp_path, v05, str(SHARED_LVIS / "lvis_v0.5_val_100.json"))
    assert narrow.model["roi_head"]["bbox_head"]["loss_cls"]["num_classes"] == 1230
    zoo = yaml.safe_load((files("mmdet") / ".mim" / "configs" / "seesaw_loss" / "metafile.yml").read_text())
    name = {"seesaw_r50": "mask-rcnn_r50_fpn_random_seesaw_loss_mstrain_2x_lvis_v1",
            "seesaw_r50_rfs": "mask-rcnn_r50_fpn_sample1e-3_seesaw_loss_mstrain_2x_lvis_v1"}[detector]
    model = next(m for m in zoo["Models"] if m["Name"] == name)
    metrics = {r["Task"]: r["Metrics"] for r in model["Results"]}
    reference = next(e for e in load_references_file() if e.get("model") == detector)
    assert (reference["AP"], reference["APbox"]) == (metrics["Instance Segmentation"]["mask AP"],
                                                     metrics["Object Detection"]["box AP"])
    with pytest.raises(ConfigError, match="must name the method"):
        validate(make_cfg(*lvis_overrides(tmp_path, f"detector={detector}", "~detector.method")))


def load_references_file():
    from lt_bench.leaderboard_table import load_references
    return load_references()
