"""The detectors' initialisation against its independent reference, stock mmdet: every detector
config (the mmdet config files in configs/detection/ and the configs run.py task=lvis builds)
initialises every parameter and buffer exactly as mmdet's own LVIS Mask R-CNN config does with
the same seed, except the box classifier fc_cls (the paper's init) and a normalised mask
predictor where the config asks for one.  (Training against stock mmdet, iteration by
iteration: tests/integration/test_detection_stock_training.py.)
"""
import pytest
import torch

pytest.importorskip("mmdet", reason="the detection extra is not installed (make det)")

from mmdet.models.losses import CrossEntropyLoss  # noqa: E402
from mmdet.registry import MODELS  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.hub import get_config  # noqa: E402

import lt_bench.detection.registry  # noqa: E402,F401
from mmdet.utils import register_all_modules  # noqa: E402

register_all_modules(init_default_scope=True)   # build nested components from mmdet's registries
from lt_bench.detection.runner import build_mmdet_config  # noqa: E402
from lt_bench.run_folder import REPO  # noqa: E402

from tests.helpers.lvis import STOCK, needs_shared  # noqa: E402
DETECTORS = {   # detector -> (backbone depth, classifier outputs are C (True) or C + 1, normed mask predictor)
    "mask_rcnn_r50": (50, False, False), "mask_rcnn_r50_rfs": (50, False, False),
    "eql_gumbel_r50": (50, True, True), "gol_r50": (50, True, True), "gol_r101": (101, True, True),
}
FILES = {"mask-rcnn_r50_fpn_random_1x_lvis-v1.py": "mask_rcnn_r50", "mask-rcnn_r50_fpn_rfs_1x_lvis-v1.py":
         "mask_rcnn_r50_rfs", "eql-gumbel_mask-rcnn_r50_fpn_2x_lvis-v1.py": "eql_gumbel_r50",
         "gol_mask-rcnn_r50_fpn_rfs_2x_lvis-v1.py": "gol_r50", "gol_mask-rcnn_r101_fpn_rfs_2x_lvis-v1.py": "gol_r101"}


@MODELS.register_module(force=True)
class CChannelsCrossEntropyLoss(CrossEntropyLoss):
    """mmdet's CrossEntropyLoss on a classifier of C outputs (no background logit): the stock
    reference for the heads of EQL and DropLoss, whose fc_cls is one row narrower."""

    custom_cls_channels = True

    def get_cls_channels(self, num_classes):
        return num_classes


def build_initialised(model_cfg: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = MODELS.build(model_cfg)
    model.init_weights()
    return model.state_dict()


_stock_cache: dict = {}


def stock_state(depth: int, c_outputs: bool) -> dict[str, torch.Tensor]:
    """mmdet's own LVIS v1 Mask R-CNN, initialised with seed 0 (backbone from scratch, as in
    the configs under test: no ImageNet download here)."""
    key = (depth, c_outputs)
    if key not in _stock_cache:
        mm = get_config(STOCK[depth])
        mm.model.backbone.init_cfg = None
        if c_outputs:
            mm.model.roi_head.bbox_head.loss_cls = dict(type="CChannelsCrossEntropyLoss", use_sigmoid=False)
        _stock_cache[key] = build_initialised(mm.model)
    return _stock_cache[key]


def assert_same_except_classifier(ours: dict, stock: dict, normed_mask: bool, activation: str) -> None:
    excluded = {"roi_head.bbox_head.fc_cls.weight", "roi_head.bbox_head.fc_cls.bias"}
    if normed_mask:
        excluded |= {k for k in ours if k.startswith("roi_head.mask_head.conv_logits.")}
    assert set(ours) == set(stock), set(ours) ^ set(stock)
    different = [k for k in ours if k not in excluded and not torch.equal(ours[k], stock[k])]
    assert not different, f"initialised unlike stock mmdet: {different}"
    # the two layers the init bug flattened: Xavier-uniform, as stock, far from constant
    for name in ("roi_head.bbox_head.shared_fcs.0.weight", "roi_head.bbox_head.shared_fcs.1.weight"):
        assert ours[name].unique().numel() > 1000
    bias = -2.0 if activation == "gumbel" else -6.5
    assert torch.all(ours["roi_head.bbox_head.fc_cls.weight"] == 0.001)
    assert torch.all(ours["roi_head.bbox_head.fc_cls.bias"] == bias)


@needs_shared
@pytest.mark.parametrize("file", sorted(FILES))
def test_config_files_initialise_like_stock_mmdet(file, v1_stats):
    depth, c_outputs, normed = DETECTORS[FILES[file]]
    mm = Config.fromfile(str(REPO / "configs" / "detection" / file))
    mm.model.backbone.init_cfg = None
    if "frequency_file" in mm.model.roi_head.bbox_head.loss_cls:
        mm.model.roi_head.bbox_head.loss_cls.frequency_file = v1_stats[1]
    assert_same_except_classifier(build_initialised(mm.model), stock_state(depth, c_outputs), normed, "gumbel")


@needs_shared
@pytest.mark.parametrize("detector,activation", [
    ("mask_rcnn_r50", "sigmoid"), ("mask_rcnn_r50_rfs", "gumbel"), ("eql_gumbel_r50", "gumbel"),
    ("gol_r50", "sigmoid"), ("gol_r101", "gumbel")])
def test_run_py_configs_initialise_like_stock_mmdet(make_cfg, tmp_path, detector, activation, v1_stats):
    stats, path = v1_stats
    depth, c_outputs, normed = DETECTORS[detector]
    cfg = make_cfg("task=lvis", f"detector={detector}", f"activation={activation}", "detection.backbone_pretrained=null")
    mm = build_mmdet_config(cfg, tmp_path, stats, path)
    assert_same_except_classifier(build_initialised(mm.model), stock_state(depth, c_outputs), normed, activation)


@needs_shared
def test_keep_classifier_init_is_stock_everywhere(make_cfg, tmp_path, v1_stats):
    """detection.classifier_init=keep: the whole model, fc_cls included, is stock mmdet's."""
    stats, path = v1_stats
    cfg = make_cfg("task=lvis", "detector=mask_rcnn_r50_rfs", "activation=softmax", "detection.classifier_init=keep",
                   "detection.backbone_pretrained=null")
    ours, stock = build_initialised(build_mmdet_config(cfg, tmp_path, stats, path).model), stock_state(50, False)
    assert all(torch.equal(ours[k], stock[k]) for k in stock)
