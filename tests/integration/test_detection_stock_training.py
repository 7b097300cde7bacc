"""The detectors against their independent reference, stock mmdet, in training: with the
classifier init left at mmdet's, the plugin's softmax loss trains exactly like mmdet's stock
config with its own CrossEntropyLoss: the same losses at every iteration.  (The init of every
detector config against stock mmdet: tests/unit/detection/test_init_like_stock.py.)
"""
import json
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("mmdet", reason="the detection extra is not installed (make det)")

from mmengine.hub import get_config  # noqa: E402
from mmengine.hooks import Hook  # noqa: E402
from mmengine.registry import HOOKS  # noqa: E402

import lt_bench.detection.registry  # noqa: E402,F401
from mmdet.utils import register_all_modules  # noqa: E402

register_all_modules(init_default_scope=True)   # build nested components from mmdet's registries
from lt_bench.detection.categories import category_stats  # noqa: E402
from lt_bench.detection.runner import apply_run_settings, build_mmdet_config  # noqa: E402

from tests.helpers.lvis import SHARED_LVIS, STOCK, needs_shared, write_images  # noqa: E402

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
