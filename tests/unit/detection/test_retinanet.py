"""The dense detector (RetinaNet, issue 17 part 5) against stock mmdet: run.py's RetinaNet with
the sigmoid focal loss initialises every parameter exactly as mmdet's own COCO RetinaNet config
with the same seed and gives the same losses and detections on a batch; with Gumbel only the
classifier's bias differs (its focal prior in Gumbel's probability).  Its config carries the
LVIS protocol, and the switches that do not apply to a dense detector are refused."""
import math
from pathlib import Path

import pytest
import torch

pytest.importorskip("mmdet", reason="the detection extra is not installed (make det)")

from mmdet.registry import MODELS  # noqa: E402
from mmdet.structures import DetDataSample  # noqa: E402
from mmdet.utils import register_all_modules  # noqa: E402
from mmengine.hub import get_config  # noqa: E402
from mmengine.structures import InstanceData  # noqa: E402

import lt_bench.detection.registry  # noqa: E402,F401
from lt_bench.detection.runner import build_mmdet_config  # noqa: E402
from lt_bench.detection.validate import validate_detection  # noqa: E402
from lt_bench.errors import ConfigError  # noqa: E402

from tests.helpers.lvis import needs_shared  # noqa: E402

register_all_modules(init_default_scope=True)
STOCK_RETINANET = "mmdet::retinanet/retinanet_r50_fpn_1x_coco.py"


def build(model_cfg, seed=0):
    torch.manual_seed(seed)
    model = MODELS.build(model_cfg)
    model.init_weights()
    return model


def stock_model(num_classes: int):
    mm = get_config(STOCK_RETINANET)
    mm.model.backbone.init_cfg = None
    mm.model.bbox_head.num_classes = num_classes
    return build(mm.model)


def batch(model, seed=0):
    """Two 160 px images with three boxes each, through the model's own data preprocessor."""
    g = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for _ in range(2):
        inputs.append(torch.randint(0, 255, (3, 160, 160), generator=g, dtype=torch.uint8))
        xy = torch.rand(3, 2, generator=g) * 90
        wh = 20 + torch.rand(3, 2, generator=g) * 50
        sample = DetDataSample(metainfo=dict(img_shape=(160, 160), ori_shape=(160, 160), scale_factor=(1.0, 1.0)))
        sample.gt_instances = InstanceData(bboxes=torch.cat([xy, xy + wh], 1),
                                           labels=torch.randint(0, 1203, (3,), generator=g))
        samples.append(sample)
    return model.data_preprocessor(dict(inputs=inputs, data_samples=samples), training=True)


@needs_shared
def test_retinanet_config_is_lvis_protocol_with_the_runs_focal_loss(make_cfg, tmp_path, v1_stats):
    stats, path = v1_stats
    cfg = make_cfg("task=lvis", "detector=retinanet_r50", "activation=gumbel", "detection.backbone_pretrained=null")
    validate_detection(cfg)
    mm = build_mmdet_config(cfg, tmp_path, stats, path)
    head = mm.model.bbox_head
    assert head.num_classes == 1203 and "roi_head" not in mm.model
    assert dict(head.loss_cls) == dict(type="ActivationFocalLoss", activation="gumbel", num_classes=1203,
                                       loss_weight=1.0, activation_options=dict(clamp=[-4.0, 10.0], temperature=1.0,
                                                                                gradient="exact"),
                                       use_sigmoid=True, gamma=2.0, alpha=0.25)
    assert head.init_cfg[-1]["type"] == "ActivationClassifierInit" and head.init_cfg[-1]["scheme"] == "focal_prior"
    assert head.init_cfg[-1]["override"] == dict(name="retina_cls")       # found from mmdet's own init
    assert mm.model.test_cfg.score_thr == 0.0001 and mm.model.test_cfg.max_per_img == 300
    assert mm.test_evaluator["type"] == "FastLVISMetric" and mm.test_evaluator["metric"] == "bbox"
    loader = mm.train_dataloader
    assert loader.dataset.type == "LVISV1Dataset"              # random sampler: no ClassBalancedDataset
    assert not any(step.get("with_mask") for step in loader.dataset.pipeline)
    rfs = build_mmdet_config(make_cfg("task=lvis", "detector=retinanet_r50", "detection.sampler=rfs",
                                      "detection.backbone_pretrained=null"), tmp_path, stats, path)
    assert rfs.train_dataloader.dataset.type == "ClassBalancedDataset"


