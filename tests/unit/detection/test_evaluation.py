"""LVIS evaluation: the NumPy shim of lvis 0.5.3, exactness of ground truth as detections, and
agreement with an independent evaluator (faster-coco-eval's LVIS mode) on perturbed detections."""
import importlib
import json

import numpy as np
import pytest

lvis = pytest.importorskip("lvis", reason="the detection extra is not installed (make det)")
faster_coco_eval = pytest.importorskip("faster_coco_eval", reason="the detection extra is not installed (make det)")

from lt_bench.detection.evaluation import ground_truth_as_detections, lvis_evaluate  # noqa: E402
from lt_bench.detection.lvis_compat import patch_lvis  # noqa: E402

from tests.helpers.lvis import SHARED_LVIS  # noqa: E402

LVIS_VAL_100 = SHARED_LVIS / "lvis_v0.5_val_100.json"
needs_shared = pytest.mark.skipif(not LVIS_VAL_100.is_file(), reason="../shared/data/lvis not present")
SUMMARY = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")
FCE_NAMES = {"AP": "AP_all", "AP50": "AP_50", "AP75": "AP_75", "APs": "AP_small", "APm": "AP_medium",
             "APl": "AP_large", "APr": "APr", "APc": "APc", "APf": "APf"}


@pytest.fixture(scope="module")
def gt():
    from lvis import LVIS
    return LVIS(str(LVIS_VAL_100))


def test_lvis_needs_the_shim_on_current_numpy_and_the_shim_stays_local(tmp_path):
    import lvis.eval
    assert not hasattr(np, "float"), "NumPy still has np.float: the shim is not needed here"
    importlib.reload(lvis.eval)                    # the unpatched module
    from lvis.eval import LVISEval
    tiny = {"images": [{"id": 1, "height": 10, "width": 10, "neg_category_ids": [], "not_exhaustive_category_ids": []}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4], "area": 16.0,
                             "segmentation": [[1, 1, 5, 1, 5, 5, 1, 5]]}],
            "categories": [{"id": 1, "name": "thing", "frequency": "f", "image_count": 1}]}
    (tmp_path / "tiny.json").write_text(json.dumps(tiny))
    from lvis import LVIS, LVISResults
    gt = LVIS(str(tmp_path / "tiny.json"))
    results = LVISResults(gt, [{"image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4], "score": 0.9}])
    evaluator = LVISEval(gt, results, iou_type="bbox")
    evaluator.evaluate()
    with pytest.raises(AttributeError, match="float"):
        evaluator.accumulate()
    patch_lvis()
    evaluator = lvis.eval.LVISEval(gt, results, iou_type="bbox")
    evaluator.run()
    assert evaluator.get_results()["AP"] == pytest.approx(1.0)
    assert not hasattr(np, "float")               # NumPy itself untouched


@needs_shared
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_ground_truth_as_detections_scores_one(gt, iou_type):
    detections = ground_truth_as_detections(gt.dataset, iou_type)
    if iou_type == "segm":   # LVISResults wants RLE masks
        for d, a in zip(detections, gt.dataset["annotations"]):
            d["segmentation"] = gt.ann_to_rle(a)
    results = lvis_evaluate(gt, detections, iou_type)
    for key in ("AP", "AP50", "AP75", "APr", "APc", "APf"):
        if not np.isnan(results[key]) and results[key] != -1:
            assert results[key] == pytest.approx(1.0), key


def perturbed_detections(gt, iou_type: str, seed: int) -> list[dict]:
    """Jittered boxes or masks of 80% of the ground truth, random scores, plus false positives
    in each image's negative categories and in the categories it contains.  (Detections in
    categories an image neither contains nor lists as negative are ignored by LVIS; with
    masks they crash faster-coco-eval 1.8.0, so none are made.)"""
    from pycocotools import mask as mask_utils
    rng = np.random.default_rng(seed)
    images = {img["id"]: img for img in gt.dataset["images"]}
    present = {}
    for a in gt.dataset["annotations"]:
        present.setdefault(a["image_id"], set()).add(a["category_id"])
    detections = []

    def add(image_id, category_id, box):
        img = images[image_id]
        x, y, w, h = box
        det = {"image_id": image_id, "category_id": category_id, "score": float(rng.random())}
        if iou_type == "bbox":
            det["bbox"] = [x, y, w, h]
        else:
            polygon = [x, y, x + w, y, x + w, y + h, x, y + h]
            rle = mask_utils.merge(mask_utils.frPyObjects([polygon], img["height"], img["width"]))
            rle["counts"] = rle["counts"].decode()
            det["segmentation"] = rle
        detections.append(det)

    for a in gt.dataset["annotations"]:
        if rng.random() < 0.2:
            continue
        x, y, w, h = a["bbox"]
        j = rng.normal(0, 0.08, 4)
        add(a["image_id"], a["category_id"], [x + j[0] * w, y + j[1] * h, max(w * (1 + j[2]), 1), max(h * (1 + j[3]), 1)])
    for img in gt.dataset["images"]:
        for category_id in img["neg_category_ids"][:3] + sorted(present.get(img["id"], set()))[:3]:
            w, h = rng.uniform(10, img["width"] / 2), rng.uniform(10, img["height"] / 2)
            add(img["id"], int(category_id), [rng.uniform(0, img["width"] - w), rng.uniform(0, img["height"] - h), w, h])
    return detections


@needs_shared
@pytest.mark.parametrize("iou_type,seed", [("bbox", 0), ("bbox", 1), ("segm", 0)])
def test_lvis_api_agrees_with_faster_coco_eval(gt, iou_type, seed):
    from faster_coco_eval import COCO, COCOeval_faster
    detections = perturbed_detections(gt, iou_type, seed)
    ours = lvis_evaluate(gt, json.loads(json.dumps(detections)), iou_type)
    coco_gt = COCO(str(LVIS_VAL_100))
    independent = COCOeval_faster(coco_gt, coco_gt.loadRes(json.loads(json.dumps(detections))), iouType=iou_type,
                                  lvis_style=True, print_function=lambda *args: None)
    independent.params.maxDets = [300]
    independent.evaluate()
    independent.accumulate()
    independent.summarize()
    stats = independent.stats_as_dict
    assert 0.05 < ours["AP"] < 0.95            # a non-trivial case
    for key in SUMMARY:
        assert ours[key] == pytest.approx(stats[FCE_NAMES[key]], abs=1e-4), key
