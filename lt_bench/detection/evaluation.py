"""LVIS evaluation with the official lvis API (box and mask AP, AP by frequency group)."""
from __future__ import annotations

import contextlib
import io
from typing import Any

from lt_bench.detection.lvis_compat import patch_lvis

# the summary metrics of an LVIS evaluation (lvis-api, FastLVISEval, mmdet's LVISMetric), in order
SUMMARY_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")


def lvis_evaluate(gt: Any, detections: list[dict], iou_type: str = "segm", max_dets: int = 300,
                  quiet: bool = True) -> dict[str, float]:
    """Summary metrics (fractions 0-1) of ``detections`` (LVIS result dicts: image_id,
    category_id, score, bbox or segmentation) against ``gt`` (an LVIS object or json path)."""
    patch_lvis()
    from lvis import LVIS, LVISEval, LVISResults
    out = io.StringIO()
    with contextlib.redirect_stdout(out) if quiet else contextlib.nullcontext():
        gt = gt if isinstance(gt, LVIS) else LVIS(gt)
        results = LVISResults(gt, detections, max_dets=max_dets)
        evaluator = LVISEval(gt, results, iou_type=iou_type)
        evaluator.params.max_dets = max_dets
        evaluator.run()
    return {k: float(v) for k, v in evaluator.get_results().items()}


def ground_truth_as_detections(gt_json: dict, iou_type: str = "segm") -> list[dict]:
    """Every ground-truth annotation as a detection of score 1 (AP must then be 1)."""
    key = "segmentation" if iou_type == "segm" else "bbox"
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "score": 1.0, key: a[key],
             **({"bbox": a["bbox"]} if key != "bbox" else {})} for a in gt_json["annotations"]]