@needs_shared
def test_sigmoid_retinanet_is_stock_mmdet_and_gumbel_differs_only_in_the_prior(make_cfg, tmp_path, v1_stats):
    stats, path = v1_stats
    stock = stock_model(1203)
    models = {}
    for activation in ("sigmoid", "gumbel"):
        cfg = make_cfg("task=lvis", "detector=retinanet_r50", f"activation={activation}",
                       "detection.backbone_pretrained=null")
        models[activation] = build(build_mmdet_config(cfg, tmp_path, stats, path).model)
    reference = stock.state_dict()
    for activation, model in models.items():
        ours = model.state_dict()
        assert set(ours) == set(reference)
        differ = [k for k in ours if not torch.equal(ours[k], reference[k])]
        assert differ == ([] if activation == "sigmoid" else ["bbox_head.retina_cls.bias"]), differ
    gumbel_bias = models["gumbel"].state_dict()["bbox_head.retina_cls.bias"]
    assert torch.allclose(gumbel_bias, torch.tensor(-math.log(math.log(100.0))))
    assert torch.allclose(torch.exp(-torch.exp(-gumbel_bias)), torch.tensor(0.01))

    # the same losses on a batch, and the same detections
    stock.train()
    models["sigmoid"].train()
    data = batch(stock)
    expected = stock.loss(data["inputs"], data["data_samples"])
    mine = batch(models["sigmoid"])
    got = models["sigmoid"].loss(mine["inputs"], mine["data_samples"])
    for key in ("loss_cls", "loss_bbox"):
        torch.testing.assert_close(sum(got[key]), sum(expected[key]), rtol=1e-5, atol=1e-6)
    stock.eval()
    models["sigmoid"].eval()
    stock.bbox_head.test_cfg = models["sigmoid"].bbox_head.test_cfg     # LVIS's 300 at 1e-4 for both
    with torch.no_grad():
        [a] = stock.predict(data["inputs"][:1], data["data_samples"][:1])
        [b] = models["sigmoid"].predict(data["inputs"][:1], data["data_samples"][:1])
    assert len(a.pred_instances) > 0
    torch.testing.assert_close(b.pred_instances.scores, a.pred_instances.scores)
    torch.testing.assert_close(b.pred_instances.bboxes, a.pred_instances.bboxes)
    assert torch.equal(b.pred_instances.labels, a.pred_instances.labels)


@needs_shared
@pytest.mark.parametrize("overrides,message", [
    (["detection.enh=true"], "dense detector"),
    (["detection.rpn_proposals=500"], "no region proposal network"),
    (["detector.loss=drop"], "use detector.loss=focal"),
    (["activation=softmax"], "binary activation"),
    (["detection.classifier_init=prior"], "detector.classifier_init=focal_prior"),
])
def test_what_a_dense_detector_does_not_have_is_refused(make_cfg, tmp_path, v1_stats, overrides, message):
    stats, path = v1_stats
    with pytest.raises(ConfigError, match=message):
        cfg = make_cfg("task=lvis", "detector=retinanet_r50", "detection.backbone_pretrained=null", *overrides)
        validate_detection(cfg)
        build_mmdet_config(cfg, tmp_path, stats, path)


def test_a_dense_loss_on_a_two_stage_detector_is_refused(make_cfg):
    cfg = make_cfg("task=lvis", "detector=mask_rcnn_r50", "detector.loss=focal")
    with pytest.raises(ConfigError, match="dense head's"):
        validate_detection(cfg)


# ----------------------------------------------------------------------------- task=coco

