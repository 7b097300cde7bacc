"""The detectors against their independent reference, stock mmdet.

- Init: every detector config (the mmdet config files in configs/detection/ and the configs
  run.py task=lvis builds) initialises every parameter and buffer exactly as mmdet's own LVIS
  Mask R-CNN config does with the same seed, except the box classifier fc_cls (the paper's
  init) and a normalised mask predictor where the config asks for one.
- Training: with the classifier init left at mmdet's, the plugin's softmax loss trains exactly
  like mmdet's stock config with its own CrossEntropyLoss: the same losses at every iteration.
"""
import json
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("mmdet", reason="the detection extra is not installed (make det)")

from mmdet.models.losses import CrossEntropyLoss  # noqa: E402
from mmdet.registry import MODELS  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.hub import get_config  # noqa: E402
from mmengine.hooks import Hook  # noqa: E402
from mmengine.registry import HOOKS  # noqa: E402

import lt_bench.detection.registry  # noqa: E402,F401
from mmdet.utils import register_all_modules  # noqa: E402

register_all_modules(init_default_scope=True)   # build nested components from mmdet's registries
from lt_bench.detection.categories import category_stats, load_category_stats, save_category_stats  # noqa: E402
from lt_bench.detection.runner import apply_run_settings, build_mmdet_config  # noqa: E402
from lt_bench.run_folder import REPO  # noqa: E402

from tests.helpers.lvis import SHARED_LVIS, needs_shared, write_images  # noqa: E402
STOCK = {50: "mmdet::lvis/mask-rcnn_r50_fpn_sample1e-3_ms-1x_lvis-v1.py",
         101: "mmdet::lvis/mask-rcnn_r101_fpn_sample1e-3_ms-1x_lvis-v1.py"}
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


@pytest.fixture(scope="module")
def summary_file(tmp_path_factory):
    stats = load_category_stats(SHARED_LVIS / "lvis_v1_categories_with_counts.json", num_images=99_388)
    return stats, str(save_category_stats(stats, tmp_path_factory.mktemp("cats") / "lvis_categories.json"))


@needs_shared
@pytest.mark.parametrize("file", sorted(FILES))
def test_config_files_initialise_like_stock_mmdet(file, summary_file):
    depth, c_outputs, normed = DETECTORS[FILES[file]]
    mm = Config.fromfile(str(REPO / "configs" / "detection" / file))
    mm.model.backbone.init_cfg = None
    if "frequency_file" in mm.model.roi_head.bbox_head.loss_cls:
        mm.model.roi_head.bbox_head.loss_cls.frequency_file = summary_file[1]
    assert_same_except_classifier(build_initialised(mm.model), stock_state(depth, c_outputs), normed, "gumbel")


@needs_shared
@pytest.mark.parametrize("detector,activation", [
    ("mask_rcnn_r50", "sigmoid"), ("mask_rcnn_r50_rfs", "gumbel"), ("eql_gumbel_r50", "gumbel"),
    ("gol_r50", "sigmoid"), ("gol_r101", "gumbel")])
def test_run_py_configs_initialise_like_stock_mmdet(make_cfg, tmp_path, detector, activation, summary_file):
    stats, path = summary_file
    depth, c_outputs, normed = DETECTORS[detector]
    cfg = make_cfg("task=lvis", f"detector={detector}", f"activation={activation}", "detection.backbone_pretrained=null")
    mm = build_mmdet_config(cfg, tmp_path, stats, path)
    assert_same_except_classifier(build_initialised(mm.model), stock_state(depth, c_outputs), normed, activation)


@needs_shared
def test_keep_classifier_init_is_stock_everywhere(make_cfg, tmp_path, summary_file):
    """detection.classifier_init=keep: the whole model, fc_cls included, is stock mmdet's."""
    stats, path = summary_file
    cfg = make_cfg("task=lvis", "detector=mask_rcnn_r50_rfs", "activation=softmax", "detection.classifier_init=keep",
                   "detection.backbone_pretrained=null")
    ours, stock = build_initialised(build_mmdet_config(cfg, tmp_path, stats, path).model), stock_state(50, False)
    assert all(torch.equal(ours[k], stock[k]) for k in stock)


# ------------------------------------------------------------------ training, iteration by iteration

RECORDED: dict[str, list[dict]] = {}


@HOOKS.register_module(force=True)
class RecordLossesHook(Hook):
    def __init__(self, key: str):
        self.key = key

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        RECORDED.setdefault(self.key, []).append({k: float(v) for k, v in outputs.items()})
        RECORDED.setdefault(self.key + "/time", []).append(time.perf_counter())
        RECORDED[self.key + "/lr"] = [g["lr"] for g in runner.optim_wrapper.optimizer.param_groups]