def test_task_coco_is_mmdets_coco_retinanet_with_the_runs_loss(make_cfg, tmp_path):
    from lt_bench.detection.categories import category_stats
    from lt_bench.detection.runner import annotation_paths
    from lt_bench.detection.toy import make_toy_coco
    toy = make_toy_coco(tmp_path / "toy", num_images=40, image_counts=(30, 20, 12, 5))
    stats = category_stats(json_of(toy.ann_file))
    # COCO's categories carry no counts: counted from the annotations, LVIS's rule for the groups
    assert stats.image_count.tolist() == [30, 20, 12, 5] and stats.frequency.tolist() == ["c", "c", "c", "r"]
    cfg = make_cfg("task=coco", "activation=gumbel", "data.root=/data/coco", "detection.backbone_pretrained=null")
    assert cfg.detector.name == "retinanet_r50_coco"
    assert annotation_paths(cfg) == (Path("/data/coco/annotations/instances_train2017.json"),
                                     Path("/data/coco/annotations/instances_val2017.json"))
    validate_detection(cfg)
    mm = build_mmdet_config(cfg, tmp_path, stats, None)
    assert mm.train_dataloader.dataset.type == "CocoDataset"
    assert mm.train_dataloader.dataset.data_prefix["img"] == "/data/coco/train2017/"
    assert mm.test_dataloader.dataset.data_prefix["img"] == "/data/coco/val2017/"
    assert mm.test_evaluator["type"] == "CocoMetric" and mm.test_evaluator["metric"] == "bbox"
    assert mm.model.test_cfg.score_thr == 0.05 and mm.model.test_cfg.max_per_img == 100    # COCO's protocol
    assert mm.model.bbox_head.num_classes == 4 and mm.model.bbox_head.loss_cls.type == "ActivationFocalLoss"
    assert mm.optim_wrapper.optimizer.lr == 0.01


def json_of(path):
    import json
    return json.loads(Path(path).read_text())


@pytest.mark.parametrize("overrides,message", [
    (["detection.evaluator=fast"], r"unknown detection.evaluator \(task=coco\) 'fast'; valid: coco"),
    (["task.version=2014"], r"unknown task.version \(of coco\) '2014'; valid: 2017"),
    (["detector=toy_mask_rcnn", "detector.loss=drop"], "weighs categories by LVIS's image frequencies"),
])
def test_task_coco_refuses_what_it_does_not_have(make_cfg, overrides, message):
    from lt_bench.detection.validate import check_detection_config
    with pytest.raises(ConfigError, match=message):
        cfg = make_cfg("task=coco", *overrides)
        check_detection_config(cfg)
        validate_detection(cfg)


@needs_shared
def test_an_lvis_detector_config_under_task_coco_is_refused_naming_both_metrics(make_cfg, tmp_path, v1_stats):
    stats, path = v1_stats
    cfg = make_cfg("task=coco", "detector=retinanet_r50", "detection.backbone_pretrained=null")
    with pytest.raises(ConfigError, match="evaluator=coco is mmdet's CocoMetric, but detector retinanet_r50's config "
                                          "evaluates with 'LVISMetric'"):
        build_mmdet_config(cfg, tmp_path, stats, path)


def test_coco_annotation_check_names_the_file_and_the_entry(tmp_path):
    from lt_bench.detection.annotations import check_lvis_annotations
    from lt_bench.detection.toy import make_toy_coco
    from lt_bench.errors import DataError
    toy = make_toy_coco(tmp_path / "toy", num_images=20, image_counts=(15, 10, 5))
    data = json_of(toy.ann_file)
    assert check_lvis_annotations(toy.ann_file, "coco")["images"] == data["images"]
    with pytest.raises(DataError, match="problem"):     # COCO's file is not an LVIS file
        check_lvis_annotations(toy.ann_file, "lvis")
    del data["annotations"][3]["iscrowd"]
    data["images"][0].pop("file_name")
    data["annotations"][5]["iscrowd"] = 2
    bad = tmp_path / "bad.json"
    bad.write_text(__import__("json").dumps(data))
    with pytest.raises(DataError) as err:
        check_lvis_annotations(bad, "coco")
    text = str(err.value)
    assert str(bad) in text and "COCO annotations" in text
    assert f"annotation id {data['annotations'][3]['id']}: missing 'iscrowd'" in text
    assert f"annotation id {data['annotations'][5]['id']}: iscrowd must be 0 or 1, got 2" in text
    assert "image id 1: missing 'file_name'" in text