def _quiet(mm, key: str, out: Path):
    mm.custom_hooks = [dict(type="RecordLossesHook", key=key)]
    mm.param_scheduler = []     # no warm-up (both): five steps at the full lr, so the updates show
    mm.default_hooks.checkpoint = None
    mm.experiment_name = key
    mm.work_dir = str(out / key)
    return mm


@pytest.mark.slow
@needs_shared
@pytest.mark.parametrize("detector", ["mask_rcnn_r50_rfs", "mask_rcnn_r50"])
def test_plugin_softmax_trains_exactly_like_stock_mmdet(make_cfg, tmp_path, detector):
    """Real LVIS v0.5 annotations (100 val images) with generated pixels: the plugin's
    ActivationCrossEntropyLoss(softmax) with mmdet's classifier init against mmdet's stock
    config with its CrossEntropyLoss, both through the same run settings and mmengine's runner."""
    from mmengine.runner import Runner
    ann = SHARED_LVIS / "lvis_v0.5_val_100.json"
    write_images(ann, tmp_path / "coco" / "train2017")
    cfg = make_cfg("task=lvis", "task.version=v0.5", f"detector={detector}", "activation=softmax",
                   "detection.classifier_init=keep", f"data.root={tmp_path / 'coco'}", f"data.train_ann={ann}",
                   f"data.val_ann={ann}", "detection.backbone_pretrained=null", "detection.max_epochs=1",
                   "detection.train_images=10", "detection.batch_size=2", "detection.num_workers=0",
                   "detection.image_scale=[256,160]")
    stats = category_stats(json.loads(ann.read_text()), source=str(ann))
    ours = build_mmdet_config(cfg, tmp_path, stats)
    assert ours.model.roi_head.bbox_head.loss_cls.type == "ActivationCrossEntropyLoss"
    stock = get_config(STOCK[50])
    if detector == "mask_rcnn_r50":   # the random sampler: the plain dataset instead of the RFS wrapper
        stock.train_dataloader.dataset = stock.train_dataloader.dataset.dataset
    apply_run_settings(stock, cfg, tmp_path, stats.names)
    stock.model.roi_head.bbox_head.num_classes = stock.model.roi_head.mask_head.num_classes = len(stats.ids)
    RECORDED.clear()
    trained = {}
    for key, mm in (("ours", ours), ("stock", stock)):
        started = time.perf_counter()
        runner = Runner.from_cfg(_quiet(mm, key, tmp_path))
        runner.train()
        RECORDED[key + "/start"] = [started]
        trained[key] = {k: v.detach().clone() for k, v in runner.model.state_dict().items()}
        del runner
    assert len(RECORDED["ours"]) == len(RECORDED["stock"]) >= 5
    worst = 0.0
    for step, (a, b) in enumerate(zip(RECORDED["ours"], RECORDED["stock"])):
        keys = sorted(k for k in b if k.startswith("loss"))
        assert keys == sorted(k for k in a if k.startswith("loss"))
        for k in keys:
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-7), f"iteration {step}, {k}: {a[k]} vs {b[k]}"
            worst = max(worst, abs(a[k] - b[k]) / max(abs(b[k]), 1e-12))
        print(f"iteration {step}: " + "  ".join(f"{k} {a[k]:.6f}/{b[k]:.6f}" for k in keys))
    print(f"largest relative difference {worst:.2e}; seconds to the first iteration / per iteration: "
          + ", ".join(f"{key} {RECORDED[key + '/time'][0] - RECORDED[key + '/start'][0]:.1f} / "
                      f"{(RECORDED[key + '/time'][-1] - RECORDED[key + '/time'][0]) / (len(RECORDED[key]) - 1):.1f}"
                      for key in ("ours", "stock")))
    assert RECORDED["ours"][-1]["loss_cls"] < RECORDED["ours"][0]["loss_cls"] - 0.1     # it trained
    # after the steps every weight is the same: the gradients were
    assert trained["ours"].keys() == trained["stock"].keys()
    for k, v in trained["stock"].items():
        torch.testing.assert_close(trained["ours"][k], v, rtol=1e-5, atol=1e-7, msg=k)
    # the global batch of 2 images trains at the paper's lr scaled linearly: 0.02 * 2 / 16
    assert RECORDED["ours/lr"] == RECORDED["stock/lr"] == [pytest.approx(0.0025)] * len(RECORDED["ours/lr"])
